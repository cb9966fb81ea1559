//! Constraint expressions that select nodes: `gpu && rack==a`, `mem>=256G || !slow`.
//!
//! Grammar: `expr := and ('||' and)*`, `and := unary ('&&' unary)*`,
//! `unary := '!' unary | '(' expr ')' | NAME [OP VALUE]`, `OP := == != >= <= > <`.
//! A bare NAME is true when the node has that label (with any value but `false`/`0`).
//! `cpus` and `mem` compare against the node's totals (`mem` values are sizes like `64G`);
//! `arch`, `os` and `name` against the node's facts; other names against its labels,
//! numerically when both sides are numbers, else as strings (`==`, `!=` only).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A parsed expression.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Constraint {
    Has(String),
    Cmp(String, Op, String),
    Not(Box<Constraint>),
    And(Box<Constraint>, Box<Constraint>),
    Or(Box<Constraint>, Box<Constraint>),
}

/// Comparison operators.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
}

/// Why an expression does not parse; the message shows where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid constraint {expr:?}: {what} at position {pos} (e.g. 'gpu && rack==a', 'mem>=64G || !slow')")]
pub struct ConstraintError {
    pub expr: String,
    pub pos: usize,
    pub what: String,
}

/// What a node offers to constraint evaluation.
pub struct NodeFacts<'a> {
    pub name: &'a str,
    pub cpus: u32,
    pub mem_bytes: u64,
    pub arch: &'a str,
    pub os: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Op(Op),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<(usize, Tok)>, ConstraintError> {
    let err = |pos: usize, what: &str| ConstraintError {
        expr: s.to_string(),
        pos,
        what: what.to_string(),
    };
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let two = if i + 1 < b.len() { &s[i..i + 2] } else { "" };
        match c {
            b' ' | b'\t' => i += 1,
            b'(' => {
                out.push((i, Tok::Open));
                i += 1;
            }
            b')' => {
                out.push((i, Tok::Close));
                i += 1;
            }
            _ if two == "&&" => {
                out.push((i, Tok::And));
                i += 2;
            }
            _ if two == "||" => {
                out.push((i, Tok::Or));
                i += 2;
            }
            _ if two == "==" || two == "!=" || two == ">=" || two == "<=" => {
                let op = match two {
                    "==" => Op::Eq,
                    "!=" => Op::Ne,
                    ">=" => Op::Ge,
                    _ => Op::Le,
                };
                out.push((i, Tok::Op(op)));
                i += 2;
            }
            b'>' => {
                out.push((i, Tok::Op(Op::Gt)));
                i += 1;
            }
            b'<' => {
                out.push((i, Tok::Op(Op::Lt)));
                i += 1;
            }
            b'!' => {
                out.push((i, Tok::Not));
                i += 1;
            }
            b'=' => return Err(err(i, "use '==' to compare")),
            b'"' | b'\'' => {
                let end = s[i + 1..].find(c as char).ok_or_else(|| err(i, "unterminated quote"))?;
                out.push((i, Tok::Word(s[i + 1..i + 1 + end].to_string())));
                i += end + 2;
            }
            _ if c.is_ascii_alphanumeric() || b"_-.:/".contains(&c) => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b"_-.:/".contains(&b[i])) {
                    i += 1;
                }
                out.push((start, Tok::Word(s[start..i].to_string())));
            }
            _ => return Err(err(i, &format!("unexpected character {:?}", c as char))),
        }
    }
    Ok(out)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(usize, Tok)>,
    at: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> ConstraintError {
        let pos = self.toks.get(self.at).map_or(self.src.len(), |t| t.0);
        ConstraintError {
            expr: self.src.to_string(),
            pos,
            what: what.to_string(),
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.1)
    }

    fn expr(&mut self, depth: usize) -> Result<Constraint, ConstraintError> {
        if depth > 64 {
            return Err(self.err("nested too deeply"));
        }
        let mut left = self.and(depth)?;
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            left = Constraint::Or(Box::new(left), Box::new(self.and(depth)?));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Constraint, ConstraintError> {
        let mut left = self.unary(depth)?;
        while self.peek() == Some(&Tok::And) {
            self.at += 1;
            left = Constraint::And(Box::new(left), Box::new(self.unary(depth)?));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Constraint, ConstraintError> {
        match self.peek().cloned() {
            Some(Tok::Not) => {
                self.at += 1;
                Ok(Constraint::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Tok::Open) => {
                self.at += 1;
                let e = self.expr(depth + 1)?;
                if self.peek() != Some(&Tok::Close) {
                    return Err(self.err("expected ')'"));
                }
                self.at += 1;
                Ok(e)
            }
            Some(Tok::Word(name)) => {
                self.at += 1;
                if let Some(Tok::Op(op)) = self.peek().cloned() {
                    self.at += 1;
                    match self.peek().cloned() {
                        Some(Tok::Word(v)) => {
                            self.at += 1;
                            Ok(Constraint::Cmp(name, op, v))
                        }
                        _ => Err(self.err("expected a value after the comparison")),
                    }
                } else {
                    Ok(Constraint::Has(name))
                }
            }
            _ => Err(self.err("expected a name, '!' or '('")),
        }
    }
}

impl Constraint {
    /// Parses an expression.
    pub fn parse(s: &str) -> Result<Constraint, ConstraintError> {
        let toks = lex(s)?;
        let mut p = Parser { src: s, toks, at: 0 };
        if p.toks.is_empty() {
            return Err(p.err("empty expression"));
        }
        let e = p.expr(0)?;
        if p.at != p.toks.len() {
            return Err(p.err("unexpected text"));
        }
        e.check_values().map_err(|what| ConstraintError {
            expr: s.to_string(),
            pos: 0,
            what,
        })?;
        Ok(e)
    }

    /// Values that must be sizes or numbers are checked at parse time, not on every node.
    fn check_values(&self) -> Result<(), String> {
        match self {
            Constraint::Has(_) => Ok(()),
            Constraint::Cmp(name, _, v) if name == "mem" => {
                crate::parse::parse_size(v).map(|_| ()).map_err(|e| e.to_string())
            }
            Constraint::Cmp(name, _, v) if name == "cpus" => v
                .parse::<u64>()
                .map(|_| ())
                .map_err(|_| format!("cpus compares with a whole number, not {v:?}")),
            Constraint::Cmp(_, op, v) => {
                if !matches!(op, Op::Eq | Op::Ne) && v.parse::<f64>().is_err() {
                    Err(format!("'<', '>', '<=' and '>=' need a number, not {v:?}"))
                } else {
                    Ok(())
                }
            }
            Constraint::Not(e) => e.check_values(),
            Constraint::And(a, b) | Constraint::Or(a, b) => {
                a.check_values()?;
                b.check_values()
            }
        }
    }

    /// True when the node satisfies the expression.
    pub fn matches(&self, n: &NodeFacts) -> bool {
        match self {
            Constraint::Has(name) => match name.as_str() {
                "cpus" => n.cpus > 0,
                "mem" => n.mem_bytes > 0,
                _ => n.labels.get(name).is_some_and(|v| v != "false" && v != "0"),
            },
            Constraint::Cmp(name, op, v) => {
                let num = |have: f64, want: Option<f64>| want.is_some_and(|w| cmp_num(have, *op, w));
                match name.as_str() {
                    "cpus" => num(f64::from(n.cpus), v.parse().ok()),
                    "mem" => num(n.mem_bytes as f64, crate::parse::parse_size(v).ok().map(|b| b as f64)),
                    "arch" => cmp_str(n.arch, *op, v),
                    "os" => cmp_str(n.os, *op, v),
                    "name" => cmp_str(n.name, *op, v),
                    _ => match n.labels.get(name) {
                        None => *op == Op::Ne,
                        Some(have) => match (have.parse::<f64>(), v.parse::<f64>()) {
                            (Ok(h), Ok(w)) => cmp_num(h, *op, w),
                            _ => cmp_str(have, *op, v),
                        },
                    },
                }
            }
            Constraint::Not(e) => !e.matches(n),
            Constraint::And(a, b) => a.matches(n) && b.matches(n),
            Constraint::Or(a, b) => a.matches(n) || b.matches(n),
        }
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Constraint::Has(n) => write!(f, "{n}"),
            Constraint::Cmp(n, op, v) => {
                let op = match op {
                    Op::Eq => "==",
                    Op::Ne => "!=",
                    Op::Ge => ">=",
                    Op::Le => "<=",
                    Op::Gt => ">",
                    Op::Lt => "<",
                };
                if v.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c)) && !v.is_empty() {
                    write!(f, "{n}{op}{v}")
                } else {
                    write!(f, "{n}{op}'{v}'")
                }
            }
            Constraint::Not(e) => write!(f, "!({e})"),
            Constraint::And(a, b) => write!(f, "({a} && {b})"),
            Constraint::Or(a, b) => write!(f, "({a} || {b})"),
        }
    }
}

fn cmp_num(have: f64, op: Op, want: f64) -> bool {
    match op {
        Op::Eq => have == want,
        Op::Ne => have != want,
        Op::Ge => have >= want,
        Op::Le => have <= want,
        Op::Gt => have > want,
        Op::Lt => have < want,
    }
}

fn cmp_str(have: &str, op: Op, want: &str) -> bool {
    match op {
        Op::Eq => have == want,
        Op::Ne => have != want,
        // Ordering on strings is rejected at parse time for labels; for facts it is false.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node<'a>(labels: &'a BTreeMap<String, String>) -> NodeFacts<'a> {
        NodeFacts {
            name: "n1",
            cpus: 8,
            mem_bytes: 256 << 30,
            arch: "x86_64",
            os: "linux",
            labels,
        }
    }

    #[test]
    fn evaluates_against_labels_and_facts() {
        let labels = BTreeMap::from([
            ("gpu".to_string(), String::new()),
            ("rack".to_string(), "a".to_string()),
            ("gen".to_string(), "3".to_string()),
        ]);
        let n = node(&labels);
        let yes = [
            "gpu",
            "gpu && rack==a",
            "mem>=256G",
            "cpus>4 && !slow",
            "rack!=b",
            "gen>=3 || slow",
            "(gpu || slow) && arch==x86_64",
            "name==n1",
            "rack=='a'",
        ];
        let no = [
            "slow",
            "gpu && rack==b",
            "mem>256G",
            "cpus<8",
            "!gpu",
            "gen<3",
            "os==darwin",
            "slow == yes",
        ];
        for e in yes {
            assert!(Constraint::parse(e).unwrap().matches(&n), "{e} should match");
        }
        for e in no {
            assert!(!Constraint::parse(e).unwrap().matches(&n), "{e} should not match");
        }
    }

    #[test]
    fn bad_expressions_are_rejected_with_a_position() {
        for (e, pos) in [
            ("", 0),
            ("gpu &&", 6),
            ("rack=a", 4),
            ("(gpu", 4),
            ("gpu rack", 4),
            ("mem>=lots", 0),
            ("a > b", 0),
            ("x $ y", 2),
        ] {
            let err = Constraint::parse(e).expect_err(e);
            assert_eq!(err.pos, pos, "{e}: {err}");
            assert!(err.to_string().contains("invalid constraint"), "{err}");
        }
    }
}
