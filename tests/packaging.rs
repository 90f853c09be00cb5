//! What a package ships, generated from the binary itself: version with the commit,
//! completions, the man page, and systemd units that run commands the binary has.

mod common;
use common::KNIT;
use std::process::Command;

fn knit(args: &[&str]) -> String {
    let o = Command::new(KNIT).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "knit {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn version_names_the_commit() {
    let v = knit(&["--version"]);
    let commit = v
        .split(['(', ')'])
        .nth(1)
        .unwrap_or_else(|| panic!("no commit in {v:?}"));
    let hex = commit.trim_end_matches("-dirty");
    assert!(
        hex == "unknown" || (hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit())),
        "{v:?}"
    );
    assert!(
        v.starts_with(&format!("knit {}", env!("CARGO_PKG_VERSION"))),
        "{v:?}"
    );
}

#[test]
fn completions_and_man_page_cover_the_commands() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef knit"),
        ("fish", "complete -c knit"),
    ] {
        let out = knit(&["completions", shell]);
        assert!(out.contains(marker), "{shell}");
        for cmd in ["attach", "network", "policy", "daemon"] {
            assert!(out.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
    let man = knit(&["man"]);
    assert!(man.contains(".TH knit 1"));
    assert!(man.contains("reconcile") && man.contains("attach"));
    let o = Command::new(KNIT)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("tcsh"));
}

#[test]
fn systemd_units_run_commands_the_binary_has() {
    let root = env!("CARGO_MANIFEST_DIR");
    for unit in ["knit-daemon.service", "knit-reconcile.service"] {
        let text = std::fs::read_to_string(format!("{root}/contrib/systemd/{unit}")).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(
            args[0], "/usr/bin/knit",
            "{unit}: the package installs /usr/bin/knit"
        );
        // The same arguments parse: `--help` after them exits 0 without running anything.
        let mut check: Vec<&str> = args[1..].to_vec();
        check.push("--help");
        knit(&check);
    }
    let cargo = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap();
    assert!(
        cargo.contains("libnftables1"),
        "the .deb must state the dlopen'ed libnftables"
    );
    assert!(cargo.contains("license = \"MIT\""));
    assert!(std::path::Path::new(&format!("{root}/LICENSE")).exists());
}
