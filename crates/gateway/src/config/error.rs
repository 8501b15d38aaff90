//! Config errors that name the file, line, column and key.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A position in a config file, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file as given to `Config::load` (or `<embedded demo>`).
    pub file: PathBuf,
    /// Line, counting from 1.
    pub line: usize,
    /// Column in characters, counting from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where it is.
    pub at: Location,
    /// The dotted key, e.g. `dialplan.rule[2].customer.regex`.
    pub key: String,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`: {}", self.at, self.key, self.message)
    }
}

/// Why a config file was refused. Local errors: they go to the operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// The path given.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or does not fit the schema (unknown key, wrong type).
    #[error("{at}: {message}")]
    Syntax {
        /// Where the parser stopped.
        at: Location,
        /// The key or text at that place, when short enough to quote.
        key: Option<String>,
        /// The parser's message.
        message: String,
    },
    /// The file parsed but some values are invalid; every problem found is listed.
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Every problem with its location, one per line (for `check-config`).
    pub fn problems(&self) -> Vec<String> {
        match self {
            Self::Invalid(p) => p.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn display_problems(problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&p.to_string());
    }
    out
}

/// Collects problems while the raw file is converted into validated types.
pub(crate) struct Diag<'a> {
    file: &'a Path,
    src: &'a str,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl<'a> Diag<'a> {
    pub(crate) fn new(file: &'a Path, src: &'a str) -> Self {
        Self {
            file,
            src,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn location(&self, span: Range<usize>) -> Location {
        location_of(self.file, self.src, span.start)
    }

    /// Records a problem at `span` for `key`.
    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let at = self.location(span);
        self.problems.push(Problem {
            at,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Records something legal but probably wrong; `check-config` shows it.
    pub(crate) fn warn(
        &mut self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let at = self.location(span);
        self.warnings.push(Problem {
            at,
            key: key.into(),
            message: message.into(),
        });
    }

    pub(crate) fn take_warnings(&mut self) -> Vec<Problem> {
        std::mem::take(&mut self.warnings)
    }

    pub(crate) fn len(&self) -> usize {
        self.problems.len()
    }

    pub(crate) fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }
}

/// Converts a byte offset into a 1-based line and character column.
pub(crate) fn location_of(file: &Path, src: &str, offset: usize) -> Location {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    Location {
        file: file.to_path_buf(),
        line,
        column,
    }
}

/// Cuts a value to at most 64 bytes for error messages (STYLE.md §5).
pub(crate) fn cut(value: &str) -> String {
    if value.len() <= 64 {
        return value.to_owned();
    }
    let mut end = 64;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_characters_from_one() {
        let src = "a = 1\nbé = 2\n";
        let at = location_of(Path::new("f.toml"), src, src.find('=').unwrap());
        assert_eq!((at.line, at.column), (1, 3));
        let second = src.rfind('=').unwrap();
        let at = location_of(Path::new("f.toml"), src, second);
        assert_eq!((at.line, at.column), (2, 4));
        assert_eq!(at.to_string(), "f.toml:2:4");
    }

    #[test]
    fn cut_keeps_char_boundaries() {
        let long = "é".repeat(40);
        let c = cut(&long);
        assert!(c.len() <= 64 + '…'.len_utf8());
        assert!(c.ends_with('…'));
    }
}
