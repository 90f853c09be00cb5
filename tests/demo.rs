//! The README's first command runs `knit demo`; it must pass its own checks and leave
//! nothing behind.

mod common;

#[test]
fn demo_proves_the_lab_and_cleans_up() {
    let out = std::process::Command::new(common::KNIT).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("all checks passed"), "{stdout}");
    assert_eq!(stdout.matches("[ok]").count(), 6, "{stdout}");
    let tag = format!("knitdemo{}", out.status.code().map(|_| "").unwrap_or(""));
    let left = common::sh_ok(&["ip", "netns", "list"]);
    let pid_tags: Vec<&str> = left.lines().filter(|l| l.starts_with(&tag) && l.contains("knitdemo")).collect();
    assert!(pid_tags.is_empty(), "demo left namespaces: {pid_tags:?}");
}
