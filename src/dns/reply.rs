//! What the server does with a query: answer now, forward upstream, or drop it; and
//! whether an answer came from the records snapshot (so it may be cached).

/// What to do with one query.
pub enum Reply {
    Now(Vec<u8>),
    Forward,
    Drop,
}

/// Whether a reply is knit's own answer from the records snapshot: a pure function of the
/// query bytes after the id, the client's address, the network and the snapshot, so it can
/// be reused for the same query (see `answer_cache`). Errors and forwards are not.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Origin {
    Records,
    Other,
}
