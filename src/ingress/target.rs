//! Backend URLs as routes write them: `http://`, `https://`, `h2c://` endpoints and the
//! knit-native `knit://service/NAME` and `knit://sandbox/NAME:PORT` (resolved through the
//! store when used).

/// A backend endpoint as written; `knit://` ones are resolved through the store when used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `http://HOST:PORT` (port 80 if not given) as `HOST:PORT`; `h2c://HOST:PORT` (HTTP/2
    /// without TLS to the backend) and `https://HOST:PORT` (443) with their scheme.
    Http(String),
    /// `knit://service/NAME`: the service's VIP and port.
    Service(String),
    /// `knit://sandbox/NAME:PORT`: the sandbox's first address on any knit network.
    Sandbox(String, u16),
}

impl Target {
    /// A backend URL as routes and `tee` write it.
    pub fn parse(url: &str) -> Result<Target, String> {
        if let Some(rest) = url.strip_prefix("knit://service/") {
            if rest.is_empty() || rest.contains('/') {
                return Err(format!("{url:?}: expected knit://service/NAME"));
            }
            return Ok(Target::Service(rest.to_string()));
        }
        if let Some(rest) = url.strip_prefix("knit://sandbox/") {
            let (name, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{url:?}: expected knit://sandbox/NAME:PORT"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{url:?}: {port:?} is not a port"))?;
            return Ok(Target::Sandbox(name.to_string(), port));
        }
        let (rest, scheme, default_port) = if let Some(rest) = url.strip_prefix("h2c://") {
            (rest, "h2c://", 80)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (rest, "https://", 443)
        } else {
            let rest = url.strip_prefix("http://").ok_or_else(|| {
                format!(
                    "{url:?}: only http://, https://, h2c://, knit://service/ and knit://sandbox/ backends are implemented"
                )
            })?;
            (rest, "", 80)
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if !(path.is_empty() || path == "/") {
            return Err(format!("{url:?}: a backend URL with a path"));
        }
        if authority.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let port = match authority.strip_prefix('[') {
            Some(v6) => v6
                .split_once(']')
                .and_then(|(_, rest)| rest.strip_prefix(':')),
            None => authority.rsplit_once(':').map(|(_, p)| p),
        };
        if let Some(p) = port
            && p.parse::<u16>().is_err()
        {
            return Err(format!("{url:?}: {p:?} is not a port"));
        }
        let has_port = port.is_some();
        Ok(Target::Http(if has_port {
            format!("{scheme}{authority}")
        } else {
            format!("{scheme}{authority}:{default_port}")
        }))
    }
}
