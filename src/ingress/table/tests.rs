//! Matching precedence: the path tree against regexps and weights, and each predicate.

use super::*;
use http::{HeaderMap, Method};
use std::net::IpAddr;

fn table(text: &str) -> Table {
    Table::load(text).unwrap_or_else(|e| panic!("{e}"))
}

struct R {
    method: Method,
    path: &'static str,
    query: Option<&'static str>,
    host: &'static str,
    headers: HeaderMap,
    remote: IpAddr,
}

fn get(path: &'static str) -> R {
    R {
        method: Method::GET,
        path,
        query: None,
        host: "example.org",
        headers: HeaderMap::new(),
        remote: "192.0.2.7".parse().unwrap(),
    }
}

impl R {
    fn header(mut self, k: &'static str, v: &'static str) -> R {
        self.headers.append(k, v.parse().unwrap());
        self
    }
}

fn hit_roll(t: &Table, r: &R, roll: f64) -> Option<String> {
    let req = Req {
        method: &r.method,
        path: r.path,
        query: r.query,
        host: r.host,
        headers: &r.headers,
        remote: r.remote,
    };
    t.lookup(&req, &mut || roll).map(|r| r.id.clone())
}

fn hit(t: &Table, r: &R) -> Option<String> {
    hit_roll(t, r, 0.5)
}

fn id(s: &str) -> Option<String> {
    Some(s.to_string())
}

#[test]
fn most_specific_path_wins() {
    let t = table(
        r#"
        all: * -> <shunt>;
        sub: PathSubtree("/api") -> <shunt>;
        exact: Path("/api/users") -> <shunt>;
        param: Path("/api/:thing") -> <shunt>;
        deep: Path("/api/:thing/items") -> <shunt>;
        wild: Path("/static/*file") -> <shunt>;
        root: Path("/") -> <shunt>;
        "#,
    );
    assert_eq!(hit(&t, &get("/api/users")), id("exact"));
    assert_eq!(hit(&t, &get("/api/orders")), id("param"));
    assert_eq!(hit(&t, &get("/api/orders/items")), id("deep"));
    assert_eq!(hit(&t, &get("/api/orders/other")), id("sub"));
    assert_eq!(hit(&t, &get("/api")), id("sub"));
    assert_eq!(
        hit(&t, &get("/api/")),
        id("sub"),
        "an empty segment is no :param"
    );
    assert_eq!(hit(&t, &get("/apix")), id("all"));
    assert_eq!(hit(&t, &get("/static/css/a.css")), id("wild"));
    assert_eq!(hit(&t, &get("/")), id("root"));
    assert_eq!(hit(&t, &get("/nothing")), id("all"));
}

#[test]
fn exact_path_is_strict_about_trailing_slash() {
    let t = table(r#"a: Path("/a") -> <shunt>; b: Path("/a/") -> <shunt>;"#);
    assert_eq!(hit(&t, &get("/a")), id("a"));
    assert_eq!(hit(&t, &get("/a/")), id("b"));
    assert_eq!(hit(&t, &get("/a/b")), None);
}

#[test]
fn falls_back_to_a_less_specific_path_when_predicates_fail() {
    let t = table(
        r#"
        sub: PathSubtree("/api") -> <shunt>;
        posts: Path("/api/users") && Method("POST") -> <shunt>;
        "#,
    );
    assert_eq!(hit(&t, &get("/api/users")), id("sub"));
    let mut post = get("/api/users");
    post.method = Method::POST;
    assert_eq!(hit(&t, &post), id("posts"));
}

#[test]
fn more_predicates_then_weight_break_ties() {
    let t = table(
        r#"
        plain: Path("/x") -> <shunt>;
        chrome: Path("/x") && HeaderRegexp("User-Agent", /Chrome/) -> <shunt>;
        "#,
    );
    assert_eq!(hit(&t, &get("/x")), id("plain"));
    assert_eq!(
        hit(&t, &get("/x").header("user-agent", "Mozilla Chrome/1")),
        id("chrome")
    );
    // Weight raises a route over one with more predicates.
    let t = table(
        r#"
        chrome: Path("/x") && HeaderRegexp("User-Agent", /Chrome/) -> <shunt>;
        heavy: Path("/x") && Weight(5) -> <shunt>;
        "#,
    );
    assert_eq!(
        hit(&t, &get("/x").header("user-agent", "Chrome")),
        id("heavy")
    );
    // Equal priority: file order.
    let t = table(r#"a: Path("/x") && True() -> <shunt>; b: Path("/x") && True() -> <shunt>;"#);
    assert_eq!(hit(&t, &get("/x")), id("a"));
}

#[test]
fn path_tree_beats_regexp_and_regexp_routes_sit_at_the_root() {
    let t = table(
        r#"
        re: PathRegexp(/\.html$/) -> <shunt>;
        page: Path("/docs/index.html") -> <shunt>;
        any: * -> <shunt>;
        "#,
    );
    assert_eq!(hit(&t, &get("/docs/index.html")), id("page"));
    assert_eq!(hit(&t, &get("/other/a.html")), id("re"));
    assert_eq!(hit(&t, &get("/other/a.txt")), id("any"));
}

#[test]
fn predicates() {
    let t = table(
        r#"
        host: Host(/^api\.example\.org$/) -> <shunt>;
        methods: Path("/m") && Methods("PUT", "delete") -> <shunt>;
        hdr: Path("/h") && Header("X-Env", "prod") -> <shunt>;
        cookie: Path("/c") && Cookie("beta", /^on$/) -> <shunt>;
        qp: Path("/q") && QueryParam("debug") -> <shunt>;
        qpv: Path("/q") && QueryParam("v", /^2$/) -> <shunt>;
        src: Path("/s") && Source("10.0.0.0/8") -> <shunt>;
        cip: Path("/i") && ClientIP("192.0.2.0/24", "2001:db8::1") -> <shunt>;
        "#,
    );
    let mut r = get("/");
    r.host = "api.example.org";
    assert_eq!(hit(&t, &r), id("host"));
    assert_eq!(hit(&t, &get("/")), None);
    let mut r = get("/m");
    r.method = Method::DELETE;
    assert_eq!(hit(&t, &r), id("methods"));
    assert_eq!(hit(&t, &get("/m")), None);
    assert_eq!(hit(&t, &get("/h").header("x-env", "prod")), id("hdr"));
    assert_eq!(hit(&t, &get("/h").header("x-env", "dev")), None);
    assert_eq!(
        hit(&t, &get("/c").header("cookie", "a=1; beta=on")),
        id("cookie")
    );
    assert_eq!(hit(&t, &get("/c").header("cookie", "beta=off")), None);
    let mut r = get("/q");
    r.query = Some("x=1&debug");
    assert_eq!(hit(&t, &r), id("qp"));
    r.query = Some("v=2");
    assert_eq!(hit(&t, &r), id("qpv"));
    r.query = Some("v=3");
    assert_eq!(hit(&t, &r), None);
    // Source believes X-Forwarded-For, ClientIP only the peer.
    assert_eq!(hit(&t, &get("/s")), None);
    assert_eq!(
        hit(
            &t,
            &get("/s").header("x-forwarded-for", "10.1.2.3, 192.0.2.7")
        ),
        id("src")
    );
    assert_eq!(
        hit(&t, &get("/i").header("x-forwarded-for", "10.1.2.3")),
        id("cip")
    );
}

#[test]
fn traffic_fraction_and_stickiness() {
    let t = table(
        r#"
        canary: Path("/") && Traffic(.1, "canary", "v2") -> <shunt>;
        main: Path("/") -> <shunt>;
        "#,
    );
    assert_eq!(hit_roll(&t, &get("/"), 0.05), id("canary"));
    assert_eq!(hit_roll(&t, &get("/"), 0.5), id("main"));
    // The cookie decides, whatever the draw.
    let with = get("/").header("cookie", "canary=v2");
    assert_eq!(hit_roll(&t, &with, 0.99), id("canary"));
    let other = get("/").header("cookie", "canary=v1");
    assert_eq!(hit_roll(&t, &other, 0.0), id("main"));
    // Over many draws the share is the chance.
    let mut seed = 1u64;
    let mut n = 0;
    for _ in 0..10_000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if hit_roll(&t, &get("/"), (seed >> 11) as f64 / (1u64 << 53) as f64) == id("canary") {
            n += 1;
        }
    }
    assert!((800..1200).contains(&n), "{n} of 10000");
}

#[test]
fn refused_files() {
    let e = |text: &str| Table::load(text).err().expect(text).to_string();
    assert_eq!(
        e("a: Path(\"/\") ->"),
        "1:16: expected a backend (\"URL\", <shunt>, <loopback>, <dynamic> or <endpoints>), found end of input"
    );
    assert_eq!(
        e("a: Path(\"/\") && Host(/[/) -> <shunt>"),
        "1:17: Host: argument 1 is not a valid regexp: regex parse error:\n    [\n    ^\nerror: unclosed character class"
    );
    assert_eq!(
        e("a: Path(\"/\") && Path(\"/b\") -> <shunt>"),
        "1:17: Path: a route has at most one Path or PathSubtree"
    );
    assert_eq!(
        e("a: Path(\"x\") -> <shunt>"),
        "1:4: Path: \"x\" does not start with '/'"
    );
    assert_eq!(
        e("a: Path(\"/*a/b\") -> <shunt>"),
        "1:4: Path: a '*wildcard' must be the last segment"
    );
    assert_eq!(
        e("a: JWTPayloadAnyKV(\"k\", \"v\") -> oauthTokeninfo() -> <dynamic>"),
        "1:4: route a: predicate JWTPayloadAnyKV is not implemented by knit; 1:33: route a: filter oauthTokeninfo is not implemented by knit; 1:1: route a: backend <dynamic> is not implemented by knit"
    );
    assert_eq!(
        e("a: * -> status(99) -> <shunt>"),
        "1:9: status: 99 is not an HTTP status code (100-599)"
    );
    assert_eq!(
        e("a: * -> setRequestHeader(\"X\") -> <shunt>"),
        "1:9: setRequestHeader: takes 2 argument(s), got 1"
    );
    assert_eq!(
        e("a: * -> tlsPassClientCertificates(\"x\") -> <shunt>"),
        "1:9: tlsPassClientCertificates: takes 0 argument(s), got 1"
    );
    assert!(Table::load("a: * -> tlsPassClientCertificates() -> <shunt>").is_ok());
    assert_eq!(
        e("a: Traffic(2) -> <shunt>"),
        "1:4: Traffic: chance 2 is not between 0 and 1"
    );
    assert_eq!(
        e("a: Source(\"10.0.0.0/33\") -> <shunt>"),
        "1:4: Source: \"10.0.0.0/33\" is not an address or CIDR"
    );
    assert!(e("a: * -> \"ftp://x\"").contains("only http://, https://, h2c://"));
    assert!(Table::load("a: * -> \"https://x\"; b: * -> \"h2c://y:81\";").is_ok());
    assert!(e("a: * -> <fairest, \"http://a:1\">").contains("load balancing algorithm fairest"));
    assert!(Table::load("a: * -> <weightedRoundRobin, \"http://a:1\", \"http://b:1\">").is_ok());
}

#[test]
fn backends() {
    use super::route::{Algorithm, Backend, Target};
    let t = table(
        r#"
        a: * -> "http://10.0.0.1";
        b: Path("/b") -> <leastRequests, "http://[2001:db8::1]:8080", "knit://service/web", "knit://sandbox/s1:80">;
        "#,
    );
    let Backend::Lb { algorithm, targets } = &t.routes[0].backend else {
        panic!()
    };
    assert_eq!(*algorithm, Algorithm::RoundRobin);
    assert_eq!(targets, &[Target::Http("10.0.0.1:80".into())]);
    let Backend::Lb { algorithm, targets } = &t.routes[1].backend else {
        panic!()
    };
    assert_eq!(*algorithm, Algorithm::LeastRequests);
    assert_eq!(
        targets,
        &[
            Target::Http("[2001:db8::1]:8080".into()),
            Target::Service("web".into()),
            Target::Sandbox("s1".into(), 80)
        ]
    );
}

#[test]
fn a_stored_route_is_one_route_and_replaces_the_file_route() {
    let file = "a: Path(\"/a\") -> <shunt>; b: Path(\"/b\") -> <shunt>;";
    let stored = vec![("a".to_string(), "Path(\"/x\") -> <shunt>".to_string())];
    let t = Table::load_merged(file, &stored).unwrap();
    let ids: Vec<&str> = t.routes.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["b", "a"]);
    // A stored text that smuggles in another route is refused whole.
    let smuggled = vec![(
        "a".to_string(),
        "* -> <shunt>; evil: Path(\"/admin\") -> <shunt>".to_string(),
    )];
    let e = Table::load_merged(file, &smuggled)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with("store route a:") && e.contains("expected one route"),
        "{e}"
    );
}

#[test]
fn arguments_that_would_overflow_or_recurse_are_refused() {
    let e = |text: &str| Table::load(text).err().expect(text).to_string();
    assert!(e("a: * -> latency(1e400) -> <shunt>").contains("too large"));
    assert!(e("a: * -> latency(1e30) -> <shunt>").contains("longer than a week"));
    assert!(e("a: * -> latency(\"9000000h\") -> <shunt>").contains("longer than a week"));
    assert!(e("a: * -> bandwidth(1e-20) -> <shunt>").contains("not a bandwidth"));
    assert!(e("a: * -> auditLog(2000000) -> <shunt>").contains("at most"));
    let deep = format!("a: Path(\"{}\") -> <shunt>", "/a".repeat(300));
    assert!(e(&deep).contains("more than 256 path segments"));
    let ok = format!("a: PathSubtree(\"{}\") -> <shunt>", "/a".repeat(256));
    assert!(Table::load(&ok).is_ok());
}
