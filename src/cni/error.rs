//! CNI errors: a spec code, a message and details, printed as JSON on stdout.

use crate::error::Error;
use serde::Serialize;

pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const UNSUPPORTED_FIELD: u32 = 2;
pub const UNKNOWN_CONTAINER: u32 = 3;
pub const INVALID_ENV: u32 = 4;
pub const IO_FAILURE: u32 = 5;
pub const DECODE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub const TRY_AGAIN: u32 = 11;
pub const NOT_AVAILABLE: u32 = 50;
pub const DEGRADED: u32 = 51;
/// knit's own codes (100+): a resource conflict (address, port) or exhaustion.
pub const CONFLICT: u32 = 100;
/// CHECK found the live state differs from what knit built.
pub const DRIFT: u32 = 101;

#[derive(Debug, Clone, Serialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, d: impl Into<String>) -> Self {
        self.details = d.into();
        self
    }

    /// The JSON the runtime reads from stdout.
    pub fn to_json(&self, version: &str) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["cniVersion"] = serde_json::Value::String(version.to_string());
        serde_json::to_string(&v).unwrap_or_default()
    }
}

/// Maps library errors onto spec codes.
impl From<Error> for CniError {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Invalid { .. } | Error::InFile { .. } => INVALID_CONFIG,
            Error::NotFound { .. } => INVALID_CONFIG,
            Error::Exists { .. } | Error::Conflict(_) | Error::Exhausted { .. } => CONFLICT,
            // A step of `knit apply`; the CNI plugin never runs one.
            Error::Io { .. } | Error::Nft { .. } | Error::Step { .. } => IO_FAILURE,
            Error::Store(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                TRY_AGAIN
            }
            Error::Store(_) => IO_FAILURE,
        };
        CniError::new(code, e.to_string())
    }
}
