//! Writes simulated cluster nodes into etcd for `bench/cluster_scale.sh`: node records and
//! one block each of cluster network `pods` (10.0.0.0/8, /24 blocks), under one long lease,
//! as knit's agents write them.
//!
//!   cluster_scale fill URL N        N nodes sim0..sim{N-1}
//!   cluster_scale one URL K         one more (simK); prints the wall-clock ms when sent
//!                                   and when etcd acknowledged the commit
//!   cluster_scale churn URL K N     nodes simK..sim{K+N-1} join one by one (one transaction
//!                                   each, 50 ms apart), then leave one by one; prints the
//!                                   wall-clock ms at the start and at the end

use etcd_client::{Client, DeleteOptions, PutOptions, Txn, TxnOp};
use std::time::{SystemTime, UNIX_EPOCH};

fn records(k: u32) -> Vec<(String, String)> {
    let name = format!("sim{k}");
    let underlay = format!("172.16.{}.{}/16", k / 250, k % 250 + 1);
    let block = format!("10.{}.{}.0", 1 + k / 256, k % 256);
    let mac = format!(
        "02:5c:{:02x}:{:02x}:{:02x}:01",
        (k >> 16) & 0xff,
        (k >> 8) & 0xff,
        k & 0xff
    );
    vec![
        (
            format!("/knit/nodes/{name}"),
            format!(
                r#"{{"name":"{name}","underlay":"{underlay}","backend":"vxlan","vni":1,"vxlan_port":4789,"mtu":1500}}"#
            ),
        ),
        (
            format!("/knit/blocks/pods/{block}_24"),
            format!(
                r#"{{"network":"pods","block":"{block}/24","node":"{name}","vtep_mac":"{mac}"}}"#
            ),
        ),
    ]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (cmd, url, n) = match &args[..] {
        [_, c, u, n, ..] => (c.as_str(), u.clone(), n.parse::<u32>().expect("a number")),
        _ => panic!("usage: cluster_scale fill|one URL N"),
    };
    let mut c = Client::connect([url], None).await.expect("connect to etcd");
    let lease = c.lease_grant(3600, None).await.expect("lease").id();
    let put = |kvs: Vec<(String, String)>| {
        let ops: Vec<TxnOp> = kvs
            .into_iter()
            .map(|(k, v)| TxnOp::put(k, v, Some(PutOptions::new().with_lease(lease))))
            .collect();
        Txn::new().and_then(ops)
    };
    match cmd {
        "fill" => {
            // 50 nodes (100 keys) per transaction: etcd's default limit is 128 operations.
            let all: Vec<u32> = (0..n).collect();
            for chunk in all.chunks(50) {
                let kvs = chunk.iter().flat_map(|k| records(*k)).collect();
                c.txn(put(kvs)).await.expect("txn");
            }
        }
        "one" => {
            let t0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            c.txn(put(records(n))).await.expect("txn");
            // When the write was sent and when etcd acknowledged it (committed: on its
            // disk), so the bench can tell etcd's commit from the fan-out after it.
            let t1 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            println!("{} {}", t0.as_millis(), t1.as_millis());
        }
        "churn" => {
            let count: u32 = args
                .get(4)
                .and_then(|c| c.parse().ok())
                .expect("churn URL K N");
            let start = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            for k in n..n + count {
                c.txn(put(records(k))).await.expect("txn");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            for k in n..n + count {
                let ops: Vec<TxnOp> = records(k)
                    .into_iter()
                    .map(|(key, _)| TxnOp::delete(key, None::<DeleteOptions>))
                    .collect();
                c.txn(Txn::new().and_then(ops)).await.expect("txn");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let end = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            println!("{} {}", start.as_millis(), end.as_millis());
        }
        _ => panic!("usage: cluster_scale fill|one|churn URL N [COUNT]"),
    }
}
