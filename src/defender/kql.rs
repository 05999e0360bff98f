//! The one builder of values inside KQL (advanced hunting) text, and the typed entities a
//! hunting template takes.
//!
//! A caller's value never becomes KQL syntax: [`string_literal`] wraps it in double quotes and
//! escapes every character that could end or escape the literal (`"` and `\`, and tab, newline
//! and carriage return, KQL's documented escapes); any other control character has no escape
//! in KQL and is refused. Entities are checked against their type ([`EntityType::check`])
//! before they are quoted, so a template's query keeps its shape whatever the entity says.
//! Durations ([`Lookback`]) are parsed from ISO 8601 and written back by this module only.

use std::fmt;
use std::net::IpAddr;

/// A value that cannot be written as a KQL string literal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("character U+{code:04X} at position {position} has no KQL escape")]
pub struct Unquotable {
    /// The refused character's code point.
    pub code: u32,
    /// Its position (in characters, from 1).
    pub position: usize,
}

/// `value` as a double-quoted KQL string literal: `\` → `\\`, `"` → `\"`, tab, newline and
/// carriage return as `\t`, `\n`, `\r`; every other character as itself. Control characters
/// without a KQL escape are refused.
pub fn string_literal(value: &str) -> Result<String, Unquotable> {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for (i, c) in value.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                return Err(Unquotable {
                    code: u32::from(c),
                    position: i + 1,
                });
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// A hunting period: an ISO 8601 duration of weeks (`P2W`), or days and time (`P30D`,
/// `PT12H`, `P1DT6H`, `PT90M`), each number at most six digits. Periods beyond advanced
/// hunting's 30 days of data are clamped to 30 days, and below a minute to a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookback {
    seconds: u64,
}

/// One number of a duration.
const DURATION_NUMBER: &str = "[0-9]{1,6}";

/// The time part of a duration (after `T`): hours, minutes, seconds in that order, one at
/// least.
fn duration_time() -> String {
    let n = DURATION_NUMBER;
    format!("(?:{n}[Hh](?:{n}[Mm])?(?:{n}[Ss])?|{n}[Mm](?:{n}[Ss])?|{n}[Ss])")
}

/// The ISO 8601 durations [`Lookback::parse`] reads, as a regular expression body (no
/// anchors; letters in either case): the same text describes the parameter in the OpenAPI
/// document.
pub fn duration_pattern() -> String {
    let n = DURATION_NUMBER;
    let time = duration_time();
    format!("[Pp](?:{n}[Ww]|{n}[Dd](?:[Tt]{time})?|[Tt]{time})")
}

/// A parsed period and whether it had to be brought into range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// The period used.
    pub lookback: Lookback,
    /// The period as given, in seconds, when it was clamped.
    pub clamped_from: Option<u64>,
}

impl Lookback {
    /// Advanced hunting's data retention and the default period.
    pub const MAX: Lookback = Lookback {
        seconds: 30 * 86_400,
    };
    const MIN_SECONDS: u64 = 60;

    /// Parses a duration (surrounding white space ignored); out-of-range periods are clamped
    /// and say so.
    pub fn parse(text: &str) -> Result<Parsed, String> {
        static FORMS: std::sync::OnceLock<Option<(regex::Regex, regex::Regex)>> =
            std::sync::OnceLock::new();
        let (syntax, parts) = FORMS
            .get_or_init(|| {
                let n = DURATION_NUMBER;
                let syntax = regex::Regex::new(&format!("^(?:{})$", duration_pattern())).ok()?;
                let parts = regex::Regex::new(&format!(
                    "^[Pp](?:({n})[Ww]|(?:({n})[Dd])?(?:[Tt](?:({n})[Hh])?(?:({n})[Mm])?(?:({n})[Ss])?)?)$"
                ))
                .ok()?;
                Some((syntax, parts))
            })
            .as_ref()
            .ok_or("the duration reader is unavailable")?;
        let t = text.trim();
        let caps = parts
            .captures(t)
            .filter(|_| syntax.is_match(t))
            .ok_or_else(|| {
                format!(
                    "{:?} is not an ISO 8601 duration such as P30D, P7D, PT12H or P1DT6H",
                    crate::actions::truncate(t, 40)
                )
            })?;
        let number = |i: usize| {
            caps.get(i)
                .and_then(|m| m.as_str().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let seconds = number(1) * 7 * 86_400
            + number(2) * 86_400
            + number(3) * 3_600
            + number(4) * 60
            + number(5);
        let clamped = seconds.clamp(Self::MIN_SECONDS, Self::MAX.seconds);
        Ok(Parsed {
            lookback: Lookback { seconds: clamped },
            clamped_from: (clamped != seconds).then_some(seconds),
        })
    }

    /// The period in seconds.
    pub fn seconds(self) -> u64 {
        self.seconds
    }

    /// ISO 8601 (`P30D`, `PT12H`, `P1DT6H30M`), as Graph's `Timespan` takes it.
    pub fn iso8601(self) -> String {
        let (d, rest) = (self.seconds / 86_400, self.seconds % 86_400);
        let (h, m, s) = (rest / 3_600, rest % 3_600 / 60, rest % 60);
        let mut out = String::from("P");
        if d > 0 {
            out.push_str(&format!("{d}D"));
        }
        if rest > 0 {
            out.push('T');
            for (n, unit) in [(h, 'H'), (m, 'M'), (s, 'S')] {
                if n > 0 {
                    out.push_str(&format!("{n}{unit}"));
                }
            }
        }
        out
    }

    /// A KQL timespan literal (`30d`, `12h`, `90m`, `45s`): the largest unit that divides it.
    pub fn kql(self) -> String {
        match self.seconds {
            s if s % 86_400 == 0 => format!("{}d", s / 86_400),
            s if s % 3_600 == 0 => format!("{}h", s / 3_600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        }
    }
}

/// The kinds of entity a hunting template takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityType {
    /// A file hash: SHA-1, SHA-256 or MD5 (hexadecimal).
    Hash,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A domain name (host name).
    Domain,
    /// A URL (http or https).
    Url,
    /// An account: a UPN (`user@domain`), `DOMAIN\name`, or a bare account name.
    User,
    /// A Defender device id (40 hexadecimal characters).
    DeviceId,
    /// A device name (host name, optionally fully qualified).
    DeviceName,
}

impl EntityType {
    /// Every type, in the order of [`EntityType::name`]'s documentation.
    pub const ALL: [EntityType; 7] = [
        EntityType::Hash,
        EntityType::Ip,
        EntityType::Domain,
        EntityType::Url,
        EntityType::User,
        EntityType::DeviceId,
        EntityType::DeviceName,
    ];

    /// `hash`, `ip`, `domain`, `url`, `user`, `device_id`, `device_name`.
    pub fn name(self) -> &'static str {
        match self {
            EntityType::Hash => "hash",
            EntityType::Ip => "ip",
            EntityType::Domain => "domain",
            EntityType::Url => "url",
            EntityType::User => "user",
            EntityType::DeviceId => "device_id",
            EntityType::DeviceName => "device_name",
        }
    }

    /// The type named `name` (any letter case).
    pub fn from_name(name: &str) -> Option<EntityType> {
        EntityType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name.trim()))
    }

    /// What a value of this type looks like, for messages.
    pub fn shape(self) -> &'static str {
        match self {
            EntityType::Hash => "a SHA-1 (40), SHA-256 (64) or MD5 (32) hexadecimal hash",
            EntityType::Ip => "an IPv4 or IPv6 address",
            EntityType::Domain => "a domain name such as contoso.com",
            EntityType::Url => "an http or https URL",
            EntityType::User => {
                "an account: user@domain, DOMAIN\\name or a name of letters, digits, . _ - $"
            }
            EntityType::DeviceId => "a Defender device id (40 hexadecimal characters)",
            EntityType::DeviceName => "a device name such as ws-01 or ws-01.contoso.com",
        }
    }

    /// The entity in the form the hunting tables hold it (hashes and device ids lower-case,
    /// IP addresses canonical), or why it is not of this type.
    pub fn check(self, value: &str) -> Result<String, String> {
        let v = value.trim();
        let refuse = || {
            Err(format!(
                "{:?} is not {}",
                crate::actions::truncate(v, 80),
                self.shape()
            ))
        };
        let ok = match self {
            EntityType::Hash => {
                matches!(v.len(), 32 | 40 | 64) && v.bytes().all(|b| b.is_ascii_hexdigit())
            }
            EntityType::DeviceId => v.len() == 40 && v.bytes().all(|b| b.is_ascii_hexdigit()),
            EntityType::Ip => {
                return v
                    .parse::<IpAddr>()
                    .map(|ip| ip.to_string())
                    .or_else(|_| refuse());
            }
            EntityType::Domain | EntityType::DeviceName => is_host_name(v),
            EntityType::Url => is_url(v),
            EntityType::User => is_account(v),
        };
        if !ok {
            return refuse();
        }
        Ok(match self {
            EntityType::Hash | EntityType::DeviceId => v.to_ascii_lowercase(),
            _ => v.to_string(),
        })
    }
}

impl fmt::Display for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A DNS host name: labels of letters, digits and `-` (not at either end), 1–63 characters
/// each, 253 in all; an underscore is allowed (service names).
fn is_host_name(v: &str) -> bool {
    let v = v.strip_suffix('.').unwrap_or(v);
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An absolute http(s) URL with a host, of printable characters and at most 2,048 long.
fn is_url(v: &str) -> bool {
    v.len() <= 2048
        && !v.chars().any(|c| c.is_control() || c.is_whitespace())
        && url::Url::parse(v)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// `user@domain`, `DOMAIN\name` or a bare name: letters, digits and `. _ - $` (and `'` in a
/// UPN's local part), at most 256 characters.
fn is_account(v: &str) -> bool {
    let name_ok = |s: &str, extra: &[u8]| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-$".contains(&b) || extra.contains(&b))
    };
    if v.is_empty() || v.len() > 256 {
        return false;
    }
    if let Some((local, domain)) = v.split_once('@') {
        return name_ok(local, b"'+") && is_host_name(domain);
    }
    if let Some((domain, name)) = v.split_once('\\') {
        return name_ok(domain, b"") && name_ok(name, b"");
    }
    name_ok(v, b"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads a double-quoted KQL literal back (the escapes [`string_literal`] writes).
    fn unquote(lit: &str) -> Option<String> {
        let inner = lit.strip_prefix('"')?.strip_suffix('"')?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(match chars.next()? {
                    '\\' => '\\',
                    '"' => '"',
                    't' => '\t',
                    'n' => '\n',
                    'r' => '\r',
                    _ => return None,
                }),
                '"' => return None,
                c => out.push(c),
            }
        }
        Some(out)
    }

    #[test]
    fn literals_escape_what_could_end_them() {
        assert_eq!(string_literal("abc").unwrap(), "\"abc\"");
        assert_eq!(
            string_literal("x\" | union DeviceInfo //").unwrap(),
            r#""x\" | union DeviceInfo //""#
        );
        assert_eq!(string_literal(r"C:\tmp\'a'").unwrap(), r#""C:\\tmp\\'a'""#);
        assert_eq!(string_literal("a\tb\nc\r").unwrap(), r#""a\tb\nc\r""#);
        assert_eq!(
            string_literal("a\u{0}b"),
            Err(Unquotable {
                code: 0,
                position: 2
            })
        );
        assert!(string_literal("\u{7f}").is_err());
    }

    proptest! {
        #[test]
        fn any_quotable_string_reads_back(s in any::<String>()) {
            match string_literal(&s) {
                Ok(lit) => prop_assert_eq!(unquote(&lit), Some(s)),
                Err(e) => prop_assert!(s.chars().nth(e.position - 1).is_some_and(char::is_control)),
            }
        }
    }

    #[test]
    fn lookbacks_parse_and_print() {
        for (text, secs, iso, kql) in [
            ("P30D", 30 * 86_400, "P30D", "30d"),
            ("p7d", 7 * 86_400, "P7D", "7d"),
            (" PT12H ", 12 * 3_600, "PT12H", "12h"),
            ("P1DT6H", 30 * 3_600, "P1DT6H", "30h"),
            ("PT90M", 90 * 60, "PT1H30M", "90m"),
            ("P2W", 14 * 86_400, "P14D", "14d"),
            ("PT61S", 61, "PT1M1S", "61s"),
        ] {
            let p = Lookback::parse(text).unwrap();
            assert_eq!(p.clamped_from, None, "{text}");
            let l = p.lookback;
            assert_eq!(l.seconds(), secs, "{text}");
            assert_eq!(l.iso8601(), iso, "{text}");
            assert_eq!(l.kql(), kql, "{text}");
        }
        let long = Lookback::parse("P999999W").unwrap();
        assert_eq!(long.lookback, Lookback::MAX);
        assert_eq!(long.clamped_from, Some(999_999 * 7 * 86_400));
        let short = Lookback::parse("PT0S").unwrap();
        assert_eq!(short.lookback.seconds(), 60);
        for bad in [
            "",
            "P",
            "30D",
            "PT",
            "P1H",
            "PT1D",
            "P1D2",
            "PDT",
            "P-1D",
            "PT1M1H",
            "P1DT",
            "P1234567D",
            "P1W2D",
            "P 1D",
        ] {
            assert!(Lookback::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn the_pattern_and_the_parser_agree(s in "[PpTtWwDdHhMmSs0-9 ]{0,12}") {
            let described = regex::Regex::new(&format!("^(?:{})$", duration_pattern())).unwrap();
            prop_assert_eq!(described.is_match(s.trim()), Lookback::parse(&s).is_ok(), "{:?}", s);
        }
    }

    #[test]
    fn entities_are_checked_against_their_type() {
        let sha256 = "3F79BB7B435B05321651DAEFD374CDC681DC06FAA65E374E38337B88CA046DEA";
        assert_eq!(
            EntityType::Hash.check(sha256).unwrap(),
            sha256.to_ascii_lowercase()
        );
        assert!(EntityType::Hash.check("abc").is_err());
        assert!(EntityType::Hash.check(&"g".repeat(40)).is_err());
        assert_eq!(EntityType::Ip.check(" 10.1.4.21 ").unwrap(), "10.1.4.21");
        assert_eq!(EntityType::Ip.check("2001:DB8::1").unwrap(), "2001:db8::1");
        assert!(EntityType::Ip.check("10.1.4").is_err());
        assert!(EntityType::Domain.check("contoso.com").is_ok());
        assert!(EntityType::Domain.check("-bad.com").is_err());
        assert!(EntityType::Domain.check("a b.com").is_err());
        assert!(EntityType::Url.check("https://x.example/a?b=c").is_ok());
        assert!(EntityType::Url.check("javascript:alert(1)").is_err());
        assert!(
            EntityType::User
                .check("admin@contoso.onmicrosoft.com")
                .is_ok()
        );
        assert!(EntityType::User.check("CONTOSO\\alice").is_ok());
        assert!(EntityType::User.check("alice").is_ok());
        assert!(EntityType::DeviceId.check(&"a".repeat(40)).is_ok());
        assert!(
            EntityType::DeviceName
                .check("ws-finance-01.contoso.com")
                .is_ok()
        );
        for hostile in [
            "x\" | union DeviceInfo //",
            "x' or 1==1 //",
            "a\\\"b",
            "alice\nDeviceInfo",
        ] {
            for t in EntityType::ALL {
                assert!(t.check(hostile).is_err(), "{t} accepted {hostile:?}");
            }
        }
    }

    #[test]
    fn entity_type_names_round_trip() {
        for t in EntityType::ALL {
            assert_eq!(EntityType::from_name(t.name()), Some(t));
            assert_eq!(EntityType::from_name(&t.name().to_uppercase()), Some(t));
        }
        assert_eq!(EntityType::from_name("sha1"), None);
    }
}
