//! `${…}` templates for target URIs and extra headers, parsed and checked at load.
//!
//! Variables: `${1}`…`${9}` (captures of the rule's `customer` match: regex groups, or for
//! a `prefix` match `${1}` is the rest of the number), `${name}` (named groups of any regex
//! in the rule) and the built-ins `${customer}`, `${customer_digits}`, `${business}`,
//! `${business_digits}`, `${cta_payload}`, `${deeplink_payload}`, `${rule}`.
//! `$$` writes a literal `$`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Built-in variables, filled from the call context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    Customer,
    CustomerDigits,
    Business,
    BusinessDigits,
    CtaPayload,
    DeeplinkPayload,
    Rule,
}

impl Builtin {
    pub(crate) const NAMES: [(&'static str, Builtin); 7] = [
        ("customer", Builtin::Customer),
        ("customer_digits", Builtin::CustomerDigits),
        ("business", Builtin::Business),
        ("business_digits", Builtin::BusinessDigits),
        ("cta_payload", Builtin::CtaPayload),
        ("deeplink_payload", Builtin::DeeplinkPayload),
        ("rule", Builtin::Rule),
    ];

    fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Positional(usize),
    Named(String),
    Builtin(Builtin),
}

/// How substituted values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escape {
    /// Percent-encode everything outside RFC 3261 `unreserved` and `+` (user part safe).
    Uri,
    /// Drop CR, LF and other control characters (no header injection).
    Header,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

/// What a template may refer to, known at compile time.
pub(crate) struct Scope<'a> {
    /// Number of positional captures available (`${1}`..=`${n}`).
    pub(crate) positional: usize,
    /// Named groups available.
    pub(crate) named: &'a [String],
}

/// The values for one render.
#[derive(Debug, Default)]
pub(crate) struct Values<'a> {
    pub(crate) positional: Vec<Option<String>>,
    pub(crate) named: BTreeMap<String, String>,
    pub(crate) customer: &'a str,
    pub(crate) business: Option<&'a str>,
    pub(crate) cta_payload: Option<&'a str>,
    pub(crate) deeplink_payload: Option<&'a str>,
    pub(crate) rule: &'a str,
}

impl Template {
    /// Parses `text`, checking every variable against `scope`.
    pub(crate) fn parse(text: &str, scope: &Scope<'_>) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(pos) = rest.find('$') {
            lit.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(r) = after.strip_prefix('$') {
                lit.push('$');
                rest = r;
                continue;
            }
            let Some(inner) = after.strip_prefix('{') else {
                return Err("`$` must start `${name}` (write `$$` for a literal `$`)".into());
            };
            let Some(end) = inner.find('}') else {
                return Err("unclosed `${`".into());
            };
            let name = &inner[..end];
            rest = &inner[end + 1..];
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit)));
            }
            parts.push(Self::variable(name, scope)?);
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Self { parts })
    }

    fn variable(name: &str, scope: &Scope<'_>) -> Result<Part, String> {
        if name.is_empty() {
            return Err("empty `${}`".into());
        }
        if name.bytes().all(|b| b.is_ascii_digit()) {
            let n: usize = name
                .parse()
                .map_err(|_| format!("bad capture number `${{{name}}}`"))?;
            if n == 0 || n > scope.positional {
                return Err(if scope.positional == 0 {
                    format!(
                        "`${{{name}}}` refers to a capture, but the rule's `customer` match has none"
                    )
                } else {
                    format!(
                        "`${{{name}}}` refers to capture {n}, but the rule's `customer` match has {}",
                        scope.positional
                    )
                });
            }
            return Ok(Part::Positional(n));
        }
        if let Some(b) = Builtin::from_name(name) {
            return Ok(Part::Builtin(b));
        }
        if scope.named.iter().any(|n| n == name) {
            return Ok(Part::Named(name.to_owned()));
        }
        let builtins: Vec<&str> = Builtin::NAMES.iter().map(|(n, _)| *n).collect();
        Err(format!(
            "unknown variable `${{{name}}}`; use a capture `${{1}}`, a named group of the rule's regex, or one of {}",
            builtins.join(", ")
        ))
    }

    /// Literal text only (no variables), used for shape checks at load.
    pub(crate) fn literal_prefix(&self) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                _ => break,
            }
        }
        out
    }

    /// Every literal part, for checks such as "no whitespace in a URI".
    pub(crate) fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Literal(l) => Some(l.as_str()),
            _ => None,
        })
    }

    /// Renders with `values`; missing optional values render empty.
    pub(crate) fn render(&self, values: &Values<'_>, escape: Escape) -> String {
        let mut out = String::new();
        for part in &self.parts {
            let value: &str = match part {
                Part::Literal(l) => {
                    out.push_str(l);
                    continue;
                }
                Part::Positional(n) => values
                    .positional
                    .get(n - 1)
                    .and_then(|v| v.as_deref())
                    .unwrap_or(""),
                Part::Named(name) => values.named.get(name).map_or("", String::as_str),
                Part::Builtin(b) => match b {
                    Builtin::Customer => values.customer,
                    Builtin::CustomerDigits => {
                        push_escaped(&mut out, &digits(values.customer), escape);
                        continue;
                    }
                    Builtin::Business => values.business.unwrap_or(""),
                    Builtin::BusinessDigits => {
                        push_escaped(&mut out, &digits(values.business.unwrap_or("")), escape);
                        continue;
                    }
                    Builtin::CtaPayload => values.cta_payload.unwrap_or(""),
                    Builtin::DeeplinkPayload => values.deeplink_payload.unwrap_or(""),
                    Builtin::Rule => values.rule,
                },
            };
            push_escaped(&mut out, value, escape);
        }
        out
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn push_escaped(out: &mut String, value: &str, escape: Escape) {
    match escape {
        Escape::Uri => {
            for b in value.bytes() {
                let safe = b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')' | b'+'
                    );
                if safe {
                    out.push(char::from(b));
                } else {
                    let _ = write!(out, "%{b:02X}");
                }
            }
        }
        Escape::Header => out.extend(value.chars().filter(|c| !c.is_control()).take(512)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(n: usize, named: &[String]) -> Scope<'_> {
        Scope {
            positional: n,
            named,
        }
    }

    #[test]
    fn template_renders_positional_named_and_builtin_variables() {
        let named = vec!["ext".to_owned()];
        let t = Template::parse(
            "sip:${1}-${ext}@pbx;b=${business_digits}$$",
            &scope(1, &named),
        )
        .unwrap();
        let mut v = Values {
            customer: "+4930123",
            business: Some("+15551441906"),
            rule: "r",
            ..Values::default()
        };
        v.positional = vec![Some("30123".into())];
        v.named.insert("ext".into(), "7".into());
        assert_eq!(t.render(&v, Escape::Uri), "sip:30123-7@pbx;b=15551441906$");
    }

    #[test]
    fn template_refuses_unknown_variable_and_missing_capture() {
        assert!(
            Template::parse("sip:${nope}@x", &scope(0, &[]))
                .unwrap_err()
                .contains("unknown variable")
        );
        assert!(
            Template::parse("sip:${2}@x", &scope(1, &[]))
                .unwrap_err()
                .contains("has 1")
        );
        assert!(
            Template::parse("sip:${1}@x", &scope(0, &[]))
                .unwrap_err()
                .contains("has none")
        );
        assert!(
            Template::parse("sip:${1@x", &scope(1, &[]))
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(Template::parse("sip:$1@x", &scope(1, &[])).is_err());
    }

    #[test]
    fn uri_escape_percent_encodes_payload_and_header_escape_strips_crlf() {
        let t = Template::parse("${cta_payload}", &scope(0, &[])).unwrap();
        let v = Values {
            cta_payload: Some("a b@c\r\nX: y"),
            ..Values::default()
        };
        assert_eq!(t.render(&v, Escape::Uri), "a%20b%40c%0D%0AX%3A%20y");
        assert_eq!(t.render(&v, Escape::Header), "a b@cX: y");
    }
}
