//! The parser against the route examples of Skipper's documentation (reference pages for
//! predicates, filters, backends and the load balancer package), and its errors.

use super::*;

fn s(v: &str) -> Arg {
    Arg::String(v.into())
}

fn names(ts: &[Term]) -> Vec<&str> {
    ts.iter().map(|t| t.name.as_str()).collect()
}

fn one(text: &str) -> Route {
    let mut r = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(r.len(), 1, "{text}");
    r.remove(0)
}

#[test]
fn backend_reference_examples() {
    let r = one(r#"r0: Method("GET")
    -> setRequestHeader("X-Passed-Skipper", "true")
    -> "https://www.zalando.de/";"#);
    assert_eq!(r.id, "r0");
    assert_eq!(r.predicates[0].name, "Method");
    assert_eq!(r.predicates[0].args, vec![s("GET")]);
    assert_eq!(r.filters[0].name, "setRequestHeader");
    assert_eq!(r.filters[0].args, vec![s("X-Passed-Skipper"), s("true")]);
    assert_eq!(
        r.backend,
        Backend::Network {
            url: "https://www.zalando.de/".into()
        }
    );
    assert_eq!(
        one(r#"r0: Path("/foo") -> inlineContent("OK") -> <shunt>;"#).backend,
        Backend::Shunt
    );
    let lo = one(r#"r1: Path("/") -> setPath("/foo") -> <loopback>;"#);
    assert_eq!(lo.backend, Backend::Loopback);
    assert_eq!(names(&lo.filters), ["setPath"]);
    let dy =
        one(r#"r2: Path("/") -> setDynamicBackendHostFromHeader("X-Backend-Host") -> <dynamic>;"#);
    assert_eq!(dy.backend, Backend::Dynamic);
}

#[test]
fn load_balancer_examples() {
    let routes = parse(
        r#"r1: * -> <roundRobin, "http://127.0.0.1:9998", "http://127.0.0.1:9997">;
r2: * -> <consistentHash, "http://127.0.0.1:9998", "http://127.0.0.1:9997">;
r3: * -> <random, "http://127.0.0.1:9998", "http://127.0.0.1:9997">;
r4: * -> <powerOfRandomNChoices, "http://127.0.0.1:9998", "http://127.0.0.1:9997">;
r5: * -> <"http://127.0.0.1:9998", "http://127.0.0.1:9997">;
r6: * -> <"http://127.0.0.1:9998">;"#,
    )
    .unwrap();
    let algos: Vec<Option<&str>> = routes
        .iter()
        .map(|r| match &r.backend {
            Backend::Lb { algorithm, .. } => algorithm.as_deref(),
            b => panic!("{b:?}"),
        })
        .collect();
    assert_eq!(
        algos,
        [
            Some("roundRobin"),
            Some("consistentHash"),
            Some("random"),
            Some("powerOfRandomNChoices"),
            None,
            None
        ]
    );
    for r in &routes {
        assert!(r.predicates.is_empty(), "* has no predicates");
    }
    let Backend::Lb { endpoints, .. } = &routes[4].backend else {
        panic!()
    };
    assert_eq!(
        endpoints,
        &["http://127.0.0.1:9998", "http://127.0.0.1:9997"]
    );
    let Backend::Lb { endpoints, .. } = &routes[5].backend else {
        panic!()
    };
    assert_eq!(endpoints.len(), 1);
}

#[test]
fn predicate_reference_examples() {
    let text = r#"
// paths
a: Path("/foo/bar") -> "http://a";
b: Path("/foo/:id") -> "http://b";
c: Path("/foo/*rest") -> "http://c";
d: PathSubtree("/foo") -> "http://d";
e: PathRegexp(/\.html$/) -> "http://e";
f: Host(/^my-host-header\.example\.org$/) -> "http://f";
g: Path("/") && Weight(20) -> "http://g";
h: Methods("GET", "POST") -> "http://h";
i: Header("X-Forwarded-For", "192.168.0.2") -> "http://i";
j: HeaderRegexp("User-Agent", /Chrome/) -> "http://j";
k: Cookie("alpha", /^enabled$/) -> "http://k";
l: QueryParam("foo", /^bar$/) && QueryParam("baz") -> "http://l";
m: Source("1.2.3.4", "2.2.2.0/24") -> "http://m";
n: ClientIP("10.0.0.0/8") -> "http://n";
o: Traffic(.25) -> "http://o";
p: Traffic(.1, "canary", "v2") -> "http://p";
q: True() -> "http://q";
"#;
    let routes = parse(text).unwrap();
    let ids: Vec<&str> = routes.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q"
        ]
    );
    assert_eq!(
        routes[4].predicates[0].args,
        vec![Arg::Regexp(r"\.html$".into())]
    );
    assert_eq!(
        routes[5].predicates[0].args,
        vec![Arg::Regexp(r"^my-host-header\.example\.org$".into())]
    );
    assert_eq!(routes[6].predicates[1].args, vec![Arg::Number(20.0)]);
    assert_eq!(names(&routes[11].predicates), ["QueryParam", "QueryParam"]);
    assert_eq!(routes[14].predicates[0].args, vec![Arg::Number(0.25)]);
    assert_eq!(
        routes[15].predicates[0].args,
        vec![Arg::Number(0.1), s("canary"), s("v2")]
    );
    assert!(routes[16].predicates[0].args.is_empty());
    // Positions: route b starts on line 4 (the text starts with a newline and a comment).
    assert_eq!((routes[1].line, routes[1].col), (4, 1));
    assert_eq!(
        (routes[1].predicates[0].line, routes[1].predicates[0].col),
        (4, 4)
    );
}

#[test]
fn filter_reference_examples() {
    let r = one(
        r#"redirect: Path("/old") -> modPath(/^\/old\/(.*)$/, "/new/$1")
  -> setResponseHeader("X-Powered-By", `knit "ingress"`)
  -> status(301) -> redirectTo(308, "https://example.org")
  -> stripQuery("true") -> <shunt>"#,
    );
    assert_eq!(
        names(&r.filters),
        [
            "modPath",
            "setResponseHeader",
            "status",
            "redirectTo",
            "stripQuery"
        ]
    );
    assert_eq!(
        r.filters[0].args,
        vec![Arg::Regexp(r"^/old/(.*)$".into()), s("/new/$1")]
    );
    assert_eq!(r.filters[1].args[1], s(r#"knit "ingress""#));
    assert_eq!(r.filters[2].args, vec![Arg::Number(301.0)]);
}

#[test]
fn lexical_forms() {
    let r = one(
        "x: Foo(\"a\\\"b\\\\c\\n\", `raw\\n\nline`, -1.5, 0x10, 1e3, 7, /a\\/b\\d/, //) -> <shunt>;",
    );
    assert_eq!(
        r.predicates[0].args,
        vec![
            s("a\"b\\c\n"),
            s("raw\\n\nline"),
            Arg::Number(-1.5),
            Arg::Number(16.0),
            Arg::Number(1000.0),
            Arg::Number(7.0),
            Arg::Regexp(r"a/b\d".into()),
            Arg::Regexp(String::new()),
        ]
    );
}

#[test]
fn documents() {
    assert!(parse("").unwrap().is_empty());
    assert!(parse("  // only a comment\n;;").unwrap().is_empty());
    // A lone route may be unnamed; a trailing semicolon is optional.
    let r = one(r#"Path("/") -> "http://x""#);
    assert_eq!(r.id, "");
    let two = parse("a: * -> <shunt>;; b: * -> <shunt>").unwrap();
    assert_eq!(two.len(), 2);
    // Comments anywhere between tokens, also at the end without a newline.
    let c = parse("a: // the first\n Path(\"/\") // p\n -> // f\n <shunt>; // end").unwrap();
    assert_eq!(c[0].predicates[0].name, "Path");
    // Display round-trips.
    let text = r#"a: Path("/x") && Host(/^a\/b$/) -> setPath("/y") -> <roundRobin, "http://1", "http://2">;"#;
    let parsed = parse(text).unwrap();
    assert_eq!(parsed[0].to_string(), text);
    assert_eq!(parse(&parsed[0].to_string()).unwrap(), parsed);
    // Strings with every escape, control characters and non-ASCII text come back as they
    // were (not as Rust would escape them).
    let odd = "q\"b\\n\nt\tr\rb\u{8}f\u{c}v\u{b}nul\u{0}esc\u{1b}zw\u{200b}é😀";
    let r = Route {
        id: "odd".into(),
        predicates: vec![Term {
            name: "Header".into(),
            args: vec![Arg::String("X".into()), Arg::String(odd.into())],
            line: 0,
            col: 0,
        }],
        filters: vec![],
        backend: Backend::Network {
            url: format!("http://{odd}"),
        },
        line: 0,
        col: 0,
    };
    let back = parse(&r.to_string()).unwrap();
    assert_eq!(
        back[0].predicates[0].args[1],
        Arg::String(odd.into()),
        "{r}"
    );
    assert_eq!(back[0].backend, r.backend);
}

#[test]
fn filter_and_predicate_lists() {
    let f = parse_filters(r#"setRequestHeader("A", "b") -> stripQuery()"#).unwrap();
    assert_eq!(names(&f), ["setRequestHeader", "stripQuery"]);
    assert!(parse_filters("").unwrap().is_empty());
    let p = parse_predicates(r#"Path("/") && Method("GET")"#).unwrap();
    assert_eq!(names(&p), ["Path", "Method"]);
    assert!(parse_predicates("*").unwrap().is_empty());
    assert!(parse_filters("a() -> ").is_err());
}

fn err(text: &str) -> String {
    parse(text).expect_err(text).to_string()
}

#[test]
fn errors_have_line_and_column() {
    assert_eq!(
        err("a: Path(\"/\") -> \"http://x\";\nb: Path(\"/\") \"http://y\";"),
        "2:14: expected '->' (then filters or the backend), found a string"
    );
    assert_eq!(err("a: Path(\"/) -> <shunt>;"), "1:9: unterminated string");
    assert_eq!(
        err("a: -> <shunt>;"),
        "1:4: expected a predicate (Name(args)) or '*' (routes need '*' when they have no predicate), found '->'"
    );
    assert_eq!(
        err("a: * -> <nope>;"),
        "1:10: unknown backend <nope> (shunt, loopback, dynamic, forward, or a list of URLs)"
    );
    assert_eq!(
        err("a: * -> <shunt>;\na: * -> <shunt>;"),
        "2:1: duplicate route id \"a\" (first defined at 1:1)"
    );
    assert_eq!(
        err("a: * -> <shunt> b: * -> <shunt>"),
        "1:17: expected ';' between routes, found 'b'"
    );
    assert_eq!(
        err("* -> <shunt>; * -> <shunt>"),
        "1:15: expected end of input (only a file with a single route may leave it unnamed), found '*'"
    );
    assert_eq!(
        err("a: P(\"x\" \"y\") -> <shunt>"),
        "1:10: expected ',' or ')' in the arguments of P, found a string"
    );
    assert_eq!(
        err("a: P(x) -> <shunt>"),
        "1:6: expected an argument (string, number or /regexp/), found 'x'"
    );
    assert_eq!(err("a: P() & Q() -> <shunt>"), "1:8: '&' must be '&&'");
    assert_eq!(
        err("a: P(/ab\n/) -> <shunt>"),
        "1:6: unterminated regexp (a regexp ends with '/' on its line)"
    );
    assert_eq!(
        err("a: * -> <roundRobin>"),
        "1:10: unknown backend <roundRobin> (shunt, loopback, dynamic, forward, or a list of URLs)"
    );
    assert_eq!(
        err("a: * -> <roundRobin, >"),
        "1:22: expected an endpoint URL, found '>'"
    );
    assert_eq!(
        err("a: * -> f()"),
        "1:12: expected '->' (then filters or the backend), found end of input"
    );
    assert_eq!(
        err("a: P(1.2.3) -> <shunt>"),
        "1:6: invalid number \"1.2.3\""
    );
    assert_eq!(err("a: * -> `x"), "1:9: unterminated backtick string");
    assert_eq!(err("a: P() -> \"x\" ; @"), "1:17: unexpected character '@'");
}
