//! In-process libnftables: one `nft_run_cmd_from_buffer` call is one atomic kernel
//! transaction (all commands apply or none). Loaded at run time so building knit needs no
//! nftables headers; the library comes with Debian's `libnftables1` (a dependency of nft).

use crate::error::{Error, Result};
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::OnceLock;

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type Buffer = unsafe extern "C" fn(*mut c_void) -> c_int;
type GetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type SetFlags = unsafe extern "C" fn(*mut c_void, u32);

struct Lib {
    _lib: libloading::Library,
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_output: Buffer,
    buffer_error: Buffer,
    get_output: GetBuffer,
    get_error: GetBuffer,
    run: RunCmd,
    set_output_flags: SetFlags,
}

fn load() -> std::result::Result<Lib, String> {
    // SAFETY: loading a well-known system library; the symbols' signatures are those of
    // nftables/libnftables.h.
    unsafe {
        let lib = libloading::Library::new("libnftables.so.1")
            .map_err(|e| format!("cannot load libnftables.so.1 (install nftables): {e}"))?;
        macro_rules! sym {
            ($name:literal) => {
                *lib.get($name).map_err(|e| format!("libnftables: {e}"))?
            };
        }
        Ok(Lib {
            ctx_new: sym!(b"nft_ctx_new\0"),
            ctx_free: sym!(b"nft_ctx_free\0"),
            buffer_output: sym!(b"nft_ctx_buffer_output\0"),
            buffer_error: sym!(b"nft_ctx_buffer_error\0"),
            get_output: sym!(b"nft_ctx_get_output_buffer\0"),
            get_error: sym!(b"nft_ctx_get_error_buffer\0"),
            run: sym!(b"nft_run_cmd_from_buffer\0"),
            set_output_flags: sym!(b"nft_ctx_output_set_flags\0"),
            _lib: lib,
        })
    }
}

fn lib() -> Result<&'static Lib> {
    static LIB: OnceLock<std::result::Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load).as_ref().map_err(Error::nft)
}

/// One libnftables context (one netlink socket), for commands that need more than one
/// transaction or read results back (`get element`, listings).
pub struct Session {
    lib: &'static Lib,
    ctx: *mut c_void,
}

// SAFETY: the context is used by one thread at a time (Session is not Sync); libnftables
// contexts have no thread affinity.
unsafe impl Send for Session {}

impl Session {
    pub fn new() -> Result<Session> {
        let lib = lib()?;
        // SAFETY: plain constructor; null means failure.
        let ctx = unsafe { (lib.ctx_new)(0) };
        if ctx.is_null() {
            return Err(Error::nft("nft_ctx_new failed"));
        }
        // SAFETY: ctx is valid.
        unsafe {
            (lib.buffer_output)(ctx);
            (lib.buffer_error)(ctx);
        }
        Ok(Session { lib, ctx })
    }

    /// Runs an nft script as one transaction in the namespace the context was created in.
    /// Returns what nft printed (for `list` commands).
    pub fn run(&mut self, script: &str) -> Result<String> {
        let cmd = CString::new(script).map_err(|_| Error::nft("script contains NUL"))?;
        let lib = self.lib;
        // SAFETY: ctx is valid; the buffers returned by libnftables stay valid until the
        // next run or free, and we copy them before that.
        unsafe {
            let rc = (lib.run)(self.ctx, cmd.as_ptr());
            let take = |p: *const c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            let out = take((lib.get_output)(self.ctx));
            let err = take((lib.get_error)(self.ctx));
            if rc != 0 {
                let first = err
                    .lines()
                    .find(|l| l.contains("Error"))
                    .unwrap_or(err.trim())
                    .to_string();
                return Err(Error::nft(if first.is_empty() {
                    format!("rc {rc}")
                } else {
                    first
                }));
            }
            Ok(out)
        }
    }
}

/// `NFT_CTX_OUTPUT_HANDLE`: listings show each object's handle (`# handle N`).
pub const OUTPUT_HANDLE: u32 = 1 << 3;

impl Session {
    /// Sets libnftables' output flags (e.g. `OUTPUT_HANDLE`) for later listings.
    pub fn output_flags(&mut self, flags: u32) {
        // SAFETY: ctx is valid; the call only stores the flags.
        unsafe { (self.lib.set_output_flags)(self.ctx, flags) }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: ctx was created by nft_ctx_new and is freed exactly once.
        unsafe { (self.lib.ctx_free)(self.ctx) }
    }
}

/// Runs an nft script as one transaction in the calling thread's network namespace.
pub fn run(script: &str) -> Result<String> {
    Session::new()?.run(script)
}
