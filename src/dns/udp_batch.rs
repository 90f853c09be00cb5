//! Batched UDP I/O for the DNS server: one recvmmsg takes every query waiting on the
//! socket (up to `BATCH`), one sendmmsg returns their answers. Under load this replaces two
//! system calls per query by two per batch; when idle it degrades to one datagram per call.
//! Each datagram comes with the interface it arrived on (IP_PKTINFO / IPV6_PKTINFO), which
//! decides whether it is served.

use socket2::SockAddr;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::Interest;
use tokio::net::UdpSocket;

pub const BATCH: usize = 32;
const BUF: usize = 4096;
/// Ancillary data room per datagram: one in6_pktinfo (or in_pktinfo) message needs 40
/// bytes on 64-bit Linux; u64 words keep the buffer aligned for cmsghdr.
const CONTROL_WORDS: usize = 16;

/// Asks the kernel to report, with each datagram, the interface it arrived on.
pub fn recv_pktinfo(sock: &impl AsRawFd, v6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    // SAFETY: setsockopt with a pointer to an int and its size, on a descriptor we own.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Receive buffers and source addresses for one batch, reused across calls.
pub struct RecvBatch {
    bufs: Vec<[u8; BUF]>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    names: Vec<libc::socklen_t>,
    controls: Vec<[u64; CONTROL_WORDS]>,
    /// Ingress interface of each datagram (0 when the kernel did not say).
    ifindexes: Vec<u32>,
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
            controls: vec![[0u64; CONTROL_WORDS]; BATCH],
            ifindexes: vec![0; BATCH],
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
            m.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>() as _;
        }
        // SAFETY: `msgs` points at BATCH headers whose buffers (iovs, bufs, addrs, controls) live
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
            self.ifindexes[i] = ingress_ifindex(&m.msg_hdr);
        }
        self.count = n;
        Ok(n)
    }

    /// Waits until queries are waiting and takes up to BATCH of them.
    pub async fn fill(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let fd = sock.as_raw_fd();
        sock.async_io(Interest::READABLE, || self.recv(fd)).await
    }

    /// Datagram `i` of the last batch, its source, and the interface it arrived on (0 if
    /// unknown).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr, u32)> {
        if i >= self.count {
            return None;
        }
        Some((
            &self.bufs[i][..self.lens[i]],
            to_socket_addr(&self.addrs[i], self.names[i])?,
            self.ifindexes[i],
        ))
    }
}

/// The ingress interface from a received message's IP_PKTINFO / IPV6_PKTINFO (0 if none).
fn ingress_ifindex(hdr: &libc::msghdr) -> u32 {
    // SAFETY: `hdr` was filled by recvmmsg: msg_control/msg_controllen describe the
    // ancillary data the kernel wrote into our buffer, which the CMSG macros walk within
    // those bounds; each payload is read unaligned at its stated type.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
            if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return u32::try_from(info.ipi_ifindex).unwrap_or(0);
            }
            if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return info.ipi6_ifindex;
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    0
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
