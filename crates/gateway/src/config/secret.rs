//! Secrets named in the config as `{ env = "VAR" }` or `{ file = "/path" }`.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use super::error::{Diag, cut};
use super::raw::S;

/// A secret value. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value (for tests and the demo).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that puts it on the wire or into an HMAC.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where secrets come from: the process (env vars, files) or a stand-in.
pub trait Environment {
    /// An environment variable.
    fn var(&self, name: &str) -> Option<String>;
    /// A file's contents.
    fn read_file(&self, path: &Path) -> std::io::Result<String>;
}

/// The real process environment and file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        let meta = std::fs::metadata(path)?;
        if meta.len() > MAX_SECRET_FILE_BYTES {
            return Err(std::io::Error::other(format!(
                "larger than {MAX_SECRET_FILE_BYTES} bytes"
            )));
        }
        std::fs::read_to_string(path)
    }
}

const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The fixed secrets of the embedded demo (no env, no files).
pub(crate) struct DemoEnvironment;

impl Environment for DemoEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            "WHATSIP_DEMO_ACCESS_TOKEN" => Some(super::DEMO_ACCESS_TOKEN.to_owned()),
            "WHATSIP_DEMO_APP_SECRET" => Some(super::DEMO_APP_SECRET.to_owned()),
            "WHATSIP_DEMO_VERIFY_TOKEN" => Some(super::DEMO_VERIFY_TOKEN.to_owned()),
            _ => None,
        }
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("the demo reads no files ({})", path.display()),
        ))
    }
}

const HOW: &str = "write `{ env = \"VAR\" }` or `{ file = \"/path/to/secret\" }`";

/// Resolves a secret reference, recording a problem when it is missing or unreadable.
pub(crate) fn resolve(
    value: &Option<S<toml::Value>>,
    parent_span: Range<usize>,
    key: &str,
    env: &dyn Environment,
    diag: &mut Diag<'_>,
) -> Option<Secret> {
    let Some(v) = value else {
        diag.error(parent_span, key, format!("missing secret: {HOW}"));
        return None;
    };
    let span = v.span();
    let table = match v.get_ref() {
        toml::Value::Table(t) => t,
        toml::Value::String(_) => {
            diag.error(span, key, format!("inline secrets are not allowed (they end up in backups and version control): {HOW}"));
            return None;
        }
        other => {
            diag.error(
                span,
                key,
                format!("expected a table, found a {}: {HOW}", other.type_str()),
            );
            return None;
        }
    };
    for k in table.keys() {
        if k != "env" && k != "file" {
            diag.error(
                span.clone(),
                format!("{key}.{k}"),
                format!("unknown key `{}` in a secret: {HOW}", cut(k)),
            );
            return None;
        }
    }
    let value = match (table.get("env"), table.get("file")) {
        (Some(toml::Value::String(name)), None) => match env.var(name) {
            Some(v) => v,
            None => {
                diag.error(
                    span,
                    key,
                    format!("environment variable `{}` is not set", cut(name)),
                );
                return None;
            }
        },
        (None, Some(toml::Value::String(path))) => match env.read_file(Path::new(path)) {
            // a trailing newline from `echo token > file` is not part of the secret
            Ok(v) => v.trim_end_matches(['\n', '\r']).to_owned(),
            Err(e) => {
                diag.error(
                    span,
                    key,
                    format!("cannot read secret file `{}`: {e}", cut(path)),
                );
                return None;
            }
        },
        (None, None) => {
            diag.error(span, key, format!("no secret source given: {HOW}"));
            return None;
        }
        (Some(_), Some(_)) => {
            diag.error(span, key, "give `env` or `file`, not both");
            return None;
        }
        _ => {
            diag.error(span, key, format!("`env` and `file` take a string: {HOW}"));
            return None;
        }
    };
    if value.is_empty() {
        diag.error(span, key, "the secret is empty");
        return None;
    }
    Some(Secret(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_and_display_are_redacted() {
        let s = Secret::new("EAAG-very-secret");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "EAAG-very-secret");
    }
}
