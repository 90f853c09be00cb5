//! What operators expect of the command line: Docker's words (connect, disconnect,
//! prune, -q, --filter, --format), JSON from every command that changes something, and
//! exit statuses that tell "not found" from "in use" from a kernel failure.

mod common;
use common::*;

fn code(w: &World, args: &[&str]) -> i32 {
    w.run(args).status.code().unwrap_or(-1)
}

#[test]
fn listing_options_aliases_prune_and_exit_codes() {
    let mut w = World::new();
    w.ok(&["network", "create", "b1", "--subnet", "10.52.0.0/24"]);
    w.ok(&[
        "network",
        "create",
        "p1",
        "--driver",
        "ptp",
        "--subnet",
        "10.53.0.0/24",
    ]);
    w.ok(&["network", "create", "idle", "--subnet", "10.54.0.0/24"]);
    let a = w.sandbox("a");
    w.ok(&["network", "connect", "b1", &a]);
    w.ok(&["network", "connect", "p1", &a]);

    assert_eq!(
        w.ok(&["network", "ls", "-q"]).lines().collect::<Vec<_>>(),
        ["b1", "p1", "idle"]
    );
    assert_eq!(
        w.ok(&["network", "ls", "-q", "--filter", "driver=ptp"])
            .trim(),
        "p1"
    );
    assert_eq!(
        w.ok(&[
            "network",
            "ls",
            "--filter",
            "attached=0",
            "--format",
            "{{.Name}}/{{.Subnets}}"
        ])
        .trim(),
        "idle/10.54.0.0/24"
    );
    assert!(
        w.fail(&["network", "ls", "--filter", "colour=red"])
            .contains("colour")
    );
    // The same options on the other listings.
    assert_eq!(w.ok(&["sandbox", "ls", "-q"]).trim(), a);
    w.ok(&["service", "create", "s1", "--vip", "10.96.0.52:80"]);
    w.ok(&["service", "create", "s2", "--vip", "10.96.0.53:80"]);
    assert_eq!(
        w.ok(&[
            "service",
            "ls",
            "--filter",
            "name=s2",
            "--format",
            "{{.Name}}"
        ])
        .trim(),
        "s2"
    );
    w.ok(&["policy", "allow", "b1", "--from", "app=x", "--to", "app=y"]);
    w.ok(&[
        "policy", "allow", "b1", "--from", "app=x", "--to", "app=z", "--port", "80",
    ]);
    let ids = w.ok(&["policy", "ls", "-q"]);
    assert_eq!(ids.lines().count(), 2, "{ids}");
    assert_eq!(
        w.ok(&["policy", "ls", "-q", "--filter", "port=80"])
            .lines()
            .count(),
        1
    );
    for id in ids.lines() {
        w.ok(&["policy", "rm", id]);
    }
    w.ok(&["service", "rm", "s1"]);
    w.ok(&["service", "rm", "s2"]);

    // The ptp attachment shows the /32 the sandbox really has.
    let v = w.json(&["network", "inspect", "p1"]);
    assert!(
        v["attachments"][0]["ips"][0]
            .as_str()
            .unwrap()
            .ends_with("/32"),
        "{v}"
    );
    let v = w.json(&["inspect", &a]);
    let addrs = v["inside"]["addresses"].as_array().unwrap();
    assert!(
        addrs
            .iter()
            .any(|x| x["dev"] == "eth1" && x["address"].as_str().unwrap().ends_with("/32"))
    );

    // Exit statuses: 3 not found, 4 in use, 1 bad input, 2 usage.
    assert_eq!(code(&w, &["network", "rm", "nope"]), 3);
    assert_eq!(code(&w, &["network", "rm", "b1"]), 4);
    assert_eq!(
        code(&w, &["network", "create", "x", "--subnet", "10.0.0.0/33"]),
        1
    );
    assert_eq!(code(&w, &["network", "frobnicate"]), 2);

    // prune removes only what nothing uses; disconnect is detach; rm takes several and
    // says what it removed in JSON.
    let v = w.json(&["network", "prune"]);
    assert_eq!(v["removed"], serde_json::json!(["idle"]));
    w.ok(&["network", "disconnect", "p1", &a]);
    w.ok(&["network", "disconnect", "b1", &a]);
    let v = w.json(&["network", "rm", "b1", "p1"]);
    assert_eq!(v["removed"], serde_json::json!(["b1", "p1"]));
    let v = w.json(&["sandbox", "rm", &a]);
    assert_eq!(v["deleted"], true);
}

/// Upgrades migrate the store; a store from a newer knit is refused, not rewritten.
#[test]
fn a_store_from_a_newer_knit_is_refused() {
    let w = World::new();
    w.ok(&["network", "create", "n", "--subnet", "10.55.0.0/24"]);
    let db = w.state.join("knit.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let o = w.run(&["network", "ls"]);
    assert_eq!(o.status.code(), Some(4));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("schema version 99") && err.contains("newer"),
        "{err}"
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 99, "the store is left as it was");
}
