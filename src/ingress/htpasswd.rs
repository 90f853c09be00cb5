//! htpasswd files for `basicAuth`: `user:hash` lines with bcrypt (`$2y$`, `$2a$`, `$2b$`),
//! SHA-1 (`{SHA}`) or Apache MD5 (`$apr1$`) hashes — the forms Skipper's basicAuth (via
//! go-http-auth) reads. Other hash forms (crypt, plain text) are refused when the file is
//! read, so a route never silently fails every login.

use base64::Engine;
use md5::{Digest, Md5};
use sha1::Sha1;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
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
        Ok(Htpasswd { users })
    }

    /// Whether `password` is `user`'s.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
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

    /// The user and password of a `Basic` Authorization header, if they are right.
    pub fn check_header(&self, authorization: Option<&str>) -> Option<String> {
        let b64 = authorization?.strip_prefix("Basic ")?.trim();
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, pw) = text.split_once(':')?;
        self.verify(user, pw).then(|| user.to_string())
    }
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
        // "sha:secret"
        assert_eq!(
            h.check_header(Some("Basic c2hhOnNlY3JldA==")).as_deref(),
            Some("sha")
        );
        assert!(Htpasswd::parse("u:plaintext\n").is_err());
    }
}
