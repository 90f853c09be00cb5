//! htpasswd files for `basicAuth`: `user:hash` lines with bcrypt (`$2y$`, `$2a$`, `$2b$`),
//! SHA-1 (`{SHA}`) or Apache MD5 (`$apr1$`) hashes — the forms Skipper's basicAuth (via
//! go-http-auth) reads. Other hash forms (crypt, plain text) are refused when the file is
//! read, so a route never silently fails every login.
//!
//! A bcrypt or `$apr1$` check costs CPU on purpose, so it never runs on a serving thread:
//! it goes to the blocking pool, a few at a time, and credentials once found right are
//! remembered (as a salted digest, not in clear) so a logged-in client pays it once. An
//! unknown user's password is checked against a real entry of the file (picked by the
//! name), so the answer takes as long as for a user who exists.

use base64::Engine;
use md5::{Digest, Md5};
use sha1::Sha1;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};
use tokio::sync::Semaphore;

/// Right credentials remembered per file; past this many, the memory starts over (a
/// client whose entry is dropped pays one more check).
const REMEMBERED: usize = 4096;

/// bcrypt checks running at once, on all routes: a flood of wrong passwords queues here
/// instead of taking every core.
static CHECKS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

#[derive(Debug, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// The hashes, in one order: an unknown user is checked against one of them.
    hashes: Vec<String>,
    /// Digests (keyed by `salt`) of credentials found right.
    known: Mutex<HashSet<[u8; 20]>>,
    salt: [u8; 16],
}

impl Htpasswd {
    pub fn read(path: &Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        Htpasswd::parse(&text).map_err(|e| format!("{}:{e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or(format!("{}: not USER:HASH", n + 1))?;
            let known = ["$2y$", "$2a$", "$2b$", "{SHA}", "$apr1$"];
            if !known.iter().any(|p| hash.starts_with(p)) {
                return Err(format!(
                    "{}: user {user}: only bcrypt, {{SHA}} and $apr1$ hashes are supported",
                    n + 1
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        // The salt only keeps digests of passwords in memory from being looked up in a
        // precomputed table.
        let salt = crate::model::random_bytes::<16>();
        let mut hashes: Vec<String> = users.values().cloned().collect();
        hashes.sort();
        Ok(Htpasswd {
            users,
            hashes,
            salt,
            ..Htpasswd::default()
        })
    }

    /// The hash `user`'s password is checked against: theirs, or for an unknown user
    /// (`false`) one of the file's, the same one for the same name each time.
    fn hash_for(&self, user: &str) -> Option<(&str, bool)> {
        if let Some(h) = self.users.get(user) {
            return Some((h, true));
        }
        let d = self.digest(user, "");
        let pick = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        let n = self.hashes.len() as u64;
        let i = usize::try_from(pick.checked_rem(n)?).ok()?;
        Some((&self.hashes[i], false))
    }

    /// Whether `password` is `user`'s (maybe slow: call it for bcrypt and `$apr1$` off the
    /// serving thread).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.hash_for(user) {
            // An unknown user: the same work as for a known one, and never a match.
            Some((hash, known)) => matches(hash, password) && known,
            None => false,
        }
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 20] {
        let mut d = Sha1::new();
        d.update(self.salt);
        // The user's length first: no other (user, password) pair makes the same bytes.
        d.update((user.len() as u64).to_le_bytes());
        d.update(user.as_bytes());
        d.update(password.as_bytes());
        d.finalize().into()
    }

    /// The user of a `Basic` Authorization header, if its password is right. Credentials
    /// seen right before answer at once; others are checked on the blocking pool.
    pub async fn check_header(self: &Arc<Self>, authorization: Option<&str>) -> Option<String> {
        let b64 = authorization?.strip_prefix("Basic ")?.trim();
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, pw) = text.split_once(':')?;
        let key = self.digest(user, pw);
        let remembered = self.known.lock().map(|k| k.contains(&key));
        if remembered.unwrap_or(false) {
            return Some(user.to_string());
        }
        let slow = self
            .hash_for(user)
            .is_some_and(|(h, _)| !h.starts_with("{SHA}"));
        let right = if slow {
            // The permit goes with the check: a client that leaves does not free it while
            // the check still runs.
            let permit = CHECKS.acquire().await.ok()?;
            let me = self.clone();
            let (u, p) = (user.to_string(), pw.to_string());
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                me.verify(&u, &p)
            })
            .await
            .unwrap_or(false)
        } else {
            self.verify(user, pw)
        };
        if !right {
            return None;
        }
        if let Ok(mut k) = self.known.lock() {
            if k.len() >= REMEMBERED {
                k.clear();
            }
            k.insert(key);
        }
        Some(user.to_string())
    }
}

/// Whether `password` hashes to `hash` (any supported form).
fn matches(hash: &str, password: &str) -> bool {
    if let Some(b64) = hash.strip_prefix("{SHA}") {
        let digest = Sha1::digest(password.as_bytes());
        let mine = base64::engine::general_purpose::STANDARD.encode(digest);
        return same(mine.as_bytes(), b64.as_bytes());
    }
    if let Some(rest) = hash.strip_prefix("$apr1$") {
        let salt = rest.split('$').next().unwrap_or("");
        return same(apr1(password, salt).as_bytes(), hash.as_bytes());
    }
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// Compares in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Apache's MD5-based crypt (`$apr1$SALT$HASH`), as `htpasswd -m` and `openssl passwd
/// -apr1` make it.
pub fn apr1(password: &str, salt: &str) -> String {
    let pw = password.as_bytes();
    let salt = &salt.as_bytes()[..salt.len().min(8)];
    let mut ctx = Md5::new();
    ctx.update(pw);
    ctx.update(b"$apr1$");
    ctx.update(salt);
    let mut alt = Md5::new();
    alt.update(pw);
    alt.update(salt);
    alt.update(pw);
    let alt = alt.finalize();
    let mut left = pw.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = pw.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&pw[..1]);
        }
        i >>= 1;
    }
    let mut fin: [u8; 16] = ctx.finalize().into();
    for i in 0..1000 {
        let mut c = Md5::new();
        if i & 1 == 1 {
            c.update(pw);
        } else {
            c.update(fin);
        }
        if i % 3 != 0 {
            c.update(salt);
        }
        if i % 7 != 0 {
            c.update(pw);
        }
        if i & 1 == 1 {
            c.update(fin);
        } else {
            c.update(pw);
        }
        fin = c.finalize().into();
    }
    const ABC: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = format!("$apr1${}$", String::from_utf8_lossy(salt));
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(char::from(ABC[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put(
            (u32::from(fin[a]) << 16) | (u32::from(fin[b]) << 8) | u32::from(fin[c]),
            4,
        );
    }
    put(u32::from(fin[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_openssl() {
        // openssl passwd -apr1 -salt abcdefgh secret
        assert_eq!(
            apr1("secret", "abcdefgh"),
            "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/"
        );
    }

    #[test]
    fn verifies_each_hash_form() {
        let bc = bcrypt::hash("pw3", 4).unwrap();
        let h = Htpasswd::parse(&format!(
            "# users\nsha:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\nmd5:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\nbc:{bc}\n"
        ))
        .unwrap();
        assert!(h.verify("sha", "secret") && !h.verify("sha", "secreT"));
        assert!(h.verify("md5", "secret") && !h.verify("md5", "x"));
        assert!(h.verify("bc", "pw3") && !h.verify("bc", "pw4"));
        assert!(!h.verify("nobody", "secret"));
        assert!(Htpasswd::parse("u:plaintext\n").is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn headers_are_checked_off_thread_and_right_ones_remembered() {
        let bc = bcrypt::hash("pw3", 4).unwrap();
        let h = Arc::new(
            Htpasswd::parse(&format!(
                "sha:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\nbc:{bc}\n"
            ))
            .unwrap(),
        );
        // "sha:secret"
        assert_eq!(
            h.check_header(Some("Basic c2hhOnNlY3JldA=="))
                .await
                .as_deref(),
            Some("sha")
        );
        let b64 = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            h.check_header(Some(&b64("bc:pw3"))).await.as_deref(),
            Some("bc")
        );
        assert_eq!(
            h.known.lock().unwrap().len(),
            2,
            "right credentials remembered"
        );
        assert_eq!(
            h.check_header(Some(&b64("bc:pw3"))).await.as_deref(),
            Some("bc")
        );
        assert_eq!(h.check_header(Some(&b64("bc:pw4"))).await, None);
        assert_eq!(h.check_header(Some(&b64("nobody:pw3"))).await, None);
        assert_eq!(h.known.lock().unwrap().len(), 2, "wrong ones are not");
        // An unknown user is checked against one of the file's hashes, always the same.
        let (hash, known) = h.hash_for("nobody").unwrap();
        assert!(!known && h.hashes.iter().any(|x| x == hash));
        assert_eq!(h.hash_for("nobody"), Some((hash, false)));
        // Names and passwords cannot trade bytes to match remembered credentials.
        assert_ne!(h.digest("a", "x\0y"), h.digest("a\0x", "y"));
        assert_eq!(Htpasswd::parse("").unwrap().hash_for("x"), None);
        assert_eq!(h.check_header(Some("Bearer x")).await, None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_check_leaves_the_serving_thread_free() {
        // bcrypt at cost 10 takes tens of milliseconds: on this single-threaded runtime a
        // ticker only moves meanwhile if the check runs elsewhere.
        let bc = bcrypt::hash("pw", 10).unwrap();
        let h = Arc::new(Htpasswd::parse(&format!("bc:{bc}\n")).unwrap());
        let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let header = "Basic YmM6d3Jvbmc="; // bc:wrong
        assert_eq!(h.check_header(Some(header)).await, None);
        ticker.abort();
        let n = ticks.load(std::sync::atomic::Ordering::Relaxed);
        assert!(n >= 5, "the serving thread ran {n} ticks during the check");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_remembered_login_skips_the_slow_check() {
        let bc = bcrypt::hash("pw", 8).unwrap();
        let h = Arc::new(Htpasswd::parse(&format!("bc:{bc}\n")).unwrap());
        let header = "Basic YmM6cHc="; // bc:pw
        let t = std::time::Instant::now();
        assert_eq!(h.check_header(Some(header)).await.as_deref(), Some("bc"));
        let first = t.elapsed();
        let t = std::time::Instant::now();
        assert_eq!(h.check_header(Some(header)).await.as_deref(), Some("bc"));
        let again = t.elapsed();
        assert!(again * 10 < first, "first {first:?}, again {again:?}");
    }

    #[test]
    fn an_unknown_user_costs_what_a_known_one_does() {
        let bc = bcrypt::hash("pw", 8).unwrap();
        let h = Htpasswd::parse(&format!("bc:{bc}\n")).unwrap();
        let time = |u: &str| {
            let t = std::time::Instant::now();
            assert!(!h.verify(u, "wrong"));
            t.elapsed()
        };
        let (known, unknown) = (time("bc"), time("nobody"));
        // bcrypt at cost 8 takes milliseconds; a map miss alone would take nanoseconds.
        assert!(unknown * 4 > known, "known {known:?}, unknown {unknown:?}");
    }
}
