//! libnetwork's remote IPAM driver (`docker network create --ipam-driver knit`): pools
//! and addresses handed to Docker, recorded in knit's state directory (Docker never
//! replays them to a restarted plugin). A pool Docker asks for without a subnet is a free
//! /24 of 10.90.0.0/15 (a random unique-local /64 for IPv6) that no knit network and no
//! other pool uses; each such request gets a different one (Docker asks again when the
//! first overlaps a host route). The addresses then reach the network driver as the
//! endpoints' addresses, which knit's own IPAM checks again.

use super::state;
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::node::Node;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

const GATEWAY_REQUEST: &str = "com.docker.network.gateway";

/// A pool handed to Docker and the addresses taken from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pool {
    pub pool: IpNet,
    pub sub_pool: Option<IpNet>,
    pub taken: BTreeSet<IpAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPool {
    #[serde(default)]
    pool: String,
    #[serde(default)]
    sub_pool: String,
    #[serde(rename = "V6", default)]
    v6: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddressRequest {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    options: Option<std::collections::BTreeMap<String, String>>,
}

fn decode<T: for<'a> Deserialize<'a>>(call: &'static str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::invalid(call, "", format!("bad request: {e}")))
}

fn pools(dir: &Path) -> Result<Vec<Pool>> {
    Ok(state::all::<Pool>(dir, "pools")?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

pub fn request_pool(dir: &Path, body: &[u8]) -> Result<Value> {
    let req: RequestPool = decode("RequestPool", body)?;
    let _guard = Lock::take_file(dir, "docker-ipam.lock", true)?;
    let mut taken: Vec<IpNet> = pools(dir)?.into_iter().map(|p| p.pool).collect();
    if dir.join("knit.db").exists() {
        let node = Node::open(dir, false)?;
        taken.extend(
            node.store
                .networks()?
                .iter()
                .flat_map(|n| n.subnets.iter().map(|s| s.subnet)),
        );
    }
    let pool: IpNet = if req.pool.is_empty() {
        if !req.sub_pool.is_empty() {
            return Err(Error::invalid(
                "--ip-range",
                &req.sub_pool,
                "needs --subnet",
            ));
        }
        if req.v6 {
            crate::model::random_ula()
        } else {
            crate::model::free_subnet(&taken)?
        }
    } else {
        let p: IpNet = req
            .pool
            .parse()
            .map_err(|_| Error::invalid("--subnet", &req.pool, "expected a CIDR"))?;
        if p.trunc() != p {
            return Err(Error::invalid(
                "--subnet",
                &req.pool,
                format!("host bits set (the subnet is {})", p.trunc()),
            ));
        }
        if let Some(t) = taken.iter().find(|t| overlaps(t, &p)) {
            return Err(Error::invalid(
                "--subnet",
                &req.pool,
                format!("overlaps {t}, in use by knit"),
            ));
        }
        p
    };
    let sub_pool = if req.sub_pool.is_empty() {
        None
    } else {
        let s: IpNet = req
            .sub_pool
            .parse()
            .map_err(|_| Error::invalid("--ip-range", &req.sub_pool, "expected a CIDR"))?;
        if !pool.contains(&s.network()) || s.prefix_len() < pool.prefix_len() {
            return Err(Error::invalid(
                "--ip-range",
                &req.sub_pool,
                format!("is not inside {pool}"),
            ));
        }
        Some(s)
    };
    let id = hex(&crate::model::random_bytes::<12>());
    state::save(
        dir,
        "pools",
        &id,
        &Pool {
            pool,
            sub_pool,
            taken: BTreeSet::new(),
        },
    )?;
    Ok(json!({"PoolID": id, "Pool": pool.to_string(), "Data": {}}))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn release_pool(dir: &Path, body: &[u8]) -> Result<Value> {
    #[derive(Deserialize)]
    struct Req {
        #[serde(rename = "PoolID")]
        pool_id: String,
    }
    let req: Req = decode("ReleasePool", body)?;
    state::check_id("PoolID", &req.pool_id)?;
    let _guard = Lock::take_file(dir, "docker-ipam.lock", true)?;
    state::remove(dir, "pools", &req.pool_id)?;
    Ok(json!({}))
}

/// The first free host address of `range` inside `pool` (network and broadcast
/// addresses of IPv4 pools excluded).
fn next_free(pool: &IpNet, range: &IpNet, taken: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    range
        .hosts()
        .filter(|a| pool.contains(a))
        .filter(|a| !(pool.addr().is_ipv6() && *a == pool.network()))
        .take(1 << 20)
        .find(|a| !taken.contains(a))
}

pub fn request_address(dir: &Path, body: &[u8]) -> Result<Value> {
    let req: AddressRequest = decode("RequestAddress", body)?;
    state::check_id("PoolID", &req.pool_id)?;
    let _guard = Lock::take_file(dir, "docker-ipam.lock", true)?;
    let mut p: Pool = state::load(dir, "pools", &req.pool_id)?
        .ok_or_else(|| Error::not_found("address pool", &req.pool_id))?;
    let gateway = req
        .options
        .as_ref()
        .and_then(|o| o.get("RequestAddressType"))
        .is_some_and(|t| t == GATEWAY_REQUEST);
    let addr = if req.address.is_empty() {
        // The gateway is the pool's first host; containers come from the sub-pool if any.
        let range = if gateway {
            p.pool
        } else {
            p.sub_pool.unwrap_or(p.pool)
        };
        next_free(&p.pool, &range, &p.taken).ok_or_else(|| Error::Exhausted {
            network: format!("docker pool {}", p.pool),
            subnet: range.to_string(),
        })?
    } else {
        let a = crate::model::parse_ip("--ip", &req.address)?;
        crate::model::check_host_in("--ip", a, &p.pool)?;
        if p.taken.contains(&a) {
            return Err(Error::Conflict(format!(
                "address {a} is already in use in {}",
                p.pool
            )));
        }
        a
    };
    p.taken.insert(addr);
    state::save(dir, "pools", &req.pool_id, &p)?;
    Ok(json!({"Address": format!("{addr}/{}", p.pool.prefix_len()), "Data": {}}))
}

pub fn release_address(dir: &Path, body: &[u8]) -> Result<Value> {
    let req: AddressRequest = decode("ReleaseAddress", body)?;
    state::check_id("PoolID", &req.pool_id)?;
    let _guard = Lock::take_file(dir, "docker-ipam.lock", true)?;
    if let Some(mut p) = state::load::<Pool>(dir, "pools", &req.pool_id)? {
        if let Ok(a) = req
            .address
            .split('/')
            .next()
            .unwrap_or_default()
            .parse::<IpAddr>()
        {
            p.taken.remove(&a);
        }
        state::save(dir, "pools", &req.pool_id, &p)?;
    }
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "knit-ipam-unit-{}-{}",
            std::process::id(),
            hex(&crate::model::random_bytes::<4>())
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn call(f: fn(&Path, &[u8]) -> Result<Value>, d: &Path, v: Value) -> Result<Value> {
        f(d, v.to_string().as_bytes())
    }

    #[test]
    fn pools_gateways_addresses_and_release() {
        let d = dir();
        let p = call(request_pool, &d, json!({"AddressSpace": "knit-local", "Pool": "10.60.0.0/24", "SubPool": "10.60.0.128/25", "V6": false})).unwrap();
        let id = p["PoolID"].as_str().unwrap().to_string();
        assert_eq!(p["Pool"], "10.60.0.0/24");
        let gw = call(request_address, &d, json!({"PoolID": id, "Address": "", "Options": {"RequestAddressType": GATEWAY_REQUEST}})).unwrap();
        assert_eq!(gw["Address"], "10.60.0.1/24");
        let a = call(request_address, &d, json!({"PoolID": id, "Address": ""})).unwrap();
        assert_eq!(
            a["Address"], "10.60.0.129/24",
            "containers come from the sub-pool"
        );
        let e = call(
            request_address,
            &d,
            json!({"PoolID": id, "Address": "10.60.0.129"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        let e = call(
            request_address,
            &d,
            json!({"PoolID": id, "Address": "10.61.0.5"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("10.61.0.5"), "{e}");
        call(
            release_address,
            &d,
            json!({"PoolID": id, "Address": "10.60.0.129"}),
        )
        .unwrap();
        let a = call(
            request_address,
            &d,
            json!({"PoolID": id, "Address": "10.60.0.129"}),
        )
        .unwrap();
        assert_eq!(a["Address"], "10.60.0.129/24");
        // An overlapping pool is refused; pools without a subnet differ each time.
        let e = call(request_pool, &d, json!({"Pool": "10.60.0.0/16"})).unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
        let a = call(request_pool, &d, json!({"Pool": ""})).unwrap();
        let b = call(request_pool, &d, json!({"Pool": ""})).unwrap();
        assert_ne!(a["Pool"], b["Pool"]);
        let v6 = call(request_pool, &d, json!({"Pool": "", "V6": true})).unwrap();
        assert!(v6["Pool"].as_str().unwrap().starts_with("fd"));
        call(release_pool, &d, json!({"PoolID": id})).unwrap();
        assert!(call(request_address, &d, json!({"PoolID": id})).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
