//! Issue 10's guardrails, one test per numbered finding knit owns here: it never harms
//! what it does not own (2), never loses a concurrent change (3), refuses the node's own
//! namespace (4), never starts over on a lost store (7), keeps the first network's default
//! route (8), restores its table for runtimes' recovery flows (10), and the smaller ones (11).

mod common;
use common::cni::*;
use common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

/// knit's table with every element list sorted, so two listings of the same state compare
/// equal whatever order the kernel printed the elements in.
fn normalized_table(w: &World) -> String {
    sorted_elements(&w.nft_table())
}

/// The kernel's state equals what a rebuild from the store writes: incremental changes
/// left nothing stale and missed nothing.
fn assert_store_and_kernel_agree(w: &World) {
    let before = normalized_table(w);
    w.ok(&["reconcile"]);
    let after = normalized_table(w);
    assert_eq!(before, after, "kernel state differed from the store");
}

/// Runs knit commands at once and waits for all of them before asserting (a panic must not
/// leave commands running after the world is torn down): every one must succeed.
fn all_succeed(w: &World, commands: Vec<[&str; 3]>) {
    let kids: Vec<_> = commands
        .iter()
        .map(|args| {
            w.cmd(args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    for o in outs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// The host veths the attachments record, and the knit veths the node has.
fn recorded_and_live_veths(w: &World, atts: &Value) -> (HashSet<String>, HashSet<String>) {
    let recorded = atts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["host_ifname"].as_str().unwrap().to_string())
        .collect();
    let live = w
        .knit_links()
        .into_iter()
        .filter(|l| l.starts_with("kv"))
        .collect();
    (recorded, live)
}

fn link_exists(w: &World, name: &str) -> bool {
    sh(&["ip", "-n", &w.node, "link", "show", name])
        .status
        .success()
}

#[test]
fn item2_a_failed_create_never_deletes_a_link_knit_does_not_own() {
    let mut w = World::new().with_outside();
    // The node's uplink (a veth), a foreign bridge, and a sandbox's own host veth.
    sh_ok(&["ip", "-n", &w.node, "link", "add", "fbr", "type", "bridge"]);
    w.ok(&["network", "create", "a", "--subnet", "10.60.0.0/24"]);
    let s = w.sandbox("s");
    w.ok(&["attach", "a", &s]);
    let host_veth = w.json(&["network", "inspect", "a"])["attachments"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_string();
    for (i, name) in ["uplink", "fbr", host_veth.as_str()].iter().enumerate() {
        let err = w.fail(&[
            "network",
            "create",
            &format!("n{i}"),
            "--subnet",
            &format!("10.61.{i}.0/24"),
            "--bridge",
            name,
        ]);
        assert!(
            err.contains("already exists") || err.contains("a name knit generates"),
            "{err}"
        );
        assert!(link_exists(&w, name), "knit deleted {name}");
    }
    assert!(
        w.node_ip(&["addr", "show", "uplink"])
            .contains(NODE_UPLINK4)
    );
    assert!(ping(&s, "10.60.0.1"), "the sandbox lost its link");
    // Nothing recorded for the refused networks.
    let nets = w.json(&["network", "ls"]);
    assert_eq!(nets.as_array().unwrap().len(), 1, "{nets}");
}

#[test]
fn item2_rm_and_reconcile_leave_links_knit_did_not_create() {
    let w = World::new();
    w.ok(&["network", "create", "r", "--subnet", "10.62.0.0/24"]);
    let br = w.json(&["network", "inspect", "r"])["network"]["bridge"]
        .as_str()
        .unwrap()
        .to_string();
    // Someone replaces knit's bridge with their own of the same name.
    sh_ok(&["ip", "-n", &w.node, "link", "del", &br]);
    sh_ok(&["ip", "-n", &w.node, "link", "add", &br, "type", "bridge"]);
    // And a link that merely looks like a knit veth.
    sh_ok(&[
        "ip",
        "-n",
        &w.node,
        "link",
        "add",
        "kv0123456789",
        "type",
        "veth",
        "peer",
        "name",
        "kvpeer",
    ]);
    let rep = w.run(&["--json", "reconcile"]);
    let out: Value = serde_json::from_slice(&rep.stdout).unwrap();
    assert!(
        link_exists(&w, "kv0123456789"),
        "reconcile deleted a foreign link"
    );
    assert!(
        out["unrecorded_links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "kv0123456789"),
        "{out}"
    );
    assert!(
        !out["errors"].as_array().unwrap().is_empty(),
        "reconcile must report the foreign bridge in place of knit's: {out}"
    );
    w.ok(&["network", "rm", "r"]);
    assert!(
        link_exists(&w, &br),
        "network rm deleted a bridge knit did not create"
    );
}

#[test]
fn item2_cni_adopts_only_bridges_and_never_deletes_them() {
    let w = World::new().with_outside();
    let ns = format!("{}-c", w.prefix);
    sh_ok(&["ip", "netns", "add", &ns]);
    let mut w = w;
    w.track(&ns);
    // A non-bridge link as the bridge: refused before any change.
    let mut bad = Conflist::new("cbad", "1.0.0", knit_plugins("uplink", "10.63.0.0/24"));
    let r = bad.add(&w, "c1", &format!("/run/netns/{ns}"), "eth0", &json!({}));
    let o = r.expect_err("ADD with a veth as bridge must fail");
    assert_ne!(o.code, 0);
    assert!(o.stdout.contains("not a bridge"), "{}", o.stdout);
    assert!(!w.node_ip(&["addr", "show", "uplink"]).contains("10.63.0.1"));
    // Refused before any change: knit never made its table (so "uplink" is in no set).
    assert!(w.nft_table_absent());
    assert!(w.json(&["network", "ls"]).as_array().unwrap().is_empty());
    // A foreign bridge is adopted, used, and survives DEL and network rm.
    sh_ok(&[
        "ip", "-n", &w.node, "link", "add", "shared0", "type", "bridge",
    ]);
    let mut ok = Conflist::new("cgood", "1.0.0", knit_plugins("shared0", "10.64.0.0/24"));
    let res = ok
        .add(&w, "c2", &format!("/run/netns/{ns}"), "eth0", &json!({}))
        .expect("ADD on an adopted bridge");
    assert!(ping(&w.node, &result_ip(&res)));
    ok.del(&w, "c2", &format!("/run/netns/{ns}"), "eth0", &json!({}))
        .expect("DEL");
    w.ok(&["network", "rm", "cgood"]);
    assert!(link_exists(&w, "shared0"), "knit deleted an adopted bridge");
    assert!(link_exists(&w, "uplink"));
}

#[test]
fn item3_concurrent_attach_and_detach_of_one_sandbox_lose_nothing() {
    let mut w = World::new();
    w.ok(&["network", "create", "cc", "--subnet", "10.65.0.0/24"]);
    let sandboxes: Vec<String> = (0..12).map(|i| w.sandbox(&format!("s{i}"))).collect();
    // Three attaches at once per sandbox.
    all_succeed(
        &w,
        sandboxes
            .iter()
            .flat_map(|s| [["attach", "cc", s.as_str()]; 3])
            .collect(),
    );
    let atts = w.json(&["network", "inspect", "cc"])["attachments"].clone();
    assert_eq!(atts.as_array().unwrap().len(), sandboxes.len(), "{atts}");
    let (recorded, live) = recorded_and_live_veths(&w, &atts);
    assert_eq!(recorded, live, "orphaned or missing veths");
    // attach ∥ detach of each sandbox, twice.
    for _ in 0..2 {
        all_succeed(
            &w,
            sandboxes
                .iter()
                .flat_map(|s| [["detach", "cc", s.as_str()], ["attach", "cc", s.as_str()]])
                .collect(),
        );
    }
    let atts = w.json(&["network", "inspect", "cc"])["attachments"].clone();
    let (recorded, live) = recorded_and_live_veths(&w, &atts);
    assert_eq!(
        recorded, live,
        "orphaned or missing veths after attach ∥ detach"
    );
    for a in atts.as_array().unwrap() {
        assert_eq!(a["state"], "ready", "{a}");
    }
    assert_store_and_kernel_agree(&w);
}

#[test]
fn item3_concurrent_changes_to_one_service_keep_kernel_and_store_in_step() {
    let mut w = World::new();
    w.ok(&["network", "create", "sv", "--subnet", "10.66.0.0/24"]);
    let backends: Vec<String> = (0..4).map(|i| w.sandbox(&format!("b{i}"))).collect();
    for b in &backends {
        w.ok(&["attach", "sv", b]);
    }
    w.ok(&["service", "create", "web", "--vip", "10.96.0.10:80"]);
    // Four processes flipping backends of one service, and four re-attaching backends.
    let mut kids = vec![];
    for (i, b) in backends.iter().enumerate() {
        let target = format!("{b}:80");
        let ip_target = format!("10.66.1.{}:8080", i + 1);
        let script = format!(
            "for r in 1 2 3 4 5 6; do \
               {k} --state-dir {st} service backend add web {target} || exit 1; \
               {k} --state-dir {st} service backend add web {ip_target} || exit 1; \
               {k} --state-dir {st} service backend rm web {ip_target} || exit 1; \
               {k} --state-dir {st} detach sv {b} || exit 1; \
               {k} --state-dir {st} attach sv {b} >/dev/null || exit 1; \
             done",
            k = KNIT,
            st = w.state.display(),
        );
        kids.push(
            command_in(&w.node, "bash")
                .args(["-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    // Every child is waited for before any assertion: a panic must not leave
    // commands running after the world is torn down.
    let outs: Vec<_> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    for o in outs {
        assert!(
            o.status.success(),
            "a concurrent change failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let svc = w.json(&["service", "inspect", "web"]);
    assert!(svc.to_string().contains("10.66.0."), "{svc}");
    assert_store_and_kernel_agree(&w);
}

#[test]
fn item3_first_adds_on_a_fresh_state_dir_all_succeed() {
    for round in 0..12 {
        let w = World::new();
        let ns: Vec<String> = (0..10)
            .map(|i| format!("{}-f{round}x{i}", w.prefix))
            .collect();
        let mut w = w;
        for n in &ns {
            sh_ok(&["ip", "netns", "add", n]);
            w.track(n);
        }
        let conf = json!({
            "cniVersion": "1.0.0", "name": "fresh", "type": "knit", "bridge": "cni-fr0",
            "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.67.0.0/24"}]]}
        })
        .to_string();
        let kids: Vec<_> = ns
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut c = command_in(&w.node, KNIT);
                c.env_clear()
                    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                    .env("KNIT_STATE_DIR", &w.state)
                    .env("CNI_COMMAND", "ADD")
                    .env("CNI_CONTAINERID", format!("cid{i}"))
                    .env("CNI_NETNS", format!("/run/netns/{n}"))
                    .env("CNI_IFNAME", "eth0")
                    .env("CNI_PATH", "/usr/lib/cni")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut child = c.spawn().unwrap();
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(conf.as_bytes())
                    .unwrap();
                child
            })
            .collect();
        // Every child is waited for before any assertion: a panic must not leave
        // commands running after the world is torn down.
        let outs: Vec<_> = kids
            .into_iter()
            .map(|k| k.wait_with_output().unwrap())
            .collect();
        for o in outs {
            assert!(
                o.status.success(),
                "round {round}: concurrent first ADD failed: {}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
    }
}

#[test]
fn item4_the_node_namespace_is_never_a_sandbox() {
    let mut w = World::new().with_outside();
    w.ok(&["network", "create", "h", "--subnet", "10.68.0.0/24"]);
    let before = w.node_ip(&["route", "show", "default"]);
    let node_path = format!("/run/netns/{}", w.node);
    let err = w.fail(&["attach", "h", &node_path]);
    assert!(err.contains("node's own network namespace"), "{err}");
    // A host-network process's namespace, by pid.
    let mut sleeper = command_in(&w.node, "sleep").arg("30").spawn().unwrap();
    let err = w.fail(&["attach", "h", &format!("pid:{}", sleeper.id())]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(err.contains("node's own network namespace"), "{err}");
    // CNI with the node's namespace as CNI_NETNS.
    let mut c = Conflist::new("hc", "1.0.0", knit_plugins("cni-h0", "10.69.0.0/24"));
    let o = c
        .add(&w, "cid", &node_path, "eth9", &json!({}))
        .expect_err("CNI ADD into the node namespace");
    assert!(
        o.stdout.contains("node's own network namespace"),
        "{}",
        o.stdout
    );
    assert_eq!(w.node_ip(&["route", "show", "default"]), before);
    assert!(!w.node_ip(&["link"]).contains("eth9"));
    // sandbox rm never deletes a namespace knit did not create.
    let err = w.fail(&["sandbox", "rm", &w.node.clone()]);
    assert!(err.contains("not created by knit"), "{err}");
    assert!(std::path::Path::new(&node_path).exists());
    let foreign = format!("{}-foreign", w.prefix);
    sh_ok(&["ip", "netns", "add", &foreign]);
    w.track(&foreign);
    w.ok(&["attach", "h", &foreign]);
    let out = w.ok(&["sandbox", "rm", &foreign]);
    assert!(out.contains("left in place"), "{out}");
    assert!(std::path::Path::new(&format!("/run/netns/{foreign}")).exists());
    assert!(
        w.json(&["network", "inspect", "h"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // `sandbox add` of an existing namespace does not make it knit's.
    w.ok(&["sandbox", "add", &foreign]);
    w.fail(&["sandbox", "rm", &foreign]);
    assert!(std::path::Path::new(&format!("/run/netns/{foreign}")).exists());
}

#[test]
fn item7_a_lost_store_is_an_error_not_a_fresh_start() {
    let mut w = World::new();
    w.ok(&["network", "create", "t", "--subnet", "10.70.0.0/24"]);
    let s = w.sandbox("s");
    w.ok(&["attach", "t", &s]);
    // The store is lost between commands: a WAL fold the attach may have started in the
    // background finishes first.
    let pattern = format!("{} store-maintenance", w.state.display());
    eventually("the store's background fold to end", || {
        !sh(&["pgrep", "-f", &pattern]).status.success()
    });
    std::fs::write(w.state.join("knit.db"), b"").unwrap();
    let _ = std::fs::remove_file(w.state.join("knit.db-wal"));
    let _ = std::fs::remove_file(w.state.join("knit.db-shm"));
    let err = w.fail(&["network", "ls"]);
    assert!(err.contains("restore knit.db"), "{err}");
    let err = w.fail(&["network", "create", "t2", "--subnet", "10.71.0.0/24"]);
    assert!(err.contains("will not start over"), "{err}");
    assert!(link_exists(&w, "knbr1"), "the live bridge must survive");
    assert!(ping(&s, "10.70.0.1"));
}

#[test]
fn item7_detach_with_a_full_disk_changes_nothing() {
    let mut w = World::new();
    let tmpfs = std::env::temp_dir().join(format!("{}-small", w.prefix));
    std::fs::create_dir_all(&tmpfs).unwrap();
    sh_ok(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=2m",
        "tmpfs",
        tmpfs.to_str().unwrap(),
    ]);
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = sh(&["umount", "-l", self.0.to_str().unwrap()]);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _u = Unmount(tmpfs.clone());
    w.state = tmpfs.join("state");
    w.ok(&["network", "create", "d", "--subnet", "10.72.0.0/24"]);
    let s = w.sandbox("s");
    w.ok(&["attach", "d", &s]);
    let filler = tmpfs.join("filler");
    let _ = sh(&[
        "dd",
        "if=/dev/zero",
        &format!("of={}", filler.display()),
        "bs=64k",
        "count=100",
    ]);
    let o = w.run(&["detach", "d", &s]);
    if !o.status.success() {
        // Refused before any change: the sandbox still works, the record is intact.
        assert!(ping(&s, "10.72.0.1"), "detach failed but removed the link");
        std::fs::remove_file(&filler).unwrap();
        let v = w.json(&["network", "inspect", "d"]);
        assert_eq!(v["attachments"].as_array().unwrap().len(), 1);
        w.ok(&["detach", "d", &s]);
    }
    std::fs::remove_file(&filler).ok();
    assert!(
        w.json(&["network", "inspect", "d"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(!w.knit_links().iter().any(|l| l.starts_with("kv")));
    w.state = std::env::temp_dir().join(format!("{}-state", w.prefix));
}

#[test]
fn item7_a_read_only_state_dir_still_lists() {
    let w = World::new();
    w.ok(&["network", "create", "ro", "--subnet", "10.73.0.0/24"]);
    let dir = w.state.to_str().unwrap().to_string();
    sh_ok(&["mount", "--bind", &dir, &dir]);
    sh_ok(&["mount", "-o", "remount,bind,ro", &dir]);
    let listed = w.run(&["network", "ls"]);
    let _ = sh(&["umount", "-l", &dir]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("ro"));
}

#[test]
fn item8_the_first_network_keeps_the_default_route() {
    let mut w = World::new();
    w.ok(&["network", "create", "a", "--subnet", "10.74.0.0/24"]);
    w.ok(&["network", "create", "b", "--subnet", "10.75.0.0/24"]);
    let s = w.sandbox("s");
    w.ok(&["attach", "a", &s]);
    w.ok(&["attach", "b", &s]);
    let route = |_: &World| {
        String::from_utf8_lossy(&sh(&["ip", "-n", &s, "route", "show", "default"]).stdout)
            .trim()
            .to_string()
    };
    assert!(route(&w).contains("via 10.74.0.1"), "{}", route(&w));
    w.ok(&["detach", "b", &s]);
    assert!(route(&w).contains("via 10.74.0.1"), "{}", route(&w));
    w.ok(&["attach", "b", &s]);
    w.ok(&["detach", "a", &s]);
    assert!(
        route(&w).contains("via 10.75.0.1"),
        "detaching the default's network must hand it to the next: {}",
        route(&w)
    );
    // Re-attaching with other flags is refused; the same flags are fine.
    let err = w.fail(&["attach", "b", &s, "--publish", "8080:80"]);
    assert!(
        err.contains("--publish") && err.contains("detach it first"),
        "{err}"
    );
    let err = w.fail(&["attach", "b", &s, "--label", "app=x"]);
    assert!(err.contains("--label"), "{err}");
    assert!(w.ok(&["attach", "b", &s]).contains("already attached"));
}

#[test]
fn item10_add_restores_a_deleted_or_flushed_table() {
    let w = World::new().with_outside();
    let mut w = w;
    let ns: Vec<String> = (0..2).map(|i| format!("{}-r{i}", w.prefix)).collect();
    for n in &ns {
        sh_ok(&["ip", "netns", "add", n]);
        w.track(n);
    }
    let mut c1 = Conflist::new("rl1", "1.0.0", knit_plugins("cni-rl1", "10.76.0.0/24"));
    let mut c2 = Conflist::new("rl2", "1.0.0", knit_plugins("cni-rl2", "10.77.0.0/24"));
    let pm =
        |p: u16| json!({"portMappings": [{"hostPort": p, "containerPort": 80, "protocol": "tcp"}]});
    let p0 = format!("/run/netns/{}", ns[0]);
    let p1 = format!("/run/netns/{}", ns[1]);
    c1.add(&w, "c1", &p0, "eth0", &pm(8081)).expect("ADD 1");
    c2.add(&w, "c2", &p1, "eth0", &pm(8082)).expect("ADD 2");
    let _s0 = tcp_server(&ns[0], "0.0.0.0:80", "one");
    let _s1 = tcp_server(&ns[1], "0.0.0.0:80", "two");
    let get = |p: u16| tcp_get(w.outside(), &format!("{NODE_UPLINK4}:{p}"));
    assert!(get(8081).is_ok() && get(8082).is_ok());
    for damage in [
        vec!["delete", "table", "inet", "knit"],
        vec!["flush", "table", "inet", "knit"],
    ] {
        let mut a = vec!["ip", "netns", "exec", &w.node, "nft"];
        a.extend(damage.iter());
        sh_ok(&a);
        // podman network reload: DEL then ADD of a container.
        c1.del(&w, "c1", &p0, "eth0", &pm(8081)).expect("DEL");
        c1.add(&w, "c1", &p0, "eth0", &pm(8081))
            .unwrap_or_else(|o| panic!("ADD after {damage:?}: {}", o.stdout));
        // Both networks' ports work again, not only the re-added container's.
        assert!(get(8081).is_ok(), "after {damage:?}");
        assert!(get(8082).is_ok(), "other network after {damage:?}");
    }
    assert_store_and_kernel_agree(&w);
}

#[test]
fn item11_default_ifname_skips_interfaces_already_in_the_sandbox() {
    let mut w = World::new();
    w.ok(&["network", "create", "i", "--subnet", "10.78.0.0/24"]);
    let s = w.sandbox("s");
    sh_ok(&[
        "ip", "-n", &s, "link", "add", "eth0", "type", "veth", "peer", "name", "other",
    ]);
    let out = w.ok(&["attach", "i", &s]);
    assert!(out.contains(": eth1 "), "{out}");
}

#[test]
fn item11_a_create_killed_with_9_can_be_run_again() {
    let w = World::new();
    let mut left_unready = false;
    for i in 0..40u64 {
        let name = format!("k{i}");
        let mut child = w
            .cmd(&["network", "create", &name, "--subnet", "10.79.0.0/24"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(500 + i * 250));
        let _ = child.kill();
        let _ = child.wait();
        let nets = w.json(&["network", "ls"]);
        let unready = nets
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == name.as_str() && n["ready"] == false);
        if unready {
            left_unready = true;
            w.ok(&["network", "create", &name, "--subnet", "10.79.0.0/24"]);
            let nets = w.json(&["network", "ls"]);
            assert!(nets.as_array().unwrap().iter().all(|n| n["ready"] == true));
        }
        if nets_exist(&w, &name) {
            w.ok(&["network", "rm", &name]);
        }
    }
    assert!(
        left_unready,
        "no kill landed mid-creation (timing): nothing checked"
    );
}

fn nets_exist(w: &World, name: &str) -> bool {
    w.json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == name)
}

#[test]
fn item11_detach_in_the_wrong_namespace_keeps_the_record() {
    let mut w = World::new();
    w.ok(&["network", "create", "wn", "--subnet", "10.80.0.0/24"]);
    let s = w.sandbox("s");
    w.ok(&["attach", "wn", &s]);
    let other = format!("{}-othernode", w.prefix);
    sh_ok(&["ip", "netns", "add", &other]);
    w.track(&other);
    let o = command_in(&other, KNIT)
        .args(["--state-dir", w.state.to_str().unwrap(), "detach", "wn", &s])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not in this network namespace"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        w.json(&["network", "inspect", "wn"])["attachments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(ping(&s, "10.80.0.1"));
    w.ok(&["detach", "wn", &s]);
}

#[test]
fn item2_del_and_gc_delete_only_the_veth_knit_created() {
    let mut w = World::new();
    let ns: Vec<String> = (0..2).map(|i| format!("{}-g{i}", w.prefix)).collect();
    for n in &ns {
        sh_ok(&["ip", "netns", "add", n]);
        w.track(n);
    }
    let mut c = Conflist::new("own", "1.0.0", knit_plugins("cni-own0", "10.81.0.0/24"));
    let paths: Vec<String> = ns.iter().map(|n| format!("/run/netns/{n}")).collect();
    for (i, p) in paths.iter().enumerate() {
        c.add(&w, &format!("c{i}"), p, "eth0", &json!({}))
            .expect("ADD");
    }
    let atts = w.json(&["network", "inspect", "own"])["attachments"].clone();
    let hosts: Vec<String> = atts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["host_ifname"].as_str().unwrap().to_string())
        .collect();
    // Someone replaces both host veths with links of their own under the same names.
    for h in &hosts {
        sh_ok(&["ip", "-n", &w.node, "link", "del", h]);
        sh_ok(&["ip", "-n", &w.node, "link", "add", h, "type", "bridge"]);
    }
    // DEL of one, GC of the other (not in the valid list).
    c.del(&w, "c0", &paths[0], "eth0", &json!({})).expect("DEL");
    let gc = json!({
        "cniVersion": "1.1.0", "name": "own", "type": "knit", "bridge": "cni-own0",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.81.0.0/24"}]]},
        "cni.dev/valid-attachments": []
    });
    let o = w.cni_exec("knit", &gc, &[("CNI_COMMAND", "GC"), ("CNI_PATH", REF_DIR)]);
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(
        w.json(&["network", "inspect", "own"])["attachments"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for h in &hosts {
        assert!(
            link_exists(&w, h),
            "DEL/GC deleted {h}, which knit did not create"
        );
    }
}

#[test]
fn item10_check_restores_a_flushed_table() {
    let mut w = World::new().with_outside();
    let n = format!("{}-ck", w.prefix);
    sh_ok(&["ip", "netns", "add", &n]);
    w.track(&n);
    let p = format!("/run/netns/{n}");
    let pm = json!({"portMappings": [{"hostPort": 8090, "containerPort": 80, "protocol": "tcp"}]});
    let mut c = Conflist::new("ck", "1.0.0", knit_plugins("cni-ck0", "10.82.0.0/24"));
    c.add(&w, "ck", &p, "eth0", &pm).expect("ADD");
    let _s = tcp_server(&n, "0.0.0.0:80", "ck");
    sh_ok(&[
        "ip", "netns", "exec", &w.node, "nft", "flush", "table", "inet", "knit",
    ]);
    assert!(tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8090")).is_err());
    c.check(&w, "ck", &p, "eth0", &pm)
        .unwrap_or_else(|o| panic!("CHECK: {}", o.stdout));
    assert_eq!(
        tcp_get(w.outside(), &format!("{NODE_UPLINK4}:8090")).unwrap(),
        format!("ck saw {OUTSIDE4}")
    );
}

#[test]
fn item11_refused_connections_do_not_keep_the_keeper_alive() {
    let mut w = World::new();
    w.ok(&["network", "create", "kp", "--subnet", "10.83.0.0/24"]);
    let s = w.sandbox("s");
    w.ok(&["attach", "kp", &s, "-p", "18090:80"]);
    eventually("a keeper", || keepers_in(&w.node).len() == 1);
    // A non-root process knocks every 100 ms for 5 s; the keeper refuses it and must still
    // leave 2 s after its last real use.
    let node = w.node.clone();
    let knocker = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{node}")).unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        assert_eq!(
            unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) },
            0
        );
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(b"knit-nft-keeper").unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < until {
            let _ = std::os::unix::net::UnixStream::connect_addr(&addr);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(3500));
    let left = keepers_in(&w.node);
    knocker.join().unwrap();
    assert!(
        left.is_empty(),
        "the keeper stayed alive for refused peers: {left:?}"
    );
}

fn demo_leftovers(pid: u32) -> Vec<String> {
    let tag = format!("knitdemo{pid}");
    let mut left = vec![];
    for dir in ["/run/netns", "/etc/netns"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            left.extend(
                rd.flatten()
                    .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
                    .filter(|p| p.contains(&tag)),
            );
        }
    }
    left
}

#[test]
fn item11_an_interrupted_demo_or_a_closed_stdout_leaves_nothing() {
    // Ctrl-C part-way.
    let child = std::process::Command::new(KNIT)
        .arg("demo")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let pid = child.id();
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(demo_leftovers(pid).is_empty(), "{:?}", demo_leftovers(pid));
    // `knit demo | head -1`: the reader goes away after one line.
    let mut child = std::process::Command::new(KNIT)
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
    }
    let pid = child.id();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(demo_leftovers(pid).is_empty(), "{:?}", demo_leftovers(pid));
}

#[test]
fn item11_a_closed_stdout_after_success_is_not_a_panic() {
    let mut w = World::new();
    w.ok(&["network", "create", "cs", "--subnet", "10.84.0.0/24"]);
    let s = w.sandbox("s");
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    use std::os::fd::FromRawFd;
    let write_end = unsafe { std::fs::File::from_raw_fd(fds[1]) };
    let o = w
        .cmd(&["attach", "cs", &s])
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("panicked") && o.status.code() != Some(101),
        "{err}"
    );
    assert_eq!(
        w.json(&["network", "inspect", "cs"])["attachments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn item11_an_empty_knit_state_dir_means_the_default() {
    let w = World::new();
    // Inside a private mount namespace with a tmpfs over /var/lib, so the default state
    // directory is a throwaway one.
    let o = command_in(&w.node, "unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &format!("mount -t tmpfs none /var/lib && KNIT_STATE_DIR= exec {KNIT} network ls"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("NAME"));
}

/// Found by the soak test: `policy default NET allow` on a network that never had a
/// policy removed the jump to a chain that did not exist yet, in the same transaction.
#[test]
fn policy_default_allow_on_a_network_without_policy_succeeds() {
    let w = World::new();
    w.ok(&["network", "create", "pa", "--subnet", "10.85.0.0/24"]);
    w.ok(&[
        "network",
        "create",
        "pp",
        "--subnet",
        "10.86.0.0/24",
        "--driver",
        "ptp",
    ]);
    w.ok(&["policy", "default", "pa", "allow"]);
    w.ok(&["policy", "default", "pp", "allow"]);
    assert_store_and_kernel_agree(&w);
}
