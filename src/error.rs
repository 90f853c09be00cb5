//! One error type for the library. Every variant renders as one line that names the
//! field and the offending value, because that line is what the user sees on stderr.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad user input: `field` is the flag or argument, `value` what was given.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    Exists { kind: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("subnet {subnet} of network {network:?} has no free address left")]
    Exhausted { network: String, subnet: String },
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
    /// nftables refused or failed a change; `errno` is the kernel's error when it gave one
    /// (ENOENT: knit's table or a set is missing, EEXIST, ...), for callers that decide by it.
    #[error("nftables: {msg}")]
    Nft { msg: String, errno: Option<i32> },
    #[error("store: {0}")]
    Store(#[from] rusqlite::Error),
    /// Bad input at a place in a file (`knit apply`): `at` is `FILE:LINE:COLUMN` (or just
    /// `FILE` when no place is known), the form editors and compilers use, so the place
    /// can be jumped to.
    #[error("{at}: {reason}")]
    InFile { at: String, reason: String },
    /// One step of a longer operation (`knit apply`) failed: `context` says which step and
    /// what was undone; the exit status is the cause's.
    #[error("{context}: {source}")]
    Step {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// `knit`'s exit status for an error, so scripts can tell "no such thing" from a kernel
/// failure: 1 bad input, 3 not found, 4 conflict (exists, in use, exhausted), 5 the
/// kernel, the store or the system failed. (2 is a command-line usage error, from clap.)
pub mod exit {
    pub const INVALID: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const NOT_FOUND: i32 = 3;
    pub const CONFLICT: i32 = 4;
    pub const SYSTEM: i32 = 5;
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid { .. } | Error::InFile { .. } => exit::INVALID,
            Error::NotFound { .. } => exit::NOT_FOUND,
            Error::Exists { .. } | Error::Conflict(_) | Error::Exhausted { .. } => exit::CONFLICT,
            Error::Io { .. } | Error::Nft { .. } | Error::Store(_) => exit::SYSTEM,
            Error::Step { source, .. } => source.exit_code(),
        }
    }

    pub fn invalid(field: &'static str, value: impl ToString, reason: impl ToString) -> Self {
        Error::Invalid {
            field,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    pub fn not_found(kind: &'static str, name: impl ToString) -> Self {
        Error::NotFound {
            kind,
            name: name.to_string(),
        }
    }

    pub fn exists(kind: &'static str, name: impl ToString) -> Self {
        Error::Exists {
            kind,
            name: name.to_string(),
        }
    }

    /// Wraps an OS error with the operation that failed ("create veth kv1a2b", ...).
    pub fn io(op: impl ToString, source: io::Error) -> Self {
        Error::Io {
            op: op.to_string(),
            source,
        }
    }

    /// The errno behind an OS or nftables error, if any (used to tell "already gone" from
    /// real failures).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Nft { errno, .. } => *errno,
            Error::Step { source, .. } => source.errno(),
            _ => None,
        }
    }

    /// An nftables error without a kernel errno (libnftables' text, malformed replies).
    pub fn nft(msg: impl ToString) -> Self {
        Error::Nft {
            msg: msg.to_string(),
            errno: None,
        }
    }
}

/// Adds operation context to `io::Result`s.
pub trait IoContext<T> {
    fn op(self, op: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn op(self, op: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(op(), e))
    }
}
