//! Batched UDP I/O for the DNS server: one recvmmsg takes every query waiting on the
//! socket (up to `BATCH`), one sendmmsg returns their answers. Under load this replaces two
//! system calls per query by two per batch; when idle it degrades to one datagram per call.

use socket2::SockAddr;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::Interest;
use tokio::net::UdpSocket;

pub const BATCH: usize = 32;
const BUF: usize = 4096;

/// Receive buffers and source addresses for one batch, reused across calls.
pub struct RecvBatch {
    bufs: Vec<[u8; BUF]>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    names: Vec<libc::socklen_t>,
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![[0u8; BUF]; BATCH],
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid (AF_UNSPEC) value.
            addrs: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH],
            lens: vec![0; BATCH],
            names: vec![0; BATCH],
            count: 0,
        }
    }
}

impl RecvBatch {
    /// One non-blocking recvmmsg; Ok(n) datagrams, WouldBlock when none is waiting.
    fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: BUF,
            })
            .collect();
        // SAFETY: mmsghdr is plain data; every field used is set below.
        let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
            .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
            .collect();
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` points at BATCH headers whose buffers (iovs, bufs, addrs) live
        // until this call returns; the kernel writes at most their stated lengths.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, m) in msgs.iter().take(n).enumerate() {
            self.lens[i] = m.msg_len as usize;
            self.names[i] = m.msg_hdr.msg_namelen;
        }
        self.count = n;
        Ok(n)
    }

    /// Waits until queries are waiting and takes up to BATCH of them.
    pub async fn fill(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let fd = sock.as_raw_fd();
        sock.async_io(Interest::READABLE, || self.recv(fd)).await
    }

    /// Datagram `i` of the last batch and its source.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        Some((
            &self.bufs[i][..self.lens[i]],
            to_socket_addr(&self.addrs[i], self.names[i])?,
        ))
    }
}

/// The address the kernel wrote into `ss` (`len` bytes), if IPv4 or IPv6.
fn to_socket_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(ss.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is that long.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sends every reply, in as few sendmmsg calls as the socket allows.
pub async fn send_all(sock: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) {
    let addrs: Vec<SockAddr> = replies.iter().map(|(_, a)| SockAddr::from(*a)).collect();
    let mut done = 0;
    while done < replies.len() {
        let fd = sock.as_raw_fd();
        let sent = sock
            .async_io(Interest::WRITABLE, || {
                send_some(fd, &replies[done..], &addrs[done..])
            })
            .await;
        match sent {
            Ok(0) | Err(_) => done += 1, // this one cannot be sent: drop it, go on
            Ok(n) => done += n,
        }
    }
}

fn send_some(
    fd: RawFd,
    replies: &[(Vec<u8>, SocketAddr)],
    addrs: &[SockAddr],
) -> io::Result<usize> {
    let n = replies.len().min(BATCH);
    let mut iovs: Vec<libc::iovec> = replies[..n]
        .iter()
        .map(|(b, _)| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; every field used is set below.
    let mut msgs: Vec<libc::mmsghdr> = (0..n)
        .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
        .collect();
    for (i, m) in msgs.iter_mut().enumerate() {
        m.msg_hdr.msg_name = addrs[i].as_ptr() as *mut libc::c_void;
        m.msg_hdr.msg_namelen = addrs[i].len();
        m.msg_hdr.msg_iov = &mut iovs[i];
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the headers point at `replies` and `addrs`, alive for the call; the kernel
    // only reads them.
    let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}
