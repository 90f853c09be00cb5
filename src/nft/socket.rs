//! An nf_tables netlink socket: lent by this namespace's keeper when one runs (so closing
//! it costs the kernel nothing), else the process's own. Sends encoded batches and waits
//! for their acknowledgement, and answers the questions the table check asks (dumps of
//! chains and rules).

use super::wire::*;
use crate::error::{Error, IoContext, Result};
use netlink_sys::Socket as NlSocket;
use std::collections::BTreeMap;
use std::io;

pub struct Socket(NlSocket, Option<std::os::unix::net::UnixStream>);

impl std::os::fd::AsRawFd for Socket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl Socket {
    /// A socket lent by this namespace's `keeper` (so closing it costs the kernel
    /// nothing), else a fresh one. Fields drop in order: the descriptor before the
    /// connection that returns the loan.
    pub fn open() -> Result<Socket> {
        if let Some(loan) = crate::nft::keeper::borrow(true) {
            use std::os::fd::{FromRawFd, IntoRawFd};
            // SAFETY: the descriptor is ours alone (received over SCM_RIGHTS).
            let s = unsafe { NlSocket::from_raw_fd(loan.socket.into_raw_fd()) };
            crate::trace::phase("nft: socket lent by keeper");
            return Ok(Socket(s, Some(loan.connection)));
        }
        let s = open_netfilter().op(|| "open nftables socket".into())?;
        Ok(Socket(s, None))
    }

    /// A socket of this process's own, never a keeper's (and never starting one): for
    /// one-off questions such as whether knit's table exists on a blank state directory.
    pub fn own() -> Result<Socket> {
        let s = open_netfilter().op(|| "open nftables socket".into())?;
        Ok(Socket(s, None))
    }

    /// Sends the batch and waits for every acknowledgement; any error aborts the whole
    /// batch in the kernel and is returned.
    pub fn apply(&mut self, enc: &Encoded) -> Result<()> {
        self.fit(enc.bytes.len());
        self.0
            .send(&enc.bytes, 0)
            .op(|| "send nftables batch".into())?;
        // Wait for the last message's ack or the first error (the kernel then aborts the
        // whole batch; later acks may not come).
        let mut pending = enc.acked;
        let mut first_err: Option<io::Error> = None;
        let mut buf = vec![0u8; 16384];
        while pending.is_some() && first_err.is_none() {
            let n = self
                .0
                .recv(&mut &mut buf[..], 0)
                .op(|| "receive nftables ack".into())?;
            for (seq, code) in acks(&buf[..n])? {
                if code != 0 && first_err.is_none() {
                    first_err = Some(io::Error::from_raw_os_error(-code));
                } else if Some(seq) == pending {
                    pending = None;
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(Error::Nft {
                errno: e.raw_os_error(),
                msg: format!(
                    "element batch rejected: {e} (knit's table or set is missing: `knit reconcile` rebuilds it)"
                ),
            }),
            Some(e) => Err(Error::Nft {
                errno: e.raw_os_error(),
                msg: format!("element batch rejected: {e}"),
            }),
        }
    }

    /// Whether `table` (family inet) exists: one GETTABLE request, so the answer costs the
    /// same however many chains and rules the table holds (an nft listing would fetch them).
    pub fn table_exists(&mut self, table: &str) -> Result<bool> {
        let mut attrs = vec![];
        attr(&mut attrs, NFTA_TABLE_NAME, |b| cstr(b, table));
        let mut msg = vec![];
        message(
            &mut msg,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
            1,
            NFPROTO_INET,
            0,
            &attrs,
        );
        self.0
            .send(&msg, 0)
            .op(|| "send nftables get table".into())?;
        let mut buf = vec![0u8; 16384];
        loop {
            let n = self
                .0
                .recv(&mut &mut buf[..], 0)
                .op(|| "receive nftables table".into())?;
            if let Some((_, code)) = acks(&buf[..n])?.first() {
                return match -code {
                    0 => Ok(true),
                    libc::ENOENT => Ok(false),
                    e => Err(Error::io(
                        "get nftables table",
                        io::Error::from_raw_os_error(e),
                    )),
                };
            }
        }
    }

    /// Each chain's use count in `table` (of `family`): the rules it holds plus the rules
    /// and map elements that jump to it (the kernel counts both so that a chain in use
    /// cannot be deleted). One dump of the chains, whose size does not depend on how many
    /// rules there are. `None` if the table does not exist.
    pub fn chain_uses(&mut self, family: u8, table: &str) -> Result<Option<BTreeMap<String, u32>>> {
        const NFT_MSG_GETCHAIN: u16 = 4;
        const NFTA_CHAIN_USE: u16 = 6;
        let mut uses = BTreeMap::new();
        let found = self.dump(family, table, NFT_MSG_GETCHAIN, NFTA_CHAIN_TABLE, |attrs| {
            if let (Some(name), Some(n)) = (
                string_attr(attrs, NFTA_CHAIN_NAME),
                raw_attr(attrs, NFTA_CHAIN_USE)
                    .and_then(|v| v.get(..4))
                    .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
            ) {
                uses.insert(name, n);
            }
        })?;
        Ok(found.then_some(uses))
    }

    /// One dump request of `get` restricted to `table` (attribute `table_attr`); `each`
    /// sees the attributes of every object. False if the table does not exist.
    fn dump(
        &mut self,
        family: u8,
        table: &str,
        get: u16,
        table_attr: u16,
        mut each: impl FnMut(&[u8]),
    ) -> Result<bool> {
        const NLM_F_DUMP: u16 = 0x300;
        const NLMSG_DONE: u16 = 3;
        let mut attrs = vec![];
        attr(&mut attrs, table_attr, |b| cstr(b, table));
        let mut msg = vec![];
        message(
            &mut msg,
            (NFNL_SUBSYS_NFTABLES << 8) | get,
            NLM_F_REQUEST | NLM_F_DUMP,
            1,
            family,
            0,
            &attrs,
        );
        self.0.send(&msg, 0).op(|| "send nftables dump".into())?;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self
                .0
                .recv(&mut &mut buf[..], 0)
                .op(|| "receive nftables dump".into())?;
            let data = &buf[..n];
            let mut off = 0;
            while off + 16 <= data.len() {
                let len =
                    u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]])
                        as usize;
                let kind = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
                if len < 16 || off + len > data.len() {
                    return Err(Error::nft("malformed netlink reply"));
                }
                let msg = &data[off..off + len];
                match kind {
                    NLMSG_DONE => return Ok(true),
                    NLMSG_ERROR if len >= 20 => {
                        let code = i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
                        return match -code {
                            0 => Ok(true),
                            libc::ENOENT => Ok(false),
                            e => Err(Error::io(
                                "dump nftables objects",
                                io::Error::from_raw_os_error(e),
                            )),
                        };
                    }
                    _ if len >= 20 => each(&msg[20..]),
                    _ => {}
                }
                off += (len + 3) & !3;
            }
        }
    }

    /// Large batches (a bulk service import) exceed the default socket buffer; netlink
    /// takes a batch as one message, so the buffer must hold all of it.
    fn fit(&mut self, len: usize) {
        if len < 128 * 1024 {
            return;
        }
        let size = (len + 64 * 1024).min(i32::MAX as usize) as libc::c_int;
        // SAFETY: setsockopt on a socket we own with a pointer to a local int. Failure
        // (not root) leaves the default, and the send then reports EMSGSIZE.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.0),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    /// Closes without delaying the caller: a lent socket just goes back to the keeper,
    /// an own one is handed to `crate::deferred`.
    pub fn close_detached(self) {
        if self.1.is_some() {
            drop(self);
        } else {
            crate::deferred::close_detached(self);
        }
    }
}
