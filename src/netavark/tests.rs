use super::*;

#[test]
fn info_names_the_api_version() {
    let out = run(&["info".into()], b"").unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["api_version"], API_VERSION);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn setup_without_a_netns_or_with_bad_json_is_an_error_naming_it() {
    let e = run(&["setup".into()], b"{}").unwrap_err().to_string();
    assert!(e.contains("netns"), "{e}");
    let e = run(&["setup".into(), "/proc/self/ns/net".into()], b"{")
        .unwrap_err()
        .to_string();
    assert!(e.contains("stdin"), "{e}");
    let e = run(&["bogus".into()], b"").unwrap_err().to_string();
    assert!(e.contains("bogus"), "{e}");
}
