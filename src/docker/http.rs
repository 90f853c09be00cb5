//! Just enough HTTP/1.1 for Docker's plugin client: `POST /Iface.Method` with a JSON body
//! (Content-Length, possibly 0), keep-alive, one request at a time per connection.

use std::io::{self, BufRead, BufReader, Read, Write};

/// Requests larger than this are refused (Docker's are a few KiB).
const MAX_BODY: usize = 1 << 20;

pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// The next request on the connection; None at a clean end of stream.
pub fn read_request(r: &mut BufReader<impl Read>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v
                .trim()
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length"))?;
        }
        // Docker's client never sends chunked bodies; anything else is ignored.
    }
    if length > MAX_BODY {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    Ok(Some(Request { method, path, body }))
}

pub fn write_response(w: &mut impl Write, status: u16, body: &str) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_requests_back_to_back_with_and_without_bodies() {
        let raw = b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\r\nPOST /NetworkDriver.Join HTTP/1.1\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        let mut r = BufReader::new(&raw[..]);
        let a = read_request(&mut r).unwrap().unwrap();
        assert_eq!(
            (a.method.as_str(), a.path.as_str()),
            ("POST", "/Plugin.Activate")
        );
        assert!(a.body.is_empty());
        let b = read_request(&mut r).unwrap().unwrap();
        assert_eq!(b.path, "/NetworkDriver.Join");
        assert_eq!(b.body, b"{\"a\":1}");
        assert!(read_request(&mut r).unwrap().is_none());
    }

    #[test]
    fn refuses_garbage() {
        let mut r = BufReader::new(&b"\r\n"[..]);
        assert!(read_request(&mut r).is_err());
        let mut r = BufReader::new(&b"POST /x HTTP/1.1\r\nContent-Length: zz\r\n\r\n"[..]);
        assert!(read_request(&mut r).is_err());
        let mut out = vec![];
        write_response(&mut out, 200, "{}").unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("Content-Length: 2\r\n\r\n{}")
        );
    }
}
