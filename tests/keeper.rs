//! The nf_tables socket keeper: knit commands borrow sockets from it so that their exit
//! does not make the kernel flush destroy work under the commit mutex (see
//! src/nft_keeper.rs). Lending, return, draining, root only, idle exit, kill -9.

mod common;
use common::*;
use knit::nft::keeper::{Loan, borrow, send_fd};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn loan(ns: &str) -> Option<Loan> {
    in_ns(ns, || borrow(false))
}

fn inode(l: &Loan) -> u64 {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(l.socket.as_raw_fd(), &mut st) }, 0);
    st.st_ino
}

/// An nf_tables GETTABLE for a table that does not exist, with an ACK requested: the
/// kernel queues an ENOENT error on the socket.
fn leave_an_error_unread(l: &Loan) {
    let name = b"no-such-table\0";
    let attr_len = 4 + name.len();
    let padded = (attr_len + 3) & !3;
    let len = 16 + 4 + padded;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((10u16 << 8) | 4).to_ne_bytes()); // NFNL_SUBSYS_NFTABLES, GETTABLE
    m.extend_from_slice(&(0x1u16 | 0x4).to_ne_bytes()); // NLM_F_REQUEST | NLM_F_ACK
    m.extend_from_slice(&777u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[1, 0, 0, 0]); // NFPROTO_INET, version 0, res_id 0
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&1u16.to_ne_bytes()); // NFTA_TABLE_NAME
    m.extend_from_slice(name);
    m.resize(len, 0);
    let n = unsafe { libc::send(l.socket.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
    assert_eq!(n, m.len() as isize);
}

fn pending(l: &Loan) -> bool {
    let mut buf = [0u8; 4096];
    let n = unsafe {
        libc::recv(
            l.socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_PEEK,
        )
    };
    n > 0
}

/// Tries to borrow on a thread whose credentials are `uid` (the raw syscall changes
/// only the calling thread, and SO_PEERCRED records the connecting thread's).
fn borrows_as(ns: &str, uid: u32) -> bool {
    in_ns(ns, move || {
        if uid != 0 {
            let r = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
            assert_eq!(r, 0, "setresuid");
        }
        borrow(false).is_some()
    })
}

#[test]
fn keeper_lends_drains_serves_root_only_and_leaves_when_idle() {
    let mut w = World::new();
    assert!(keepers_in(&w.node).is_empty());
    w.ok(&["network", "create", "kp", "--subnet", "10.66.0.0/24"]);
    let a = w.sandbox("a");
    // The first element batch finds no keeper and starts one.
    w.ok(&["attach", "kp", &a, "-p", "18080:80"]);
    eventually("a keeper in the node namespace", || {
        keepers_in(&w.node).len() == 1
    });

    // Two loans at once are two different sockets; a returned one is lent again.
    let mut first = None;
    eventually("the keeper listens", || {
        first = loan(&w.node);
        first.is_some()
    });
    let l1 = first.take().unwrap();
    let l2 = loan(&w.node).expect("loan 2");
    let (i1, i2) = (inode(&l1), inode(&l2));
    assert_ne!(i1, i2);
    drop(l2);
    let mut again = None;
    eventually("the returned socket is lent again", || {
        let l = loan(&w.node).expect("loan");
        let same = inode(&l) == i2;
        again = Some(l);
        same
    });
    let l3 = again.take().unwrap();

    // A borrower that leaves an unread error behind: the next one starts clean.
    leave_an_error_unread(&l3);
    eventually("the error is queued", || pending(&l3));
    drop(l3);
    std::thread::sleep(Duration::from_millis(50));
    let l4 = loan(&w.node).expect("loan 4");
    assert_eq!(inode(&l4), i2, "the same socket");
    assert!(
        !pending(&l4),
        "the keeper drained what the last borrower left"
    );
    drop(l4);
    // knit's own commands borrow (and work with lent sockets).
    for args in [
        vec!["detach", "kp", a.as_str()],
        vec!["attach", "kp", a.as_str(), "-p", "18080:80"],
    ] {
        let o = w.cmd(&args).env("KNIT_TRACE", "1").output().unwrap();
        assert!(o.status.success(), "{args:?}");
        let trace = String::from_utf8_lossy(&o.stderr);
        assert!(
            trace.contains("nft: socket lent by keeper"),
            "{args:?}: {trace}"
        );
    }

    // Only root gets a socket, and only with CAP_NET_ADMIN.
    assert!(borrows_as(&w.node, 0), "root borrows");
    assert!(!borrows_as(&w.node, 65534), "nobody does not");
    let o = command_in(&w.node, "setpriv")
        .args(["--bounding-set=-net_admin", KNIT, "--state-dir"])
        .arg(&w.state)
        .args(["service", "create", "nocap", "--vip", "10.96.9.9:80"])
        .env("KNIT_TRACE", "1")
        .output()
        .unwrap();
    let trace = String::from_utf8_lossy(&o.stderr);
    assert!(trace.contains("store: service recorded"), "{trace}");
    assert!(
        !trace.contains("lent by keeper"),
        "root without CAP_NET_ADMIN: {trace}"
    );
    assert!(
        !o.status.success(),
        "and its own socket may not change nf_tables"
    );

    // Idle: the keeper goes (and with it its sockets), once nothing is lent.
    drop(l1);
    let t = Instant::now();
    while !keepers_in(&w.node).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(6), "keeper never left");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(loan(&w.node).is_none());
}

#[test]
fn a_killed_keeper_leaves_loans_working_and_is_replaced() {
    let mut w = World::new();
    w.ok(&["network", "create", "kk", "--subnet", "10.67.0.0/24"]);
    let a = w.sandbox("a");
    w.ok(&["attach", "kk", &a, "-p", "18081:80"]);
    eventually("a keeper", || keepers_in(&w.node).len() == 1);
    let mut held = None;
    eventually("the keeper listens", || {
        held = loan(&w.node);
        held.is_some()
    });
    let held = held.take().unwrap();
    for pid in keepers_in(&w.node) {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    eventually("keeper gone", || keepers_in(&w.node).is_empty());
    // The held socket is still a working nf_tables socket.
    leave_an_error_unread(&held);
    eventually("the kernel answers on the held socket", || pending(&held));
    drop(held);
    // Commands go on (their own sockets), and the next one starts a new keeper.
    w.ok(&["detach", "kk", &a]);
    w.ok(&["attach", "kk", &a, "-p", "18081:80"]);
    eventually("a new keeper", || keepers_in(&w.node).len() == 1);
    let ip = w.ip_of("kk", &a, 4);
    assert!(ping(&a, &ip));
}

/// Holds the keeper's name in `ns` as `uid` (a thread of this test process) and hands
/// every caller one end of a socketpair, which would swallow knit's batches (and never
/// acknowledge them) if commands trusted it. Returns how many callers it served.
fn with_squatter(ns: &str, uid: u32, during: impl FnOnce()) -> usize {
    let ns = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    let (stop, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let squatter = {
        let (stop, served) = (stop.clone(), served.clone());
        std::thread::spawn(move || {
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            if uid != 0 {
                let r = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
                assert_eq!(r, 0);
            }
            let addr = SocketAddr::from_abstract_name(b"knit-nft-keeper").unwrap();
            let l = UnixListener::bind_addr(&addr).expect("squat the name");
            l.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            let mut keep = vec![];
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (mine, theirs) = UnixStream::pair().unwrap();
                        let _ = send_fd(c.as_raw_fd(), theirs.as_raw_fd());
                        served.fetch_add(1, Ordering::Relaxed);
                        keep.push((c, mine, theirs));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    ready_rx.recv().unwrap();
    during();
    stop.store(true, Ordering::Relaxed);
    squatter.join().unwrap();
    served.load(Ordering::Relaxed)
}

/// Runs a knit command with a deadline; whether it succeeded in time.
fn succeeds_in_time(w: &World, args: &[&str]) -> bool {
    let mut child = w.cmd(args).spawn().unwrap();
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.success();
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_squatter_on_the_keeper_name_is_not_trusted() {
    // Any user may bind an abstract name: a command must neither trust a keeper that is
    // not root with CAP_NET_ADMIN nor take anything but an nf_tables socket from one.
    let mut w = World::new();
    w.ok(&["network", "create", "ks", "--subnet", "10.68.0.0/24"]);
    let a = w.sandbox("a");
    let b = w.sandbox("b");
    let mut ok = false;
    let served = with_squatter(&w.node, 65534, || {
        ok = succeeds_in_time(&w, &["attach", "ks", &a, "-p", "18082:80"]);
    });
    assert!(served >= 1, "the command asked the non-root squatter");
    assert!(ok, "attach must not trust a non-root squatter");
    // Root (this test) passes the rights check; the socketpair must still be refused.
    let served = with_squatter(&w.node, 0, || {
        ok = succeeds_in_time(&w, &["attach", "ks", &b, "-p", "18083:80"]);
    });
    assert!(served >= 1, "the command asked the root squatter");
    assert!(ok, "attach must not take a non-nf_tables socket");
    let table = w.nft_table();
    assert!(
        table.contains("18082") && table.contains("18083"),
        "{table}"
    );
}
