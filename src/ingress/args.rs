//! Reading a predicate's or filter's arguments, with errors that name the term, the
//! argument and the place it was written (`LINE:COL`).

use super::eskip::{Arg, Term};
use regex::Regex;

/// An argument that is wrong for its term (a number where a string must be, a bad regexp).
#[derive(Debug, Clone, PartialEq)]
pub struct ArgError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

pub fn fail<T>(t: &Term, msg: impl std::fmt::Display) -> Result<T, ArgError> {
    Err(ArgError {
        line: t.line,
        col: t.col,
        message: format!("{}: {msg}", t.name),
    })
}

/// Checks the argument count is within `min..=max`.
pub fn count(t: &Term, min: usize, max: usize) -> Result<(), ArgError> {
    let n = t.args.len();
    if n < min || n > max {
        let want = if min == max {
            format!("{min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        return fail(t, format!("takes {want} argument(s), got {n}"));
    }
    Ok(())
}

pub fn string(t: &Term, i: usize) -> Result<String, ArgError> {
    match t.args.get(i) {
        Some(Arg::String(s)) => Ok(s.clone()),
        Some(other) => fail(
            t,
            format!("argument {} must be a string, got {other}", i + 1),
        ),
        None => fail(t, format!("argument {} (a string) is missing", i + 1)),
    }
}

pub fn number(t: &Term, i: usize) -> Result<f64, ArgError> {
    match t.args.get(i) {
        Some(Arg::Number(n)) => Ok(*n),
        Some(other) => fail(
            t,
            format!("argument {} must be a number, got {other}", i + 1),
        ),
        None => fail(t, format!("argument {} (a number) is missing", i + 1)),
    }
}

/// A regexp argument: a `/regexp/` literal or a string holding the pattern (Skipper takes
/// both).
pub fn regex(t: &Term, i: usize) -> Result<Regex, ArgError> {
    let pattern = match t.args.get(i) {
        Some(Arg::Regexp(r)) | Some(Arg::String(r)) => r,
        Some(other) => {
            return fail(
                t,
                format!("argument {} must be a regexp, got {other}", i + 1),
            );
        }
        None => return fail(t, format!("argument {} (a regexp) is missing", i + 1)),
    };
    Regex::new(pattern)
        .or_else(|e| fail(t, format!("argument {} is not a valid regexp: {e}", i + 1)))
}

/// An HTTP status code argument (100..=599).
pub fn status(t: &Term, i: usize) -> Result<http::StatusCode, ArgError> {
    let n = number(t, i)?;
    if n.fract() != 0.0 || !(100.0..=599.0).contains(&n) {
        return fail(t, format!("{n} is not an HTTP status code (100-599)"));
    }
    http::StatusCode::from_u16(n as u16).or_else(|e| fail(t, e))
}

/// A header name argument.
pub fn header_name(t: &Term, i: usize) -> Result<http::HeaderName, ArgError> {
    let s = string(t, i)?;
    http::HeaderName::from_bytes(s.as_bytes())
        .or_else(|_| fail(t, format!("{s:?} is not a valid header name")))
}

/// A header value argument.
pub fn header_value(t: &Term, i: usize) -> Result<http::HeaderValue, ArgError> {
    let s = string(t, i)?;
    http::HeaderValue::from_str(&s)
        .or_else(|_| fail(t, format!("{s:?} is not a valid header value")))
}

/// A Go-style duration (`"10s"`, `"150ms"`, `"1m30s"`, `"1.5s"`, `"500us"`), as Skipper's
/// timeout filters take them.
/// The longest duration a filter takes (timeouts, windows, latency): longer ones are
/// mistakes, and sums of them must not overflow.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

pub fn duration(t: &Term, i: usize) -> Result<std::time::Duration, ArgError> {
    let s = string(t, i)?;
    match parse_duration(&s) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        Ok(_) => fail(t, format!("{s:?} is longer than a week")),
        Err(why) => fail(t, format!("{s:?} is not a duration: {why}")),
    }
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty".into());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or("a number without a unit (ns, us, ms, s, m, h)")?;
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("{:?} is not a number", &rest[..num_end]))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("unknown unit {u:?}")),
        };
        total += n * secs;
        rest = &rest[unit_end..];
    }
    std::time::Duration::try_from_secs_f64(total).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
    }
}
