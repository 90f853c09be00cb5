//! nf_tables sockets that outlive the knit commands using them.
//!
//! Releasing an nf_tables netlink socket makes the kernel take the nf_tables commit mutex
//! and flush its pending destroy work (which waits for an RCU grace period). One release is
//! harmless; in a storm of knit commands (a controller adding and removing services back
//! to back) every command's release lands while others commit, and `perf record -e
//! sched:sched_switch` shows the commands waiting in `nft_rcv_nl_event` and in
//! `nf_tables_valid_genid` for that mutex: one-service changes went from 3 ms to 30 ms.
//!
//! So a keeper process per network namespace (`knit nft-keeper`, started by the first
//! command that finds none) holds a few nf_tables sockets and lends one to each command
//! over an abstract unix socket (SCM_RIGHTS). A command's close then only drops its
//! descriptor: the socket lives on in the keeper, and the kernel releases it once, when the
//! keeper exits after a quiet spell. A socket comes back to the pool when the borrower's
//! connection closes (at the latest when the borrower exits, also on kill -9), and is
//! drained of anything that borrower left unread before it is lent again.
//!
//! Only root with CAP_NET_ADMIN gets a socket, and a command only takes a socket from a
//! keeper with the same rights, and only a real nf_tables socket: any user may bind an
//! abstract name, and a squatter must not be able to swallow knit's firewall changes. A
//! lent socket is made blocking with a receive timeout, whatever a previous borrower set.
//! Connecting never blocks. Abstract unix names are per network namespace, so a command
//! only ever reaches the keeper of its own namespace. Without a
//! keeper (or when it does not answer within 100 ms) a command opens its own socket, as
//! before.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::{Duration, Instant};

const NAME: &[u8] = b"knit-nft-keeper";
/// The keeper exits when no socket has been lent for this long.
const IDLE: Duration = Duration::from_secs(2);
/// Sockets the keeper holds at most; beyond that a command opens its own.
const MAX_SOCKETS: usize = 32;
const REPLY_TIMEOUT: Duration = Duration::from_millis(100);
/// A lent socket's receive timeout: the kernel answers a batch before `send` returns, so
/// this only ends a wait for replies that someone else took.
const LENT_RECV_TIMEOUT: Duration = Duration::from_secs(30);
/// CAP_NET_ADMIN's bit in a capability set.
const CAP_NET_ADMIN: u32 = 12;

/// A socket lent by the keeper: the nf_tables socket and the connection whose closing
/// gives it back. Drop order matters: the socket descriptor goes first, so the keeper
/// never lends a socket this process could still use.
pub struct Loan {
    pub socket: OwnedFd,
    pub connection: UnixStream,
}

/// Borrows a socket from this namespace's keeper; None without a keeper, or when the
/// keeper has none to spare. `spawn_if_absent` starts a keeper for the commands after
/// this one.
pub fn borrow(spawn_if_absent: bool) -> Option<Loan> {
    let conn = match connect() {
        Ok(c) => c,
        Err(e) => {
            // SAFETY: geteuid has no preconditions. Only root starts a keeper: one run by
            // anyone else would hold the name and never be trusted.
            let root = unsafe { libc::geteuid() } == 0;
            if spawn_if_absent && root && e.kind() == io::ErrorKind::ConnectionRefused {
                spawn_keeper();
            }
            return None;
        }
    };
    // Abstract names can be bound by anyone in the namespace: only a keeper with root's
    // network rights is trusted, and only with a real nf_tables socket. Anything else (a
    // squatter handing out a socket it reads itself) is ignored, and this command opens
    // its own socket.
    if !peer_is_net_admin(conn.as_raw_fd()) {
        return None;
    }
    conn.set_read_timeout(Some(REPLY_TIMEOUT)).ok()?;
    let socket = recv_fd(conn.as_raw_fd())?;
    if !is_netfilter_socket(&socket) {
        return None;
    }
    // Whatever a previous borrower set, this one blocks, with a bound on the wait.
    let s = socket2::SockRef::from(&socket);
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(LENT_RECV_TIMEOUT)).ok()?;
    Some(Loan {
        socket,
        connection: conn,
    })
}

/// For a long-running process (the daemon): keeps one loan for as long as the process
/// runs, so this namespace's keeper never goes idle and exits. Without it, the first
/// firewall change after a quiet spell of 2 s waits while a keeper is started (a fork and
/// exec), and a hundred daemons on one machine all start theirs at the same moment when a
/// cluster event reaches them. Call it now and then: a keeper that went away (killed) is
/// replaced and borrowed from again on a later call.
pub fn hold() {
    static HELD: std::sync::Mutex<Option<Loan>> = std::sync::Mutex::new(None);
    let Ok(mut held) = HELD.lock() else {
        return;
    };
    if held
        .as_ref()
        .is_some_and(|l| connection_open(&l.connection))
    {
        return;
    }
    *held = borrow(true);
}

/// Whether the keeper still holds the other end: it never writes to a borrower after the
/// loan, so anything readable (or a hang-up) means it closed.
fn connection_open(conn: &UnixStream) -> bool {
    let mut p = libc::pollfd {
        fd: conn.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll over one pollfd we own, without waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 0
}

/// Connects to the keeper without ever blocking: a listener that does not accept (a full
/// backlog) must not hang the command.
fn connect() -> io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let mut abstract_path = vec![0u8];
    abstract_path.extend_from_slice(NAME);
    let addr = socket2::SockAddr::unix(std::ffi::OsStr::from_bytes(&abstract_path))?;
    let s = socket2::Socket::new(
        socket2::Domain::UNIX,
        socket2::Type::STREAM.nonblocking(),
        None,
    )?;
    s.connect(&addr)?; // EAGAIN: backlog full; ECONNREFUSED: no keeper
    s.set_nonblocking(false)?;
    Ok(UnixStream::from(OwnedFd::from(s)))
}

/// Starts `knit nft-keeper` detached.
fn spawn_keeper() {
    crate::deferred::spawn_self(&["nft-keeper"]);
}

/// A one-byte message with room for one SCM_RIGHTS descriptor, for sendmsg and recvmsg.
/// The returned header points into `byte`, `iov` and `control`.
fn fd_message(byte: &mut [u8; 1], iov: &mut libc::iovec, control: &mut [u64; 4]) -> libc::msghdr {
    *iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; every field used is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control);
    msg
}

/// One byte of payload with the descriptor in SCM_RIGHTS (how the keeper lends; public so
/// that tests can play an untrusted keeper).
pub fn send_fd(conn: RawFd, fd: RawFd) -> io::Result<()> {
    let (mut byte, mut control) = ([1u8], [0u64; 4]);
    let mut iov = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut msg = fd_message(&mut byte, &mut iov, &mut control);
    // SAFETY: the header points at locals that outlive the sendmsg call; CMSG_* stay
    // inside `control`, which is larger than CMSG_SPACE(sizeof(int)).
    unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(conn, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn recv_fd(conn: RawFd) -> Option<OwnedFd> {
    let (mut byte, mut control) = ([0u8], [0u64; 4]);
    let mut iov = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut msg = fd_message(&mut byte, &mut iov, &mut control);
    // SAFETY: as in send_fd; the kernel writes at most msg_controllen bytes of control
    // data, and every received descriptor is owned by this process from here on (the
    // first is returned, any others are closed).
    unsafe {
        if libc::recvmsg(conn, &mut msg, libc::MSG_CMSG_CLOEXEC) <= 0 {
            return None;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return None;
        }
        let data = (*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize;
        let fds: Vec<OwnedFd> = (0..data / std::mem::size_of::<RawFd>())
            .map(|i| {
                let p = libc::CMSG_DATA(cmsg).cast::<RawFd>().add(i);
                OwnedFd::from_raw_fd(std::ptr::read_unaligned(p))
            })
            .collect();
        if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() != 1 {
            return None; // all of `fds` close here
        }
        fds.into_iter().next()
    }
}

/// Whether the process at the other end of `conn` is root with CAP_NET_ADMIN (uid 0 alone
/// may lack it: a root process with dropped capabilities sharing the namespace). The
/// kernel recorded the peer's uid and pid at connect (or listen) time.
fn peer_is_net_admin(conn: RawFd) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that large.
    let r = unsafe {
        libc::getsockopt(
            conn,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    r == 0 && cred.uid == 0 && cred.pid > 0 && has_net_admin(cred.pid)
}

/// CAP_NET_ADMIN in `pid`'s effective set, by capget(2) (one system call; reading
/// /proc/PID/status costs several times more on every borrow).
fn has_net_admin(pid: libc::pid_t) -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522; // _LINUX_CAPABILITY_VERSION_3: two Data words
    let mut header = Header {
        version: VERSION_3,
        pid,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget reads the header and writes two Data structs for version 3, which
    // is exactly what `data` holds.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut Header,
            data.as_mut_ptr(),
        )
    };
    r == 0 && data[0].effective & (1 << CAP_NET_ADMIN) != 0
}

fn is_netfilter_socket(fd: &OwnedFd) -> bool {
    let s = socket2::SockRef::from(fd);
    s.domain().ok() == Some(socket2::Domain::from(libc::AF_NETLINK))
        && s.protocol().ok().flatten()
            == Some(socket2::Protocol::from(
                netlink_sys::protocols::NETLINK_NETFILTER as libc::c_int,
            ))
}

/// Reads and discards whatever a previous borrower left on the socket (acks it did not
/// wait for, a pending error), so the next borrower starts clean.
fn drain(sock: RawFd) {
    let mut buf = [0u8; 8192];
    for _ in 0..10_000 {
        // SAFETY: recv into a local buffer of the stated length.
        let n = unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // A pending socket error (ENOBUFS after an overrun) is reported once; anything
            // else, EAGAIN included, means nothing is left.
            if e.raw_os_error() == Some(libc::ENOBUFS) {
                continue;
            }
            return;
        }
    }
}

struct Lent {
    connection: UnixStream,
    socket: usize,
}

/// `knit nft-keeper`: serves loans until idle for `IDLE`, then exits (and only then do the
/// kernel's socket releases happen, all at once in a quiet moment).
pub fn run_keeper() -> crate::error::Result<i32> {
    let addr = SocketAddr::from_abstract_name(NAME)
        .map_err(|e| crate::error::Error::io("nft keeper address", e))?;
    let listener = match UnixListener::bind_addr(&addr) {
        Ok(l) => l,
        // Another keeper won the race: it serves this namespace.
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(0),
        Err(e) => return Err(crate::error::Error::io("nft keeper bind", e)),
    };
    let mut sockets: Vec<OwnedFd> = vec![];
    let mut free: Vec<usize> = vec![];
    let mut lent: Vec<Lent> = vec![];
    let mut last_use = Instant::now();
    loop {
        let mut fds: Vec<libc::pollfd> = std::iter::once(listener.as_raw_fd())
            .chain(lent.iter().map(|l| l.connection.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let wait = if lent.is_empty() {
            match IDLE.checked_sub(last_use.elapsed()) {
                Some(left) => left.as_millis().max(1) as libc::c_int,
                None => return Ok(0),
            }
        } else {
            -1
        };
        // SAFETY: poll over a vector of pollfd we own, with its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(crate::error::Error::io("nft keeper poll", e));
        }
        // Returned loans: any event on a borrower's connection is its end (borrowers
        // never write), so the socket goes back to the pool.
        for i in (0..lent.len()).rev() {
            if fds[i + 1].revents != 0 {
                let l = lent.swap_remove(i);
                drain(sockets[l.socket].as_raw_fd());
                free.push(l.socket);
                last_use = Instant::now();
            }
        }
        if fds[0].revents & libc::POLLIN != 0
            && let Ok((conn, _)) = listener.accept()
        {
            if !peer_is_net_admin(conn.as_raw_fd()) {
                // Dropping the connection: the borrower opens its own socket. A refused
                // peer does not keep the keeper alive (it would never go idle).
                continue;
            }
            last_use = Instant::now();
            let index = match free.pop() {
                Some(i) => Some(i),
                None if sockets.len() < MAX_SOCKETS => {
                    crate::nft::wire::open_netfilter().ok().map(|s| {
                        // SAFETY: into_raw_fd hands over sole ownership of the descriptor.
                        sockets.push(unsafe { OwnedFd::from_raw_fd(s.into_raw_fd()) });
                        sockets.len() - 1
                    })
                }
                None => None,
            };
            let Some(index) = index else {
                continue;
            };
            if send_fd(conn.as_raw_fd(), sockets[index].as_raw_fd()).is_ok() {
                lent.push(Lent {
                    connection: conn,
                    socket: index,
                });
            } else {
                free.push(index);
            }
        }
    }
}
