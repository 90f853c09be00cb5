//! runtimeConfig keys as libcni runtimes really spell them (Go's decoder matches struct
//! fields ignoring case), brought to the spelling the typed decoding expects.

use serde_json::Value;

/// Renames `v`'s keys that equal one of `names` ignoring ASCII case to that name (an exact
/// match wins), as Go's encoding/json matches struct fields.
fn canon_keys(v: &mut Value, names: &[&str]) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    for name in names {
        if obj.contains_key(*name) {
            continue;
        }
        let found = obj.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned();
        if let Some(val) = found.and_then(|k| obj.remove(&k)) {
            obj.insert((*name).to_string(), val);
        }
    }
}

/// Capability structs as libcni runtimes really send them. go-cni (containerd) marshals Go
/// structs without JSON tags (`{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp",
/// "HostIP": ""}`, `{"Subnet": ..., "RangeStart": ""}`), and the reference plugins accept
/// that because Go's decoder ignores key case: so does knit, for every capability struct.
pub(super) fn normalise_runtime_config(rc: &mut Value) {
    canon_keys(
        rc,
        &[
            "portMappings",
            "ips",
            "mac",
            "ipRanges",
            "dns",
            "aliases",
            "bandwidth",
            "infinibandGUID",
            "deviceID",
            "cgroupPath",
        ],
    );
    if let Some(list) = rc.get_mut("portMappings").and_then(Value::as_array_mut) {
        for m in list {
            canon_keys(m, &["hostPort", "containerPort", "protocol", "hostIP"]);
        }
    }
    if let Some(sets) = rc.get_mut("ipRanges").and_then(Value::as_array_mut) {
        for set in sets.iter_mut().filter_map(Value::as_array_mut) {
            for r in set {
                canon_keys(r, &["subnet", "rangeStart", "rangeEnd", "gateway"]);
            }
        }
    }
    if let Some(d) = rc.get_mut("dns") {
        canon_keys(
            d,
            &[
                "servers",
                "searches",
                "options",
                "nameservers",
                "domain",
                "search",
            ],
        );
    }
    if let Some(b) = rc.get_mut("bandwidth") {
        canon_keys(
            b,
            &["ingressRate", "ingressBurst", "egressRate", "egressBurst"],
        );
    }
}
