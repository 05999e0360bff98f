//! The lexer: KQL text → tokens with 1-based line and column positions.

use super::KqlError;

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// An identifier or keyword (`where`, `project-away`, `DeviceName`).
    Ident(String),
    /// A string literal, escapes already decoded.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// A real literal.
    Real(f64),
    /// A timespan literal (`30d`), in ticks of 100 ns.
    TimeSpan(i64),
    /// The raw text inside `datetime(...)`.
    DateTimeRaw(String),
    /// The raw text inside `timespan(...)`.
    TimeSpanRaw(String),
    /// Punctuation or an operator symbol (`|`, `==`, `!has`, `in~`, `..`).
    Sym(&'static str),
    /// End of the query.
    Eof,
}

/// A token with where it starts and its source text.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// The source text of the token (empty at the end of the query).
    pub text: String,
}

/// Ticks (100 ns) per unit.
pub const TICKS_PER_MS: i64 = 10_000;
/// Ticks per second.
pub const TICKS_PER_SEC: i64 = 10_000_000;

/// Identifiers that join a following `-name` into one operator name.
const HYPHEN_PREFIXES: &[&str] = &["project", "mv", "top", "make", "parse", "range", "sample"];

/// Multi-character symbols, longest first.
const SYMBOLS: &[&str] = &[
    "!startswith",
    "!endswith",
    "!contains",
    "!between",
    "!has",
    "!in~",
    "!in",
    "in~",
    "==",
    "!=",
    "=~",
    "!~",
    "<=",
    ">=",
    "..",
    "<>",
    "|",
    ";",
    ",",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "=",
    "<",
    ">",
    "+",
    "-",
    "*",
    "/",
    "%",
    ":",
    ".",
];

struct Cursor<'a> {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    col: usize,
    _src: &'a str,
}

impl Cursor<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }
    fn starts_with(&self, s: &str) -> bool {
        s.chars().enumerate().all(|(i, c)| self.peek(i) == Some(c))
    }
    fn text(&self, from: usize) -> String {
        self.chars[from..self.pos].iter().collect()
    }
}

fn syntax(token: &str, line: usize, col: usize) -> KqlError {
    KqlError::Syntax {
        token: token.to_string(),
        line,
        col,
    }
}

/// Splits a query into tokens (the last one is [`Tok::Eof`]).
pub fn lex(src: &str) -> Result<Vec<Token>, KqlError> {
    let mut c = Cursor {
        chars: src.chars().collect(),
        pos: 0,
        line: 1,
        col: 1,
        _src: src,
    };
    let mut out = Vec::new();
    loop {
        // Whitespace and comments.
        while let Some(ch) = c.peek(0) {
            if ch.is_whitespace() {
                c.bump();
            } else if ch == '/' && c.peek(1) == Some('/') {
                while let Some(ch) = c.peek(0) {
                    if ch == '\n' {
                        break;
                    }
                    c.bump();
                }
            } else {
                break;
            }
        }
        let (line, col, start) = (c.line, c.col, c.pos);
        let Some(ch) = c.peek(0) else {
            out.push(Token {
                tok: Tok::Eof,
                line,
                col,
                text: String::new(),
            });
            return Ok(out);
        };
        let tok = if ch == '"' || ch == '\'' {
            Tok::Str(quoted(&mut c)?)
        } else if ch == '@' && matches!(c.peek(1), Some('"') | Some('\'')) {
            c.bump();
            Tok::Str(verbatim(&mut c, line, col)?)
        } else if ch.is_ascii_digit() {
            number(&mut c)?
        } else if ch.is_alphabetic() || ch == '_' || ch == '$' {
            let mut name = String::new();
            while let Some(ch) = c.peek(0) {
                if ch.is_alphanumeric() || ch == '_' || ch == '$' {
                    name.push(ch);
                    c.bump();
                } else {
                    break;
                }
            }
            if HYPHEN_PREFIXES.contains(&name.as_str())
                && c.peek(0) == Some('-')
                && c.peek(1).is_some_and(|ch| ch.is_ascii_alphabetic())
            {
                c.bump();
                name.push('-');
                while let Some(ch) = c.peek(0) {
                    if ch.is_alphanumeric() || ch == '_' || ch == '-' {
                        name.push(ch);
                        c.bump();
                    } else {
                        break;
                    }
                }
            }
            if name == "in" && c.peek(0) == Some('~') {
                c.bump();
                Tok::Sym("in~")
            } else if name == "datetime" || name == "timespan" {
                // The argument is raw text (`datetime(2025-01-01T10:00:00Z)`).
                let save = (c.pos, c.line, c.col);
                while c.peek(0).is_some_and(|ch| ch == ' ' || ch == '\t') {
                    c.bump();
                }
                if c.peek(0) == Some('(') {
                    c.bump();
                    let mut raw = String::new();
                    loop {
                        match c.peek(0) {
                            Some(')') => {
                                c.bump();
                                break;
                            }
                            Some('\n') | None => {
                                let t = if c.peek(0).is_none() { "" } else { "\n" };
                                return Err(syntax(t, c.line, c.col));
                            }
                            Some(ch) => {
                                raw.push(ch);
                                c.bump();
                            }
                        }
                    }
                    let raw = raw.trim().to_string();
                    if name == "datetime" {
                        Tok::DateTimeRaw(raw)
                    } else {
                        Tok::TimeSpanRaw(raw)
                    }
                } else {
                    (c.pos, c.line, c.col) = save;
                    Tok::Ident(name)
                }
            } else {
                Tok::Ident(name)
            }
        } else if let Some(sym) = SYMBOLS.iter().find(|s| c.starts_with(s)) {
            // `!in` must not swallow the start of `!inner`; `!has` not `!has_cs`.
            let word_sym = sym.starts_with('!')
                && sym[1..].starts_with(|ch: char| ch.is_ascii_alphabetic())
                && !sym.ends_with('~');
            let next = c.peek(sym.chars().count());
            if word_sym && next.is_some_and(|n| n.is_alphanumeric() || n == '_') {
                // e.g. `!has_cs`: read the whole word and let the parser refuse it.
                c.bump();
                let mut name = String::from("!");
                while let Some(ch) = c.peek(0) {
                    if ch.is_alphanumeric() || ch == '_' {
                        name.push(ch);
                        c.bump();
                    } else {
                        break;
                    }
                }
                Tok::Ident(name)
            } else {
                for _ in 0..sym.chars().count() {
                    c.bump();
                }
                Tok::Sym(sym)
            }
        } else {
            return Err(syntax(&ch.to_string(), line, col));
        };
        out.push(Token {
            tok,
            line,
            col,
            text: c.text(start),
        });
    }
}

fn quoted(c: &mut Cursor<'_>) -> Result<String, KqlError> {
    let (line, col) = (c.line, c.col);
    let quote = c.bump().unwrap_or('"');
    let mut s = String::new();
    loop {
        let (l, k) = (c.line, c.col);
        match c.bump() {
            None => return Err(syntax(&quote.to_string(), line, col)),
            Some('\n') => return Err(syntax(&quote.to_string(), line, col)),
            Some(ch) if ch == quote => return Ok(s),
            Some('\\') => match c.bump() {
                Some('"') => s.push('"'),
                Some('\'') => s.push('\''),
                Some('\\') => s.push('\\'),
                Some('t') => s.push('\t'),
                Some('n') => s.push('\n'),
                Some('r') => s.push('\r'),
                Some(other) => return Err(syntax(&format!("\\{other}"), l, k)),
                None => return Err(syntax(&quote.to_string(), line, col)),
            },
            Some(ch) => s.push(ch),
        }
    }
}

fn verbatim(c: &mut Cursor<'_>, line: usize, col: usize) -> Result<String, KqlError> {
    let quote = c.bump().unwrap_or('"');
    let mut s = String::new();
    loop {
        match c.bump() {
            None | Some('\n') => return Err(syntax(&format!("@{quote}"), line, col)),
            Some(ch) if ch == quote => {
                if c.peek(0) == Some(quote) {
                    c.bump();
                    s.push(quote);
                } else {
                    return Ok(s);
                }
            }
            Some(ch) => s.push(ch),
        }
    }
}

fn number(c: &mut Cursor<'_>) -> Result<Tok, KqlError> {
    let (line, col, start) = (c.line, c.col, c.pos);
    let mut text = String::new();
    let mut real = false;
    while let Some(ch) = c.peek(0) {
        if ch.is_ascii_digit() {
            text.push(ch);
            c.bump();
        } else if ch == '.' && !real && c.peek(1).is_some_and(|d| d.is_ascii_digit()) {
            real = true;
            text.push(ch);
            c.bump();
        } else if (ch == 'e' || ch == 'E')
            && (c.peek(1).is_some_and(|d| d.is_ascii_digit())
                || (matches!(c.peek(1), Some('+') | Some('-'))
                    && c.peek(2).is_some_and(|d| d.is_ascii_digit())))
        {
            real = true;
            text.push(ch);
            c.bump();
            if let Some(sign) = c.peek(0).filter(|s| *s == '+' || *s == '-') {
                text.push(sign);
                c.bump();
            }
        } else {
            break;
        }
    }
    // A unit suffix makes it a timespan.
    let mut unit = String::new();
    while let Some(ch) = c.peek(0) {
        if ch.is_ascii_alphabetic() {
            unit.push(ch);
            c.bump();
        } else {
            break;
        }
    }
    let bad = |c: &Cursor<'_>| syntax(&c.text(start), line, col);
    if unit.is_empty() {
        if real {
            return text.parse::<f64>().map(Tok::Real).map_err(|_| bad(c));
        }
        return text.parse::<i64>().map(Tok::Int).map_err(|_| bad(c));
    }
    let value: f64 = text.parse().map_err(|_| bad(c))?;
    let ticks = unit_ticks(&unit).ok_or_else(|| bad(c))?;
    Ok(Tok::TimeSpan((value * ticks as f64).round() as i64))
}

/// Ticks in one `unit` of a timespan literal.
pub fn unit_ticks(unit: &str) -> Option<i64> {
    Some(match unit {
        "d" | "day" | "days" => 86_400 * TICKS_PER_SEC,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600 * TICKS_PER_SEC,
        "m" | "min" | "minute" | "minutes" => 60 * TICKS_PER_SEC,
        "s" | "sec" | "second" | "seconds" => TICKS_PER_SEC,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => TICKS_PER_MS,
        "microsecond" | "microseconds" => 10,
        "tick" | "ticks" => 1,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn symbols_words_and_literals() {
        assert_eq!(
            toks("T | where A !has 'x' and B in~ (1, 2.5) // done"),
            vec![
                Tok::Ident("T".into()),
                Tok::Sym("|"),
                Tok::Ident("where".into()),
                Tok::Ident("A".into()),
                Tok::Sym("!has"),
                Tok::Str("x".into()),
                Tok::Ident("and".into()),
                Tok::Ident("B".into()),
                Tok::Sym("in~"),
                Tok::Sym("("),
                Tok::Int(1),
                Tok::Sym(","),
                Tok::Real(2.5),
                Tok::Sym(")"),
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn timespans_and_hyphenated_operators() {
        assert_eq!(
            toks("project-away 30d 12h 15m 10s 100ms"),
            vec![
                Tok::Ident("project-away".into()),
                Tok::TimeSpan(30 * 86_400 * TICKS_PER_SEC),
                Tok::TimeSpan(12 * 3_600 * TICKS_PER_SEC),
                Tok::TimeSpan(15 * 60 * TICKS_PER_SEC),
                Tok::TimeSpan(10 * TICKS_PER_SEC),
                Tok::TimeSpan(100 * TICKS_PER_MS),
                Tok::Eof,
            ]
        );
        assert_eq!(
            toks("a-b"),
            vec![
                Tok::Ident("a".into()),
                Tok::Sym("-"),
                Tok::Ident("b".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn string_escapes_and_verbatim() {
        assert_eq!(
            toks(r#""a\"b\\c\td\ne\rf\'" 'it\'s' @"C:\x""y" @'o''k'"#),
            vec![
                Tok::Str("a\"b\\c\td\ne\rf'".into()),
                Tok::Str("it's".into()),
                Tok::Str("C:\\x\"y".into()),
                Tok::Str("o'k".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn bad_strings_are_syntax_errors_with_positions() {
        let e = lex("T\n| where A == \"abc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Query could not be parsed at '\"' on line [2,14]"
        );
        let e = lex("T | where A == 'a\\qb'").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Query could not be parsed at '\\q' on line [1,18]"
        );
        let e = lex("T | where A == 'a\nb'").unwrap_err();
        assert!(e.to_string().contains("on line [1,16]"), "{e}");
    }

    #[test]
    fn datetime_raw_text() {
        assert_eq!(
            toks("datetime(2025-01-01T10:00:00Z) timespan(1.02:00:00)"),
            vec![
                Tok::DateTimeRaw("2025-01-01T10:00:00Z".into()),
                Tok::TimeSpanRaw("1.02:00:00".into()),
                Tok::Eof
            ]
        );
    }
}
