//! `knit demo`: placeholder replaced below.
pub fn run() -> crate::error::Result<i32> {
    Ok(0)
}
