//! The README's first command runs `knit demo`; it must pass its own checks and leave
//! nothing behind.

mod common;

#[test]
fn demo_proves_the_lab_and_cleans_up() {
    let out = std::process::Command::new(common::KNIT)
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert_eq!(stdout.matches("[ok]").count(), 21, "{stdout}");
    for step in [
        "service VIP",
        "node port",
        "can no longer reach",
        "allowed: client",
        "a tenth reach v2",
        "rewritten to /items",
        "get 429",
        "v2 ejected",
    ] {
        assert!(stdout.contains(step), "missing {step:?}: {stdout}");
    }
    let left = common::sh_ok(&["ip", "netns", "list"]);
    assert!(
        !left.lines().any(|l| l.starts_with("knitdemo")),
        "demo left namespaces: {left}"
    );
}
