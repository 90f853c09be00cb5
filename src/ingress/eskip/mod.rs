//! eskip, Skipper's route language, parsed by hand: a lexer (`lexer`) and a recursive
//! descent parser (`parser`) over this grammar:
//!
//! ```text
//! document   = [ route-def { ";" route-def } [ ";" ] ] | route      (a lone route needs no id)
//! route-def  = ID ":" route
//! route      = predicates { "->" filter } "->" backend
//! predicates = "*" | term { "&&" term }
//! filter     = term
//! term       = NAME "(" [ arg { "," arg } ] ")"
//! arg        = STRING | `RAW STRING` | NUMBER | /REGEXP/
//! backend    = STRING | "<shunt>" | "<loopback>" | "<dynamic>" | "<forward>"
//!            | "<" [ ALGORITHM "," ] STRING { "," STRING } ">"
//! ```
//!
//! `//` starts a comment to the end of the line. Names are not checked here: Skipper has
//! about 150 filters, and an unknown name is a question for `ingress::check`, not a syntax
//! error. Errors carry the line and column (1-based) where the offending token starts.

mod lexer;
mod parser;

use serde::Serialize;
use std::fmt;

/// A syntax error at a place in the text.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for ParseError {}

/// One argument of a predicate or filter.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum Arg {
    String(String),
    Number(f64),
    Regexp(String),
}

impl Arg {
    /// The argument as text: strings and regexps as written, numbers in their shortest form.
    pub fn text(&self) -> String {
        match self {
            Arg::String(s) | Arg::Regexp(s) => s.clone(),
            Arg::Number(n) => n.to_string(),
        }
    }
}

/// A string as eskip writes it: in double quotes, with the escapes its lexer reads back
/// (Rust's `{:?}` would write `\0` and `\u{..}`, which eskip reads as other text).
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                '\r' => f.write_str("\\r")?,
                '\u{8}' => f.write_str("\\b")?,
                '\u{c}' => f.write_str("\\f")?,
                '\u{b}' => f.write_str("\\v")?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::String(s) => write!(f, "{}", Quoted(s)),
            Arg::Number(n) => write!(f, "{n}"),
            Arg::Regexp(r) => write!(f, "/{}/", r.replace('/', "\\/")),
        }
    }
}

/// A predicate or a filter: a name with arguments, and where it was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Term {
    pub name: String,
    pub args: Vec<Arg>,
    #[serde(skip)]
    pub line: usize,
    #[serde(skip)]
    pub col: usize,
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.name)?;
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{a}")?;
        }
        write!(f, ")")
    }
}

/// Where a matched request goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Backend {
    /// A URL (`"http://10.0.0.2:8080"`, `"knit://service/web"`).
    Network { url: String },
    /// The route answers itself (filters set the status and body).
    Shunt,
    /// The request is matched again against the table after the filters changed it.
    Loopback,
    /// The filters decide the backend (Skipper's `setDynamicBackend*`).
    Dynamic,
    /// Skipper's `<forward>`: the backend of the ingress object it came from.
    Forward,
    /// A load-balanced list; `algorithm` None means Skipper's default (roundRobin).
    Lb {
        algorithm: Option<String>,
        endpoints: Vec<String>,
    },
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Network { url } => write!(f, "{}", Quoted(url)),
            Backend::Shunt => write!(f, "<shunt>"),
            Backend::Loopback => write!(f, "<loopback>"),
            Backend::Dynamic => write!(f, "<dynamic>"),
            Backend::Forward => write!(f, "<forward>"),
            Backend::Lb {
                algorithm,
                endpoints,
            } => {
                write!(f, "<")?;
                if let Some(a) = algorithm {
                    write!(f, "{a}, ")?;
                }
                let eps: Vec<String> = endpoints.iter().map(|e| Quoted(e).to_string()).collect();
                write!(f, "{}>", eps.join(", "))
            }
        }
    }
}

/// One route. No predicates means `*` (matches every request).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// Empty for the one unnamed route a document may hold.
    pub id: String,
    pub predicates: Vec<Term>,
    pub filters: Vec<Term>,
    pub backend: Backend,
    #[serde(skip)]
    pub line: usize,
    #[serde(skip)]
    pub col: usize,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.id.is_empty() {
            write!(f, "{}: ", self.id)?;
        }
        if self.predicates.is_empty() {
            write!(f, "*")?;
        }
        for (i, p) in self.predicates.iter().enumerate() {
            if i > 0 {
                write!(f, " && ")?;
            }
            write!(f, "{p}")?;
        }
        for flt in &self.filters {
            write!(f, " -> {flt}")?;
        }
        write!(f, " -> {};", self.backend)
    }
}

/// Every route of a document (a routes file). Route ids must be unique.
pub fn parse(text: &str) -> Result<Vec<Route>, ParseError> {
    parser::Parser::new(text)?.document()
}

/// A route kept in the store: its id and its text without the id, which must be exactly
/// one route (a stored text cannot bring other routes with it).
pub fn parse_stored(id: &str, text: &str) -> Result<Route, ParseError> {
    let mut parsed = parse(&format!("{id}: {text};"))?;
    match parsed.pop() {
        Some(r) if parsed.is_empty() && r.id == id => Ok(r),
        _ => Err(ParseError {
            line: 1,
            col: 1,
            message: "expected one route without its id (and an id of letters, digits and _)"
                .into(),
        }),
    }
}

/// A filter chain alone (`f1(..) -> f2(..)`), as Skipper accepts for default filters.
pub fn parse_filters(text: &str) -> Result<Vec<Term>, ParseError> {
    parser::Parser::new(text)?.filter_chain()
}

/// Predicates alone (`P1(..) && P2(..)` or `*`).
pub fn parse_predicates(text: &str) -> Result<Vec<Term>, ParseError> {
    parser::Parser::new(text)?.predicate_list()
}

#[cfg(test)]
mod tests;
