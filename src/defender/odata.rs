//! A small typed builder of OData `$filter` expressions. Every value goes through one
//! quoting rule ([`literal`]): it is wrapped in single quotes with each `'` doubled, so no
//! value can end the literal and add a clause of its own. Field names are `&'static str`
//! chosen by the code, never by a caller.

use std::fmt;

/// An OData `$filter` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter(String);

/// `'value'` with every `'` doubled: OData's string literal.
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

impl Filter {
    /// `field eq 'value'`.
    pub fn eq(field: &'static str, value: &str) -> Filter {
        Filter(format!("{field} eq {}", literal(value)))
    }

    /// `startswith(field,'value')`.
    pub fn starts_with(field: &'static str, value: &str) -> Filter {
        Filter(format!("startswith({field},{})", literal(value)))
    }

    /// `field eq 'a' or field eq 'b' …`, parenthesised; `None` for no values.
    pub fn any_of(field: &'static str, values: &[&str]) -> Option<Filter> {
        let parts: Vec<Filter> = values.iter().map(|v| Filter::eq(field, v)).collect();
        Filter::or_all(parts)
    }

    /// `field ge <date-time>`: an unquoted OData date-time literal. `at` is formatted here as
    /// RFC 3339 UTC, so no caller text reaches the expression.
    pub fn ge_datetime(field: &'static str, at: time::OffsetDateTime) -> Filter {
        let utc = at.to_offset(time::UtcOffset::UTC);
        let text = utc
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string());
        Filter(format!("{field} ge {text}"))
    }

    /// `field ge <date-time>` keeping fractions of a second (RFC 3339 UTC, formatted here).
    pub fn ge_datetime_exact(field: &'static str, at: time::OffsetDateTime) -> Filter {
        let utc = at.to_offset(time::UtcOffset::UTC);
        let text = utc
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string());
        Filter(format!("{field} ge {text}"))
    }

    /// A caller's own `$filter` expression, passed through after checking that it is one
    /// expression and nothing else: no character that ends or adds a query option (`&`, `$`,
    /// `#`, `?`, `;`) or is a control character, string literals closed, parentheses balanced.
    /// Parenthesised, so it combines with [`and`](Self::and) as one condition. `Err` says what
    /// is wrong (for a message naming the parameter).
    pub fn passthrough(text: &str) -> Result<Filter, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("it is empty".into());
        }
        let mut depth: i64 = 0;
        let mut in_literal = false;
        for c in text.chars() {
            if c.is_control() {
                return Err("it contains a control character".into());
            }
            if in_literal {
                // A doubled quote reads as leaving and re-entering the literal.
                if c == '\'' {
                    in_literal = false;
                }
                continue;
            }
            match c {
                '\'' => in_literal = true,
                '&' | '$' | '#' | '?' | ';' => {
                    return Err(format!(
                        "'{c}' is not allowed: give one OData $filter expression (such as \
                         severity eq 'High'), not query options"
                    ));
                }
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth < 0 {
                        return Err("a ')' has no matching '('".into());
                    }
                }
                _ => {}
            }
        }
        if in_literal {
            return Err("a string literal is not closed (quote ' as '')".into());
        }
        if depth != 0 {
            return Err("a '(' is not closed".into());
        }
        Ok(Filter(format!("({text})")))
    }

    /// `contains(field,'value')`.
    pub fn contains(field: &'static str, value: &str) -> Filter {
        Filter(format!("contains({field},{})", literal(value)))
    }

    /// `field ge <number>`: the number formatted here (finite values only; anything else
    /// compares with 0), so no caller text reaches the expression.
    pub fn ge_number(field: &'static str, value: f64) -> Filter {
        let value = if value.is_finite() { value } else { 0.0 };
        Filter(format!("{field} ge {value}"))
    }

    /// Both expressions.
    pub fn and(self, other: Filter) -> Filter {
        Filter(format!("{} and {}", self.0, other.0))
    }

    /// The parenthesised disjunction of `parts`; `None` when empty.
    pub fn or_all(parts: Vec<Filter>) -> Option<Filter> {
        match parts.len() {
            0 => None,
            1 => parts.into_iter().next(),
            _ => Some(Filter(format!(
                "({})",
                parts
                    .into_iter()
                    .map(|p| p.0)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))),
        }
    }

    /// The expression as sent (before URL encoding).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Filter> for String {
    fn from(f: Filter) -> String {
        f.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn values_are_quoted() {
        assert_eq!(Filter::eq("id", "abc").as_str(), "id eq 'abc'");
        assert_eq!(
            Filter::eq("computerDnsName", "x' or 1 eq 1 or name eq 'y").as_str(),
            "computerDnsName eq 'x'' or 1 eq 1 or name eq ''y'"
        );
        assert_eq!(
            Filter::any_of("status", &["Pending", "InProgress"])
                .map(String::from)
                .as_deref(),
            Some("(status eq 'Pending' or status eq 'InProgress')")
        );
        assert_eq!(Filter::any_of("status", &[]), None);
        assert_eq!(
            Filter::eq("a", "1")
                .and(Filter::starts_with("b", "it's"))
                .as_str(),
            "a eq '1' and startswith(b,'it''s')"
        );
    }

    #[test]
    fn passthrough_refuses_what_is_not_one_expression() {
        assert_eq!(
            Filter::passthrough(" severity eq 'High' ")
                .unwrap()
                .as_str(),
            "(severity eq 'High')"
        );
        assert_eq!(
            Filter::passthrough("title eq 'a & b $c'").unwrap().as_str(),
            "(title eq 'a & b $c')"
        );
        assert!(Filter::passthrough("title eq 'it''s'").is_ok());
        for bad in [
            "status eq 'New'&$top=1",
            "$top=5",
            "a eq 'b'#",
            "a eq 'b') or (x eq 'y'",
            "a eq 'b",
            "(a eq 'b'",
            "a eq\n'b'",
            "",
        ] {
            assert!(Filter::passthrough(bad).is_err(), "{bad:?}");
        }
        let at = time::macros::datetime!(2025-11-22 10:00:00.5 +01:00);
        assert_eq!(
            Filter::ge_datetime("alertCreationTime", at).as_str(),
            "alertCreationTime ge 2025-11-22T09:00:00Z"
        );
    }

    /// Reads back an OData string literal starting at `s[0] == '\''`: its value and the rest.
    fn read_literal(s: &str) -> Option<(String, &str)> {
        let mut chars = s.char_indices();
        if chars.next()?.1 != '\'' {
            return None;
        }
        let mut value = String::new();
        let mut pending_quote = false;
        for (i, c) in chars {
            if pending_quote {
                if c == '\'' {
                    value.push('\'');
                    pending_quote = false;
                    continue;
                }
                return Some((value, &s[i..]));
            }
            if c == '\'' {
                pending_quote = true;
            } else {
                value.push(c);
            }
        }
        pending_quote.then_some((value, ""))
    }

    proptest! {
        /// Whatever the value, the expression is one literal holding exactly that value and
        /// nothing follows it.
        #[test]
        fn no_value_escapes_its_literal(value in any::<String>()) {
            let f = Filter::eq("computerDnsName", &value);
            let rest = f.as_str().strip_prefix("computerDnsName eq ").unwrap();
            let (read, tail) = read_literal(rest).unwrap();
            prop_assert_eq!(read, value);
            prop_assert_eq!(tail, "");
        }
    }

    #[test]
    fn datetime_bounds_carry_no_caller_text() {
        let at = time::macros::datetime!(2025-11-22 10:00:00.5 +01:00);
        assert_eq!(
            Filter::ge_datetime("createdDateTime", at).as_str(),
            "createdDateTime ge 2025-11-22T09:00:00Z"
        );
        let hostile = Filter::eq("assignedTo", "a' or status eq 'new")
            .and(Filter::ge_datetime("lastUpdateDateTime", at));
        assert_eq!(
            hostile.as_str(),
            "assignedTo eq 'a'' or status eq ''new' and lastUpdateDateTime ge 2025-11-22T09:00:00Z"
        );
    }
}
