//! Clusters on etcd: what the cluster holds (`state`: nodes, cluster networks, blocks,
//! read from etcd's keys under `/knit/`), what a node must program for its peers
//! (`peers`: pure), how that is put into the kernel (`program`: VXLAN devices, FDB,
//! neighbours, routes), and the etcd client (`etcd`). The node drives them
//! (`node::cluster`, `node::agent`); a node that never joined never touches any of it.

pub mod blocks;
pub mod etcd;
pub mod keys;
pub mod peers;
pub mod program;
pub mod state;
pub mod status;
