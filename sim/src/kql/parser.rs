//! The parser: tokens → [`Query`]. Operators and functions outside the subset are refused
//! here, so [`super::parse`] alone tells whether a query is in the subset.

use super::ast::{Agg, AggFn, BinOp, Expr, Named, Op, Query, SortKey, Source, Tabular};
use super::lexer::{Tok, Token, lex};
use super::{KqlError, Value, parse_datetime, parse_timespan};

/// Scalar functions of the subset.
pub const SCALAR_FUNCTIONS: &[&str] = &[
    "ago",
    "now",
    "tolower",
    "toupper",
    "strlen",
    "isempty",
    "isnotempty",
    "isnull",
    "isnotnull",
    "tostring",
    "strcat",
    "iff",
    "iif",
    "bin",
    "not",
];

/// Aggregates of the subset (`summarize`).
pub const AGGREGATES: &[&str] = &["count", "dcount", "min", "max", "make_set", "sum", "avg"];

/// Tabular operators of the subset.
pub const OPERATORS: &[&str] = &[
    "where",
    "filter",
    "project",
    "project-away",
    "extend",
    "summarize",
    "order",
    "sort",
    "take",
    "limit",
    "top",
    "distinct",
    "count",
];

/// Kusto operators outside the subset (refused by name).
const UNSUPPORTED_OPERATORS: &[&str] = &[
    "join",
    "lookup",
    "union",
    "mv-expand",
    "mv-apply",
    "parse",
    "parse-where",
    "parse-kv",
    "project-rename",
    "project-keep",
    "project-reorder",
    "make-series",
    "render",
    "evaluate",
    "invoke",
    "as",
    "getschema",
    "search",
    "find",
    "top-nested",
    "top-hitters",
    "facet",
    "fork",
    "partition",
    "reduce",
    "sample",
    "sample-distinct",
    "scan",
    "serialize",
    "range",
    "print",
    "externaldata",
    "materialize",
    "consume",
    "make-graph",
    "graph-match",
];

/// Kusto string operators outside the subset.
const UNSUPPORTED_STRING_OPERATORS: &[&str] = &[
    "has_cs",
    "!has_cs",
    "contains_cs",
    "!contains_cs",
    "startswith_cs",
    "!startswith_cs",
    "endswith_cs",
    "!endswith_cs",
    "hasprefix",
    "!hasprefix",
    "hassuffix",
    "!hassuffix",
    "hasprefix_cs",
    "hassuffix_cs",
    "has_any",
    "has_all",
    "matches",
    "like",
];

/// Kusto functions outside the subset (refused by name; other unknown names are unresolved).
const UNSUPPORTED_FUNCTIONS: &[&str] = &[
    "countif",
    "dcountif",
    "sumif",
    "avgif",
    "minif",
    "maxif",
    "arg_max",
    "arg_min",
    "make_list",
    "make_list_if",
    "make_set_if",
    "make_bag",
    "any",
    "take_any",
    "percentile",
    "percentiles",
    "stdev",
    "variance",
    "hll",
    "parse_json",
    "todynamic",
    "parse_path",
    "parse_url",
    "parse_command_line",
    "extract",
    "extract_all",
    "split",
    "substring",
    "indexof",
    "replace",
    "replace_string",
    "replace_regex",
    "trim",
    "trim_start",
    "trim_end",
    "format_datetime",
    "format_timespan",
    "datetime_diff",
    "datetime_add",
    "datetime_part",
    "startofday",
    "startofweek",
    "startofmonth",
    "endofday",
    "dayofweek",
    "todatetime",
    "totimespan",
    "toint",
    "tolong",
    "toreal",
    "todouble",
    "tobool",
    "toguid",
    "coalesce",
    "case",
    "array_length",
    "array_concat",
    "set_union",
    "set_intersect",
    "bag_pack",
    "pack",
    "pack_array",
    "strcat_array",
    "strcat_delim",
    "base64_decode_tostring",
    "base64_encode_tostring",
    "url_decode",
    "url_encode",
    "hash",
    "hash_sha256",
    "ipv4_is_private",
    "ipv4_is_match",
    "ipv4_is_in_range",
    "geo_info_from_ip_address",
    "column_ifexists",
    "bin_at",
    "floor",
    "round",
    "abs",
    "log",
    "exp",
    "pow",
    "sqrt",
    "row_number",
    "prev",
    "next",
    "series_stats",
    "reverse",
    "countof",
    "string_size",
    "unixtime_seconds_todatetime",
    "make_datetime",
    "make_timespan",
    "tohex",
    "zip",
];

/// Parses a whole query.
pub fn parse(src: &str) -> Result<Query, KqlError> {
    let tokens = lex(src)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        op: "let".to_string(),
    };
    p.query()
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// The operator being parsed (for unresolved-name messages).
    op: String,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }
    fn peek_at(&self, ahead: usize) -> &Tok {
        &self.tokens[(self.pos + ahead).min(self.tokens.len() - 1)].tok
    }
    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }
    fn error_here(&self) -> KqlError {
        let t = self.peek();
        KqlError::Syntax {
            token: t.text.clone(),
            line: t.line,
            col: t.col,
        }
    }
    fn is_sym(&self, s: &str) -> bool {
        matches!(&self.peek().tok, Tok::Sym(x) if *x == s)
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(x) if x == w)
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        if self.is_sym(s) {
            self.next();
            true
        } else {
            false
        }
    }
    fn eat_word(&mut self, w: &str) -> bool {
        if self.is_word(w) {
            self.next();
            true
        } else {
            false
        }
    }
    fn expect_sym(&mut self, s: &str) -> Result<(), KqlError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.error_here())
        }
    }
    fn ident(&mut self) -> Result<String, KqlError> {
        match &self.peek().tok {
            Tok::Ident(name) if !name.starts_with('!') => {
                let n = name.clone();
                self.next();
                Ok(n)
            }
            _ => Err(self.error_here()),
        }
    }

    fn query(&mut self) -> Result<Query, KqlError> {
        let mut lets = Vec::new();
        let mut body = None;
        loop {
            if matches!(self.peek().tok, Tok::Eof) {
                break;
            }
            if self.eat_sym(";") {
                continue;
            }
            if self.is_word("let") {
                if body.is_some() {
                    return Err(self.error_here());
                }
                self.next();
                self.op = "let".into();
                let name = self.ident()?;
                self.expect_sym("=")?;
                if self.is_sym("(") && matches!(self.peek_at(1), Tok::Sym(")") | Tok::Ident(_)) {
                    // `let f = (x: long) { ... }` or `let t = (T | ...)`.
                    if matches!(self.peek_at(2), Tok::Sym(":") | Tok::Sym(")")) {
                        return Err(KqlError::UnsupportedOperator(
                            "let (user-defined function)".into(),
                        ));
                    }
                }
                let expr = self.expr()?;
                if self.is_sym("|") {
                    return Err(KqlError::UnsupportedOperator("let (tabular)".into()));
                }
                if !self.is_sym(";") {
                    return Err(self.error_here());
                }
                lets.push((name, expr));
                continue;
            }
            if body.is_some() {
                return Err(KqlError::Semantic(
                    "Only one tabular expression per query is supported".into(),
                ));
            }
            body = Some(self.tabular()?);
            if !self.is_sym(";") && !matches!(self.peek().tok, Tok::Eof) {
                return Err(self.error_here());
            }
        }
        match body {
            Some(body) => Ok(Query { lets, body }),
            None => Err(self.error_here()),
        }
    }

    fn tabular(&mut self) -> Result<Tabular, KqlError> {
        let source = self.source()?;
        let mut ops = Vec::new();
        while self.eat_sym("|") {
            ops.push(self.operator()?);
        }
        Ok(Tabular { source, ops })
    }

    fn source(&mut self) -> Result<Source, KqlError> {
        if self.eat_sym("(") {
            let t = self.tabular()?;
            self.expect_sym(")")?;
            return Ok(Source::Union(vec![t]));
        }
        if self.is_word("union") {
            self.next();
            self.op = "union".into();
            let mut parts = Vec::new();
            loop {
                if let Tok::Ident(w) = &self.peek().tok
                    && matches!(self.peek_at(1), Tok::Sym("="))
                {
                    return Err(KqlError::UnsupportedOperator(format!("union {w}=")));
                }
                if self.eat_sym("(") {
                    parts.push(self.tabular()?);
                    self.expect_sym(")")?;
                } else {
                    let name = self.ident()?;
                    if name.contains('*') {
                        return Err(KqlError::UnsupportedOperator("union wildcard".into()));
                    }
                    parts.push(Tabular {
                        source: Source::Table(name),
                        ops: Vec::new(),
                    });
                }
                if !self.eat_sym(",") {
                    break;
                }
            }
            return Ok(Source::Union(parts));
        }
        if let Tok::Ident(name) = &self.peek().tok
            && UNSUPPORTED_OPERATORS.contains(&name.as_str())
            && name != "union"
            && !name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        {
            return Err(KqlError::UnsupportedOperator(name.clone()));
        }
        Ok(Source::Table(self.ident()?))
    }

    fn operator(&mut self) -> Result<Op, KqlError> {
        let name = match &self.peek().tok {
            Tok::Ident(n) => n.clone(),
            _ => return Err(self.error_here()),
        };
        if UNSUPPORTED_OPERATORS.contains(&name.as_str()) {
            return Err(KqlError::UnsupportedOperator(name));
        }
        if !OPERATORS.contains(&name.as_str()) {
            return Err(self.error_here());
        }
        self.next();
        self.op = match name.as_str() {
            "filter" => "where".into(),
            "sort" => "order".into(),
            "limit" => "take".into(),
            n => n.into(),
        };
        Ok(match name.as_str() {
            "where" | "filter" => Op::Where(self.expr()?),
            "project" => Op::Project(self.named_list()?),
            "extend" => Op::Extend(self.named_list()?),
            "project-away" => {
                let mut cols = vec![self.ident()?];
                while self.eat_sym(",") {
                    cols.push(self.ident()?);
                }
                Op::ProjectAway(cols)
            }
            "summarize" => self.summarize()?,
            "order" | "sort" => {
                if !self.eat_word("by") {
                    return Err(self.error_here());
                }
                let mut keys = vec![self.sort_key()?];
                while self.eat_sym(",") {
                    keys.push(self.sort_key()?);
                }
                Op::Sort(keys)
            }
            "take" | "limit" => Op::Take(self.expr()?),
            "top" => {
                let n = self.additive()?;
                if !self.eat_word("by") {
                    return Err(self.error_here());
                }
                Op::Top(n, self.sort_key()?)
            }
            "distinct" => {
                if self.eat_sym("*") {
                    Op::Distinct(Vec::new())
                } else {
                    let mut cols = vec![self.ident()?];
                    while self.eat_sym(",") {
                        cols.push(self.ident()?);
                    }
                    Op::Distinct(cols)
                }
            }
            _ => Op::Count,
        })
    }

    fn sort_key(&mut self) -> Result<SortKey, KqlError> {
        let expr = self.expr()?;
        let desc = if self.eat_word("asc") {
            false
        } else {
            self.eat_word("desc");
            true
        };
        let mut nulls_first = !desc;
        if self.eat_word("nulls") {
            if self.eat_word("first") {
                nulls_first = true;
            } else if self.eat_word("last") {
                nulls_first = false;
            } else {
                return Err(self.error_here());
            }
        }
        Ok(SortKey {
            expr,
            desc,
            nulls_first,
        })
    }

    fn named_list(&mut self) -> Result<Vec<Named>, KqlError> {
        let mut out = vec![self.named()?];
        while self.eat_sym(",") {
            out.push(self.named()?);
        }
        Ok(out)
    }

    fn named(&mut self) -> Result<Named, KqlError> {
        if let Tok::Ident(n) = &self.peek().tok
            && matches!(self.peek_at(1), Tok::Sym("="))
        {
            let name = n.clone();
            self.next();
            self.next();
            return Ok(Named {
                name: Some(name),
                expr: self.expr()?,
            });
        }
        Ok(Named {
            name: None,
            expr: self.expr()?,
        })
    }

    fn summarize(&mut self) -> Result<Op, KqlError> {
        let mut aggs = Vec::new();
        if !self.is_word("by") {
            loop {
                let mut name = None;
                if let Tok::Ident(n) = &self.peek().tok
                    && matches!(self.peek_at(1), Tok::Sym("="))
                {
                    name = Some(n.clone());
                    self.next();
                    self.next();
                }
                let func_name = self.ident_before_paren()?;
                let func = match func_name.as_str() {
                    "count" => AggFn::Count,
                    "dcount" => AggFn::DCount,
                    "min" => AggFn::Min,
                    "max" => AggFn::Max,
                    "make_set" => AggFn::MakeSet,
                    "sum" => AggFn::Sum,
                    "avg" => AggFn::Avg,
                    other => return Err(self.unknown_function(other)),
                };
                self.expect_sym("(")?;
                let args = self.args()?;
                let arg = match (&func, args.len()) {
                    (AggFn::Count, 0) => None,
                    (AggFn::Count, _) => {
                        return Err(KqlError::Semantic(
                            "count(): function expects 0 argument(s)".into(),
                        ));
                    }
                    (_, 1) => args.into_iter().next(),
                    (_, _) => {
                        return Err(KqlError::Semantic(format!(
                            "{func_name}(): function expects 1 argument(s)"
                        )));
                    }
                };
                aggs.push(Agg { name, func, arg });
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let mut by = Vec::new();
        if self.eat_word("by") {
            by = self.named_list()?;
        }
        if aggs.is_empty() && by.is_empty() {
            return Err(self.error_here());
        }
        Ok(Op::Summarize { aggs, by })
    }

    fn ident_before_paren(&mut self) -> Result<String, KqlError> {
        let name = self.ident()?;
        if !self.is_sym("(") {
            self.pos -= 1;
            return Err(self.error_here());
        }
        Ok(name)
    }

    fn unknown_function(&self, name: &str) -> KqlError {
        if UNSUPPORTED_FUNCTIONS.contains(&name)
            || AGGREGATES.contains(&name)
            || SCALAR_FUNCTIONS.contains(&name)
        {
            KqlError::UnsupportedFunction(name.to_string())
        } else {
            KqlError::UnresolvedColumn {
                operator: self.op.clone(),
                name: name.to_string(),
            }
        }
    }

    fn args(&mut self) -> Result<Vec<Expr>, KqlError> {
        let mut args = Vec::new();
        if self.eat_sym(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat_sym(")") {
                return Ok(args);
            }
            self.expect_sym(",")?;
        }
    }

    /// A scalar expression.
    pub fn expr(&mut self) -> Result<Expr, KqlError> {
        let mut left = self.and()?;
        while self.eat_word("or") {
            let right = self.and()?;
            left = Expr::Bin(BinOp::Or, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, KqlError> {
        let mut left = self.comparison()?;
        while self.eat_word("and") {
            let right = self.comparison()?;
            left = Expr::Bin(BinOp::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Expr, KqlError> {
        let left = self.additive()?;
        let tok = self.peek().tok.clone();
        let op = match &tok {
            Tok::Sym(s) => match *s {
                "==" => Some(BinOp::Eq),
                "!=" | "<>" => Some(BinOp::Ne),
                "=~" => Some(BinOp::EqCi),
                "!~" => Some(BinOp::NeCi),
                "<" => Some(BinOp::Lt),
                "<=" => Some(BinOp::Le),
                ">" => Some(BinOp::Gt),
                ">=" => Some(BinOp::Ge),
                "!has" => Some(BinOp::NotHas),
                "!contains" => Some(BinOp::NotContains),
                "!startswith" => Some(BinOp::NotStartsWith),
                "!endswith" => Some(BinOp::NotEndsWith),
                "in~" | "!in" | "!in~" => {
                    self.next();
                    return self.in_list(left, s.starts_with('!'), s.ends_with('~'));
                }
                "!between" => {
                    self.next();
                    return self.between(left, true);
                }
                _ => None,
            },
            Tok::Ident(w) => match w.as_str() {
                "has" => Some(BinOp::Has),
                "contains" => Some(BinOp::Contains),
                "startswith" => Some(BinOp::StartsWith),
                "endswith" => Some(BinOp::EndsWith),
                "in" => {
                    self.next();
                    return self.in_list(left, false, false);
                }
                "between" => {
                    self.next();
                    return self.between(left, false);
                }
                w if UNSUPPORTED_STRING_OPERATORS.contains(&w) => {
                    return Err(KqlError::UnsupportedOperator(w.to_string()));
                }
                _ => None,
            },
            _ => None,
        };
        let Some(op) = op else {
            return Ok(left);
        };
        self.next();
        let right = self.additive()?;
        Ok(Expr::Bin(op, Box::new(left), Box::new(right)))
    }

    fn in_list(&mut self, left: Expr, negated: bool, ci: bool) -> Result<Expr, KqlError> {
        let list = if self.eat_sym("(") {
            self.args()?
        } else {
            // `x in (list)` needs parentheses; a let name of a dynamic list may stand alone.
            vec![self.primary()?]
        };
        Ok(Expr::In {
            expr: Box::new(left),
            list,
            negated,
            ci,
        })
    }

    fn between(&mut self, left: Expr, negated: bool) -> Result<Expr, KqlError> {
        self.expect_sym("(")?;
        let lo = self.additive()?;
        self.expect_sym("..")?;
        let hi = self.additive()?;
        self.expect_sym(")")?;
        Ok(Expr::Between {
            expr: Box::new(left),
            lo: Box::new(lo),
            hi: Box::new(hi),
            negated,
        })
    }

    fn additive(&mut self) -> Result<Expr, KqlError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = if self.eat_sym("+") {
                BinOp::Add
            } else if self.eat_sym("-") {
                BinOp::Sub
            } else {
                return Ok(left);
            };
            let right = self.multiplicative()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, KqlError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_sym("*") {
                BinOp::Mul
            } else if self.eat_sym("/") {
                BinOp::Div
            } else if self.eat_sym("%") {
                BinOp::Mod
            } else {
                return Ok(left);
            };
            let right = self.unary()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, KqlError> {
        if self.eat_sym("-") {
            return Ok(match self.unary()? {
                Expr::Lit(Value::Int(i)) => Expr::Lit(Value::Int(-i)),
                Expr::Lit(Value::Real(r)) => Expr::Lit(Value::Real(-r)),
                Expr::Lit(Value::TimeSpan(t)) => Expr::Lit(Value::TimeSpan(-t)),
                e => Expr::Neg(Box::new(e)),
            });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, KqlError> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Str(s) => {
                self.next();
                Ok(Expr::Lit(Value::Str(s)))
            }
            Tok::Int(i) => {
                self.next();
                Ok(Expr::Lit(Value::Int(i)))
            }
            Tok::Real(r) => {
                self.next();
                Ok(Expr::Lit(Value::Real(r)))
            }
            Tok::TimeSpan(ts) => {
                self.next();
                Ok(Expr::Lit(Value::TimeSpan(ts)))
            }
            Tok::DateTimeRaw(raw) => {
                let v = if raw == "null" {
                    Some(Value::Null)
                } else {
                    parse_datetime(&raw).map(Value::DateTime)
                };
                match v {
                    Some(v) => {
                        self.next();
                        Ok(Expr::Lit(v))
                    }
                    None => Err(self.error_here()),
                }
            }
            Tok::TimeSpanRaw(raw) => match parse_timespan(&raw) {
                Some(ts) => {
                    self.next();
                    Ok(Expr::Lit(Value::TimeSpan(ts)))
                }
                None => Err(self.error_here()),
            },
            Tok::Sym("(") => {
                self.next();
                let e = self.expr()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Ident(name) if !name.starts_with('!') => {
                self.next();
                match name.as_str() {
                    "true" => return Ok(Expr::Lit(Value::Bool(true))),
                    "false" => return Ok(Expr::Lit(Value::Bool(false))),
                    "null" => return Ok(Expr::Lit(Value::Null)),
                    _ => {}
                }
                if !self.is_sym("(") {
                    return Ok(Expr::Name(name));
                }
                if name == "dynamic" {
                    self.next();
                    let v = self.dynamic_literal()?;
                    self.expect_sym(")")?;
                    return Ok(Expr::Lit(Value::Dynamic(v)));
                }
                if !SCALAR_FUNCTIONS.contains(&name.as_str()) {
                    self.pos -= 1;
                    return Err(self.unknown_function(&name));
                }
                self.next();
                let args = self.args()?;
                check_arity(&name, args.len())?;
                Ok(Expr::Call(name, args))
            }
            _ => Err(self.error_here()),
        }
    }

    fn dynamic_literal(&mut self) -> Result<serde_json::Value, KqlError> {
        let t = self.peek().clone();
        let v = match t.tok {
            Tok::Sym("[") => {
                self.next();
                let mut items = Vec::new();
                if !self.eat_sym("]") {
                    loop {
                        items.push(self.dynamic_literal()?);
                        if self.eat_sym("]") {
                            break;
                        }
                        self.expect_sym(",")?;
                    }
                }
                return Ok(serde_json::Value::Array(items));
            }
            Tok::Sym("-") => {
                self.next();
                return match self.dynamic_literal()? {
                    serde_json::Value::Number(n) => Ok(n
                        .as_i64()
                        .map(|i| serde_json::Value::from(-i))
                        .or_else(|| n.as_f64().map(|f| serde_json::Value::from(-f)))
                        .unwrap_or(serde_json::Value::Null)),
                    _ => Err(self.error_here()),
                };
            }
            Tok::Str(s) => serde_json::Value::String(s),
            Tok::Int(i) => serde_json::Value::from(i),
            Tok::Real(r) => serde_json::Value::from(r),
            Tok::Ident(w) if w == "true" => serde_json::Value::Bool(true),
            Tok::Ident(w) if w == "false" => serde_json::Value::Bool(false),
            Tok::Ident(w) if w == "null" => serde_json::Value::Null,
            Tok::Sym("{") => {
                return Err(KqlError::UnsupportedFunction(
                    "dynamic (property bag)".into(),
                ));
            }
            _ => return Err(self.error_here()),
        };
        self.next();
        Ok(v)
    }
}

fn check_arity(name: &str, n: usize) -> Result<(), KqlError> {
    let (lo, hi) = match name {
        "now" => (0, 1),
        "strcat" => (1, 64),
        "iff" | "iif" => (3, 3),
        "bin" => (2, 2),
        _ => (1, 1),
    };
    if n < lo || n > hi {
        return Err(KqlError::Semantic(format!(
            "{name}(): function expects {lo} argument(s)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lets_union_and_operators() {
        let q = parse(
            "let since = ago(7d);\nlet names = dynamic(['a.exe', 'b.exe']);\n\
             union DeviceProcessEvents, (DeviceFileEvents | where FileName in (names))\n\
             | where Timestamp > since and not(isempty(FileName))\n\
             | summarize n = count(), dcount(DeviceId) by DeviceName\n\
             | order by n desc, DeviceName asc | take 10",
        )
        .unwrap();
        assert_eq!(q.lets.len(), 2);
        assert!(matches!(q.body.source, Source::Union(ref p) if p.len() == 2));
        assert_eq!(q.body.ops.len(), 4);
    }

    #[test]
    fn syntax_error_names_token_and_position() {
        let e = parse("DeviceInfo\n| where DeviceName == == 'x'").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Query could not be parsed at '==' on line [2,23]"
        );
        let e = parse("DeviceInfo | where").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Query could not be parsed at '' on line [1,19]"
        );
        let e = parse("DeviceInfo | frobnicate").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Query could not be parsed at 'frobnicate' on line [1,14]"
        );
    }

    #[test]
    fn unsupported_operators_and_functions_are_named() {
        assert_eq!(
            parse("T | mv-expand x").unwrap_err().to_string(),
            "Operator 'mv-expand' is not supported"
        );
        assert_eq!(
            parse("T | join (U) on X").unwrap_err().to_string(),
            "Operator 'join' is not supported"
        );
        assert_eq!(
            parse("T | where A has_cs 'x'").unwrap_err().to_string(),
            "Operator 'has_cs' is not supported"
        );
        assert_eq!(
            parse("T | where A !has_cs 'x'").unwrap_err().to_string(),
            "Operator '!has_cs' is not supported"
        );
        assert_eq!(
            parse("T | extend j = parse_json(A)")
                .unwrap_err()
                .to_string(),
            "Function 'parse_json' is not supported"
        );
        assert_eq!(
            parse("T | summarize arg_max(Timestamp, *) by A")
                .unwrap_err()
                .to_string(),
            "Function 'arg_max' is not supported"
        );
        assert_eq!(
            parse("T | where frob(A)").unwrap_err().to_string(),
            "'where' operator: Failed to resolve column or scalar expression named 'frob'"
        );
        assert_eq!(
            parse("let f = (x: long) { x }; T").unwrap_err().to_string(),
            "Operator 'let (user-defined function)' is not supported"
        );
    }

    #[test]
    fn comments_are_ignored() {
        let q = parse("// hunt\nT // the table\n| take 5 // five\n").unwrap();
        assert_eq!(q.body.ops, vec![Op::Take(Expr::Lit(Value::Int(5)))]);
    }
}
