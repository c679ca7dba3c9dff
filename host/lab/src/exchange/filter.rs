//! Exchange `-Filter` strings (OPATH), parsed once per call and evaluated per object.
//!
//! Grammar (what the lab accepts; Exchange accepts the same and more):
//! `expr := term ('-or' term)*`, `term := unary ('-and' unary)*`,
//! `unary := '-not' unary | '(' expr ')' | Property op value`, with `op` one of `-eq -ne -lt -le
//! -gt -ge -like -notlike` and `value` a quoted string (`'…'` or `"…"`), `$true`, `$false`,
//! `$null` or a bare word. An outer `{ … }` script block is accepted, as PowerShell users write it.
//!
//! Each cmdlet declares which properties it can filter on and of what kind; an unknown property, an
//! enum value the property can't take, or a date Exchange could not convert is an error, as on
//! Exchange — a filter is never silently ignored.

use std::borrow::Cow;

use crate::utc::Utc;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Text,
    Time,
    Bool,
    /// One of these spellings (compared ignoring case).
    Enum(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Property {
    pub name: &'static str,
    pub kind: Kind,
}

/// The value of a property of one object.
#[derive(Debug, Clone)]
pub(crate) enum Field<'a> {
    Text(Cow<'a, str>),
    Time(Utc),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct FilterError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    NotLike,
}

#[derive(Debug, Clone)]
enum Literal {
    Text(String),
    Time(Utc),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp { prop: usize, op: Op, value: Literal },
}

/// A parsed filter, bound to the property list it was parsed against.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    expr: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Dash(String),
    Quoted(String),
    Var(String),
    Word(String),
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((start, Token::Open));
                i += 1;
            }
            ')' => {
                out.push((start, Token::Close));
                i += 1;
            }
            '\'' | '"' => {
                let quote = c;
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(syntax(text, start)),
                        // A doubled quote is an escaped quote, in both quoting styles.
                        Some(&q) if q == quote && chars.get(i + 1) == Some(&quote) => {
                            value.push(quote);
                            i += 2;
                        }
                        Some(&q) if q == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            value.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push((start, Token::Quoted(value)));
            }
            _ => {
                while i < chars.len() && !chars[i].is_whitespace() && !matches!(chars[i], '(' | ')')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let token = if let Some(op) = word
                    .strip_prefix('-')
                    .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic()))
                {
                    Token::Dash(op.to_ascii_lowercase())
                } else if let Some(var) = word.strip_prefix('$') {
                    Token::Var(var.to_ascii_lowercase())
                } else {
                    Token::Word(word)
                };
                out.push((start, token));
            }
        }
    }
    Ok(out)
}

fn syntax(text: &str, at: usize) -> FilterError {
    FilterError(format!(
        "Invalid filter syntax. For a description of the filter parameter syntax see the command help.\n\"{text}\" at position {}.",
        at + 1
    ))
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<(usize, Token)>,
    at: usize,
    props: &'a [Property],
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|t| &t.1)
    }

    fn position(&self) -> usize {
        self.tokens
            .get(self.at)
            .map_or(self.text.chars().count(), |t| t.0)
    }

    fn fail<T>(&self) -> Result<T, FilterError> {
        Err(syntax(self.text, self.position()))
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).map(|t| t.1.clone());
        self.at += 1;
        t
    }

    fn eat_dash(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Dash(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.term()?;
        while self.eat_dash("or") {
            left = Expr::Or(Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.eat_dash("and") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.eat_dash("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            let e = self.expr()?;
            if self.next() != Some(Token::Close) {
                self.at -= 1;
                return self.fail();
            }
            return Ok(e);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let Some(Token::Word(name)) = self.peek().cloned() else {
            return self.fail();
        };
        let prop = self
            .props
            .iter()
            .position(|p| p.name.eq_ignore_ascii_case(&name))
            .ok_or_else(|| {
                FilterError(format!(
                    "Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"The property '{name}' is not a recognized filterable property.\""
                ))
            })?;
        self.at += 1;
        let op = match self.peek() {
            Some(Token::Dash(w)) => match w.as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "lt" => Op::Lt,
                "le" => Op::Le,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                "like" => Op::Like,
                "notlike" => Op::NotLike,
                _ => return self.fail(),
            },
            _ => return self.fail(),
        };
        self.at += 1;
        let raw = match self.next() {
            Some(Token::Quoted(s) | Token::Word(s)) => Literal::Text(s),
            Some(Token::Var(v)) if v == "true" => Literal::Bool(true),
            Some(Token::Var(v)) if v == "false" => Literal::Bool(false),
            Some(Token::Var(v)) if v == "null" => Literal::Null,
            _ => {
                self.at -= 1;
                return self.fail();
            }
        };
        let value = bind(self.props[prop], raw)?;
        Ok(Expr::Cmp { prop, op, value })
    }
}

/// Converts a literal to the property's kind, as PowerShell does when it binds the filter.
fn bind(prop: Property, raw: Literal) -> Result<Literal, FilterError> {
    let cannot = |v: &str, ty: &str| {
        FilterError(format!(
            "Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"Cannot convert value \"{v}\" to type \"{ty}\".\""
        ))
    };
    Ok(match (prop.kind, raw) {
        (_, Literal::Null) => Literal::Null,
        (Kind::Time, Literal::Text(s)) => {
            Literal::Time(Utc::parse_exchange(&s).ok_or_else(|| cannot(&s, "System.DateTime"))?)
        }
        (Kind::Bool, Literal::Text(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "$true" => Literal::Bool(true),
            "false" | "$false" => Literal::Bool(false),
            _ => return Err(cannot(&s, "System.Boolean")),
        },
        (Kind::Enum(allowed), Literal::Text(s)) => {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&s)) {
                return Err(cannot(&s, prop.name));
            }
            Literal::Text(s)
        }
        (Kind::Text, Literal::Bool(b)) => {
            Literal::Text(if b { "True" } else { "False" }.to_owned())
        }
        (Kind::Time | Kind::Enum(_), Literal::Bool(b)) => {
            return Err(cannot(&b.to_string(), prop.name));
        }
        (_, other) => other,
    })
}

/// Parses `text` against the properties a cmdlet can filter on.
pub(crate) fn parse(text: &str, props: &[Property]) -> Result<Filter, FilterError> {
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(trimmed);
    let mut p = Parser {
        text: inner,
        tokens: tokenize(inner)?,
        at: 0,
        props,
    };
    let expr = p.expr()?;
    if p.at < p.tokens.len() {
        return p.fail();
    }
    Ok(Filter { expr })
}

/// `*` matches any run of characters; comparison ignores case.
fn like(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let v: Vec<char> = value.to_lowercase().chars().collect();
    // Iterative wildcard match with backtracking to the last star.
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn compare(op: Op, field: Option<&Field<'_>>, value: &Literal) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (field, value) {
        (None, Literal::Null) => Some(Ordering::Equal),
        (Some(Field::Text(t)), Literal::Null) if t.is_empty() => Some(Ordering::Equal),
        (_, Literal::Null) | (None, _) => None,
        (Some(Field::Text(t)), Literal::Text(v)) => {
            if matches!(op, Op::Like | Op::NotLike) {
                return like(v, t) == (op == Op::Like);
            }
            Some(t.to_lowercase().cmp(&v.to_lowercase()))
        }
        (Some(Field::Time(t)), Literal::Time(v)) => Some(t.cmp(v)),
        (Some(Field::Bool(b)), Literal::Bool(v)) => Some(b.cmp(v)),
        (Some(Field::Bool(b)), Literal::Text(v)) => Some(b.to_string().cmp(&v.to_lowercase())),
        _ => None,
    };
    match (op, ordering) {
        (Op::Ne, None) => true,
        (Op::NotLike, None) => true,
        (_, None) => false,
        (Op::Eq | Op::Like, Some(o)) => o == Ordering::Equal,
        (Op::Ne | Op::NotLike, Some(o)) => o != Ordering::Equal,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
    }
}

impl Filter {
    /// Evaluates the filter; `get(i)` returns property `i` of the object (`None` for `$null`).
    pub(crate) fn matches<'a>(&self, get: &impl Fn(usize) -> Option<Field<'a>>) -> bool {
        fn eval<'a>(e: &Expr, get: &impl Fn(usize) -> Option<Field<'a>>) -> bool {
            match e {
                Expr::And(a, b) => eval(a, get) && eval(b, get),
                Expr::Or(a, b) => eval(a, get) || eval(b, get),
                Expr::Not(a) => !eval(a, get),
                Expr::Cmp { prop, op, value } => compare(*op, get(*prop).as_ref(), value),
            }
        }
        eval(&self.expr, get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROPS: &[Property] = &[
        Property {
            name: "DeviceAccessState",
            kind: Kind::Enum(&["Allowed", "Blocked", "Quarantined"]),
        },
        Property {
            name: "FirstSyncTime",
            kind: Kind::Time,
        },
        Property {
            name: "DeviceId",
            kind: Kind::Text,
        },
        Property {
            name: "IsManaged",
            kind: Kind::Bool,
        },
    ];

    fn object(
        state: &'static str,
        t: Utc,
        id: &'static str,
    ) -> impl Fn(usize) -> Option<Field<'static>> {
        move |i| match i {
            0 => Some(Field::Text(Cow::Borrowed(state))),
            1 => Some(Field::Time(t)),
            2 => Some(Field::Text(Cow::Borrowed(id))),
            3 => Some(Field::Bool(false)),
            _ => None,
        }
    }

    #[test]
    fn evaluates_common_filters() {
        let t = Utc::from_ymd_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let dev = object("Quarantined", t, "ApplABC123");
        let cases = [
            ("DeviceAccessState -eq 'Quarantined'", true),
            ("{DeviceAccessState -eq \"quarantined\"}", true),
            ("DeviceAccessState -ne 'Quarantined'", false),
            ("FirstSyncTime -gt '2024-05-01T11:59:59Z'", true),
            ("FirstSyncTime -ge '5/1/2024 12:00:00 PM'", true),
            ("FirstSyncTime -gt '5/1/2024 12:00 PM'", false),
            ("DeviceId -like 'appl*'", true),
            ("DeviceId -notlike '*XYZ*'", true),
            (
                "DeviceId -eq 'applabc123' -and -not (DeviceAccessState -eq 'Blocked')",
                true,
            ),
            (
                "(DeviceAccessState -eq 'Blocked') -or (DeviceId -eq 'nope')",
                false,
            ),
            ("IsManaged -eq $false", true),
            ("DeviceId -ne $null", true),
            ("DeviceId -eq 'it''s'", false),
        ];
        for (text, want) in cases {
            let f = parse(text, PROPS).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(f.matches(&dev), want, "{text}");
        }
    }

    #[test]
    fn rejects_what_exchange_rejects() {
        for text in [
            "Foo -eq 'x'",
            "DeviceAccessState -eq 'Sleeping'",
            "FirstSyncTime -gt 'yesterday'",
            "DeviceId -eq",
            "DeviceId 'x'",
            "(DeviceId -eq 'x'",
            "DeviceId -eq 'x' extra",
            "DeviceId -eq 'unterminated",
            "DeviceId -matches 'x'",
        ] {
            assert!(parse(text, PROPS).is_err(), "{text}");
        }
    }

    #[test]
    fn like_handles_stars_anywhere() {
        assert!(like("*", ""));
        assert!(like("a*c", "abbbc"));
        assert!(like("*b*", "abc"));
        assert!(!like("a*d", "abc"));
        assert!(like("A?C", "a?c"));
    }
}
