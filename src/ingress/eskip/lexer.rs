//! eskip's tokens, each with the line and column it starts at (1-based, columns in
//! characters), so every parse error can point at the place in the file.

use super::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A route id, predicate or filter name, or an LB algorithm: `[A-Za-z_][A-Za-z0-9_]*`.
    Symbol(String),
    /// `"..."` (escapes `\"`, `\\`, `\n`, `\t`, `\r`) or `` `...` `` (raw, may span lines).
    Str(String),
    Number(f64),
    /// `/.../` with `\/` for a slash inside; other escapes are kept for the regexp engine.
    Regexp(String),
    Colon,
    Semicolon,
    Comma,
    And,
    Arrow,
    Star,
    OpenParen,
    CloseParen,
    /// `<` and `>` around special and load-balanced backends.
    OpenAngle,
    CloseAngle,
    Eof,
}

impl Tok {
    /// How the token is named in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Symbol(s) => format!("'{s}'"),
            Tok::Str(_) => "a string".into(),
            Tok::Number(n) => format!("number {n}"),
            Tok::Regexp(_) => "a regexp".into(),
            Tok::Colon => "':'".into(),
            Tok::Semicolon => "';'".into(),
            Tok::Comma => "','".into(),
            Tok::And => "'&&'".into(),
            Tok::Arrow => "'->'".into(),
            Tok::Star => "'*'".into(),
            Tok::OpenParen => "'('".into(),
            Tok::CloseParen => "')'".into(),
            Tok::OpenAngle => "'<'".into(),
            Tok::CloseAngle => "'>'".into(),
            Tok::Eof => "end of input".into(),
        }
    }
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    col: usize,
    /// The previous significant token: a `/` after an argument-opening `(` or `,` starts a
    /// regexp; eskip has no division, so that is the only place a `/` may stand.
    prev: Option<Tok>,
}

impl Lexer<'_> {
    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn err(&self, line: usize, col: usize, msg: impl Into<String>) -> ParseError {
        ParseError {
            line,
            col,
            message: msg.into(),
        }
    }

    /// Skips blanks and `//` comments (to the end of the line).
    fn skip_blank(&mut self) {
        loop {
            let allows_comment = self.prev_allows_comment();
            match self.chars.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('/') if allows_comment => {
                    let mut ahead = self.chars.clone();
                    ahead.next();
                    if ahead.peek() == Some(&'/') {
                        while let Some(c) = self.bump() {
                            if c == '\n' {
                                break;
                            }
                        }
                    } else {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Where an argument may start, `//` is an empty regexp, not a comment.
    fn prev_allows_comment(&self) -> bool {
        !matches!(self.prev, Some(Tok::OpenParen) | Some(Tok::Comma))
    }

    fn next_tok(&mut self) -> Result<Spanned, ParseError> {
        self.skip_blank();
        let (line, col) = (self.line, self.col);
        let Some(c) = self.bump() else {
            return Ok(Spanned {
                tok: Tok::Eof,
                line,
                col,
            });
        };
        let tok = match c {
            ':' => Tok::Colon,
            ';' => Tok::Semicolon,
            ',' => Tok::Comma,
            '*' => Tok::Star,
            '(' => Tok::OpenParen,
            ')' => Tok::CloseParen,
            '<' => Tok::OpenAngle,
            '>' => Tok::CloseAngle,
            '&' => match self.bump() {
                Some('&') => Tok::And,
                _ => return Err(self.err(line, col, "'&' must be '&&'")),
            },
            '-' if self.chars.peek() == Some(&'>') => {
                self.bump();
                Tok::Arrow
            }
            '"' => Tok::Str(self.quoted(line, col)?),
            '`' => {
                let mut s = String::new();
                loop {
                    match self.bump() {
                        Some('`') => break,
                        Some(c) => s.push(c),
                        None => return Err(self.err(line, col, "unterminated backtick string")),
                    }
                }
                Tok::Str(s)
            }
            '/' => Tok::Regexp(self.regexp(line, col)?),
            c if c.is_ascii_digit() || c == '-' || c == '.' => self.number(c, line, col)?,
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut s = String::from(c);
                while let Some(&c) = self.chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        s.push(c);
                        self.bump();
                    } else {
                        break;
                    }
                }
                Tok::Symbol(s)
            }
            c => return Err(self.err(line, col, format!("unexpected character {c:?}"))),
        };
        self.prev = Some(tok.clone());
        Ok(Spanned { tok, line, col })
    }

    fn quoted(&mut self, line: usize, col: usize) -> Result<String, ParseError> {
        let mut s = String::new();
        loop {
            match self.bump() {
                Some('"') => return Ok(s),
                Some('\\') => match self.bump() {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('r') => s.push('\r'),
                    Some('b') => s.push('\u{8}'),
                    Some('f') => s.push('\u{c}'),
                    Some('v') => s.push('\u{b}'),
                    Some(c) => s.push(c),
                    None => break,
                },
                Some(c) => s.push(c),
                None => break,
            }
        }
        Err(self.err(line, col, "unterminated string"))
    }

    fn regexp(&mut self, line: usize, col: usize) -> Result<String, ParseError> {
        let mut s = String::new();
        loop {
            match self.bump() {
                Some('/') => return Ok(s),
                // `\/` is a slash in the pattern; every other escape belongs to the regexp.
                Some('\\') => match self.bump() {
                    Some('/') => s.push('/'),
                    Some(c) => {
                        s.push('\\');
                        s.push(c);
                    }
                    None => break,
                },
                Some('\n') | None => break,
                Some(c) => s.push(c),
            }
        }
        Err(self.err(
            line,
            col,
            "unterminated regexp (a regexp ends with '/' on its line)",
        ))
    }

    /// Decimal integers and floats with an optional sign and exponent; `0x..` hexadecimal.
    fn number(&mut self, first: char, line: usize, col: usize) -> Result<Tok, ParseError> {
        let mut s = String::from(first);
        // Hexadecimal has no exponent (and an 'e' is a digit there).
        let mut hex_digits = false;
        while let Some(&c) = self.chars.peek() {
            hex_digits |= matches!(c, 'x' | 'X');
            let exp_sign = matches!(c, '+' | '-') && s.ends_with(['e', 'E']) && !hex_digits;
            if c.is_ascii_alphanumeric() || c == '.' || exp_sign {
                s.push(c);
                self.bump();
            } else {
                break;
            }
        }
        let (neg, body) = match s.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, s.as_str()),
        };
        let hex = body
            .strip_prefix("0x")
            .or_else(|| body.strip_prefix("0X"))
            .map(|h| u64::from_str_radix(h, 16).map(|v| v as f64));
        let v = match hex {
            Some(r) => r.ok(),
            None if body.starts_with(|c: char| c.is_ascii_digit() || c == '.') => {
                body.parse::<f64>().ok()
            }
            None => None,
        };
        match v {
            // 1e400 parses as infinity: no argument means that.
            Some(v) if !v.is_finite() => {
                Err(self.err(line, col, format!("number {s:?} is too large")))
            }
            Some(v) => Ok(Tok::Number(if neg { -v } else { v })),
            None if s == "-" => Err(self.err(line, col, "'-' must be '->'")),
            None => Err(self.err(line, col, format!("invalid number {s:?}"))),
        }
    }
}

/// The whole text as tokens, ending with `Eof`.
pub fn tokenize(text: &str) -> Result<Vec<Spanned>, ParseError> {
    let mut lx = Lexer {
        chars: text.chars().peekable(),
        line: 1,
        col: 1,
        prev: None,
    };
    let mut out = vec![];
    loop {
        let t = lx.next_tok()?;
        let end = t.tok == Tok::Eof;
        out.push(t);
        if end {
            return Ok(out);
        }
    }
}
