//! Recursive descent over the tokens: one method per grammar rule of `eskip`'s doc.

use super::lexer::{Spanned, Tok, tokenize};
use super::{Arg, Backend, ParseError, Route, Term};
use std::collections::HashMap;

pub struct Parser {
    toks: Vec<Spanned>,
    pos: usize,
}

impl Parser {
    pub fn new(text: &str) -> Result<Parser, ParseError> {
        Ok(Parser {
            toks: tokenize(text)?,
            pos: 0,
        })
    }

    fn peek(&self) -> &Spanned {
        // `tokenize` always ends with Eof and `bump` never steps past it.
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn peek2(&self) -> &Tok {
        &self.toks[(self.pos + 1).min(self.toks.len() - 1)].tok
    }

    fn bump(&mut self) -> Spanned {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn error_at(t: &Spanned, msg: impl Into<String>) -> ParseError {
        ParseError {
            line: t.line,
            col: t.col,
            message: msg.into(),
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        let t = self.peek();
        Self::error_at(t, format!("expected {what}, found {}", t.tok.describe()))
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if &self.peek().tok == tok {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<Spanned, ParseError> {
        if &self.peek().tok == tok {
            Ok(self.bump())
        } else {
            Err(self.expected(what))
        }
    }

    fn end(&self) -> Result<(), ParseError> {
        match self.peek().tok {
            Tok::Eof => Ok(()),
            _ => Err(self.expected("end of input")),
        }
    }

    pub fn document(mut self) -> Result<Vec<Route>, ParseError> {
        while self.eat(&Tok::Semicolon) {}
        if self.peek().tok == Tok::Eof {
            return Ok(vec![]);
        }
        let named = matches!(self.peek().tok, Tok::Symbol(_)) && *self.peek2() == Tok::Colon;
        if !named {
            let r = self.route(String::new())?;
            while self.eat(&Tok::Semicolon) {}
            if self.peek().tok != Tok::Eof {
                return Err(self.expected(
                    "end of input (only a file with a single route may leave it unnamed)",
                ));
            }
            return Ok(vec![r]);
        }
        let mut routes: Vec<Route> = vec![];
        let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
        loop {
            let id_tok = self.bump();
            let Tok::Symbol(id) = id_tok.tok.clone() else {
                return Err(Self::error_at(
                    &id_tok,
                    format!("expected a route id, found {}", id_tok.tok.describe()),
                ));
            };
            self.expect(&Tok::Colon, "':' after the route id")?;
            if let Some((l, c)) = seen.get(&id) {
                return Err(Self::error_at(
                    &id_tok,
                    format!("duplicate route id {id:?} (first defined at {l}:{c})"),
                ));
            }
            seen.insert(id.clone(), (id_tok.line, id_tok.col));
            let mut r = self.route(id)?;
            r.line = id_tok.line;
            r.col = id_tok.col;
            routes.push(r);
            match self.peek().tok {
                Tok::Eof => return Ok(routes),
                Tok::Semicolon => {
                    while self.eat(&Tok::Semicolon) {}
                    if self.peek().tok == Tok::Eof {
                        return Ok(routes);
                    }
                }
                _ => return Err(self.expected("';' between routes")),
            }
        }
    }

    /// predicates { "->" filter } "->" backend
    fn route(&mut self, id: String) -> Result<Route, ParseError> {
        let start = self.peek().clone();
        let predicates = self.predicates()?;
        let mut filters = vec![];
        loop {
            self.expect(&Tok::Arrow, "'->' (then filters or the backend)")?;
            match self.peek().tok {
                Tok::Symbol(_) => filters.push(self.term()?),
                _ => break,
            }
        }
        let backend = self.backend()?;
        Ok(Route {
            id,
            predicates,
            filters,
            backend,
            line: start.line,
            col: start.col,
        })
    }

    fn predicates(&mut self) -> Result<Vec<Term>, ParseError> {
        if self.eat(&Tok::Star) {
            return Ok(vec![]);
        }
        let mut out = vec![self.term_or(
            "a predicate (Name(args)) or '*' (routes need '*' when they have no predicate)",
        )?];
        while self.eat(&Tok::And) {
            out.push(self.term_or("a predicate after '&&'")?);
        }
        Ok(out)
    }

    fn term_or(&mut self, what: &str) -> Result<Term, ParseError> {
        match self.peek().tok {
            Tok::Symbol(_) => self.term(),
            _ => Err(self.expected(what)),
        }
    }

    /// NAME "(" [ arg { "," arg } ] ")"
    fn term(&mut self) -> Result<Term, ParseError> {
        let t = self.bump();
        let Tok::Symbol(name) = t.tok else {
            return Err(Self::error_at(&t, "expected a name"));
        };
        self.expect(&Tok::OpenParen, &format!("'(' after {name}"))?;
        let mut args = vec![];
        if !self.eat(&Tok::CloseParen) {
            loop {
                let a = self.bump();
                args.push(match a.tok.clone() {
                    Tok::Str(s) => Arg::String(s),
                    Tok::Number(n) => Arg::Number(n),
                    Tok::Regexp(r) => Arg::Regexp(r),
                    other => {
                        return Err(Self::error_at(
                            &a,
                            format!(
                                "expected an argument (string, number or /regexp/), found {}",
                                other.describe()
                            ),
                        ));
                    }
                });
                if self.eat(&Tok::CloseParen) {
                    break;
                }
                self.expect(
                    &Tok::Comma,
                    &format!("',' or ')' in the arguments of {name}"),
                )?;
            }
        }
        Ok(Term {
            name,
            args,
            line: t.line,
            col: t.col,
        })
    }

    fn backend(&mut self) -> Result<Backend, ParseError> {
        let t = self.bump();
        match t.tok.clone() {
            Tok::Str(url) => Ok(Backend::Network { url }),
            Tok::OpenAngle => {
                let inner = self.bump();
                let mut endpoints = vec![];
                let algorithm = match inner.tok.clone() {
                    Tok::Symbol(s) if self.peek().tok == Tok::CloseAngle => {
                        self.bump();
                        return match s.as_str() {
                            "shunt" => Ok(Backend::Shunt),
                            "loopback" => Ok(Backend::Loopback),
                            "dynamic" => Ok(Backend::Dynamic),
                            "forward" => Ok(Backend::Forward),
                            other => Err(Self::error_at(
                                &inner,
                                format!(
                                    "unknown backend <{other}> (shunt, loopback, dynamic, forward, or a list of URLs)"
                                ),
                            )),
                        };
                    }
                    Tok::Symbol(a) => {
                        self.expect(&Tok::Comma, "',' after the load balancing algorithm")?;
                        Some(a)
                    }
                    Tok::Str(u) => {
                        endpoints.push(u);
                        if self.eat(&Tok::CloseAngle) {
                            return Ok(Backend::Lb {
                                algorithm: None,
                                endpoints,
                            });
                        }
                        self.expect(&Tok::Comma, "',' or '>' in the endpoint list")?;
                        None
                    }
                    other => {
                        return Err(Self::error_at(
                            &inner,
                            format!(
                                "expected shunt, loopback, dynamic, an algorithm or an endpoint URL after '<', found {}",
                                other.describe()
                            ),
                        ));
                    }
                };
                loop {
                    let e = self.bump();
                    match e.tok.clone() {
                        Tok::Str(u) => endpoints.push(u),
                        other => {
                            return Err(Self::error_at(
                                &e,
                                format!("expected an endpoint URL, found {}", other.describe()),
                            ));
                        }
                    }
                    if self.eat(&Tok::CloseAngle) {
                        break;
                    }
                    self.expect(&Tok::Comma, "',' or '>' in the endpoint list")?;
                }
                Ok(Backend::Lb {
                    algorithm,
                    endpoints,
                })
            }
            other => Err(Self::error_at(
                &t,
                format!(
                    "expected a backend (\"URL\", <shunt>, <loopback>, <dynamic> or <endpoints>), found {}",
                    other.describe()
                ),
            )),
        }
    }

    pub fn filter_chain(mut self) -> Result<Vec<Term>, ParseError> {
        let mut out = vec![];
        if self.peek().tok == Tok::Eof {
            return Ok(out);
        }
        out.push(self.term_or("a filter (name(args))")?);
        while self.eat(&Tok::Arrow) {
            out.push(self.term_or("a filter after '->'")?);
        }
        self.end()?;
        Ok(out)
    }

    pub fn predicate_list(mut self) -> Result<Vec<Term>, ParseError> {
        let p = self.predicates()?;
        self.end()?;
        Ok(p)
    }
}
