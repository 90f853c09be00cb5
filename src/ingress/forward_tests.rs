//! The forwarding headers and hop-by-hop removal, on header maps.

use super::*;

#[test]
fn forwarding_headers_say_what_this_client_asked() {
    let mut h = HeaderMap::new();
    h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
    h.insert(
        "x-forwarded-host",
        HeaderValue::from_static("admin.internal"),
    );
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    forwarding_headers(
        &mut h,
        "shop.example",
        "10.0.0.7:5555".parse().unwrap(),
        "http",
    );
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.7");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(h["x-forwarded-proto"], "http");
    // Two peers in turn on one thread: each gets its own address.
    for peer in ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.1:2"] {
        let mut h = HeaderMap::new();
        let addr: SocketAddr = peer.parse().unwrap();
        forwarding_headers(&mut h, "a", addr, "http");
        assert_eq!(h["x-forwarded-for"], addr.ip().to_string());
    }
    // An empty Host is no X-Forwarded-Host.
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static(""));
    forwarding_headers(&mut h, "", "10.0.0.1:1".parse().unwrap(), "http");
    assert!(!h.contains_key("x-forwarded-host"));
    // A first hop: the peer alone; the client's Host as it sent it.
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("shop.example"));
    h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
    forwarding_headers(
        &mut h,
        "shop.example",
        "[2001:db8::7]:1".parse().unwrap(),
        "https",
    );
    assert_eq!(h["x-forwarded-for"], "2001:db8::7");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    forwarding_headers(&mut h, "", "10.0.0.8:1".parse().unwrap(), "https");
    assert!(!h.contains_key("x-forwarded-host"));
}

#[test]
fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
    let mut h = HeaderMap::new();
    for (n, v) in [
        ("connection", "keep-alive, X-Secret"),
        ("connection", "close,x-other"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("x-other", "2"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("proxy-connection", "keep-alive"),
        ("content-type", "text/plain"),
        ("x-kept", "3"),
    ] {
        h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
    }
    strip_hop_by_hop(&mut h);
    let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    left.sort();
    assert_eq!(left, ["content-type", "x-kept"]);
    // Nothing hop-by-hop: nothing changes.
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
    strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
}
