//! A small tolerant reader over `serde_json::Value` that remembers which keys it read, so the
//! webhook parser can report unknown fields (reference: tolerate and log, never fail).

use serde_json::{Map, Value};

use crate::event::ParseNote;
use crate::id::{IdError, UnixTime, cut};

/// A field had the wrong JSON type or an invalid value; the item holding it is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub(crate) path: String,
    pub(crate) reason: String,
}

impl FieldError {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn into_note(self) -> ParseNote {
        ParseNote::InvalidItem {
            path: self.path,
            reason: self.reason,
        }
    }
}

/// A JSON object being read at `path`.
pub(crate) struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    used: Vec<&'a str>,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(value: &'a Value, path: impl Into<String>) -> Result<Self, FieldError> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Self {
                map,
                path,
                used: Vec::new(),
            }),
            other => Err(FieldError::new(
                path,
                format!("expected an object, got {}", kind(other)),
            )),
        }
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn child_path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// Looks `key` up and marks it read; JSON `null` counts as absent.
    pub(crate) fn get(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.used.push(k.as_str());
        if v.is_null() { None } else { Some(v) }
    }

    /// Marks keys as known without reading them.
    pub(crate) fn known(&mut self, keys: &[&str]) {
        for key in keys {
            let _ = self.get(key);
        }
    }

    pub(crate) fn str(&mut self, key: &str) -> Result<Option<&'a str>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(self.type_error(key, "a string", other)),
        }
    }

    pub(crate) fn req_str(&mut self, key: &str) -> Result<&'a str, FieldError> {
        self.str(key)?.ok_or_else(|| self.missing(key))
    }

    pub(crate) fn string(&mut self, key: &str) -> Result<Option<String>, FieldError> {
        Ok(self.str(key)?.map(str::to_owned))
    }

    /// Parses a string field with an id constructor.
    pub(crate) fn id<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(String) -> Result<T, IdError>,
    ) -> Result<Option<T>, FieldError> {
        match self.str(key)? {
            None => Ok(None),
            Some(s) => parse(s.to_owned())
                .map(Some)
                .map_err(|e| FieldError::new(self.child_path(key), e.to_string())),
        }
    }

    pub(crate) fn req_id<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(String) -> Result<T, IdError>,
    ) -> Result<T, FieldError> {
        self.id(key, parse)?.ok_or_else(|| self.missing(key))
    }

    /// An unsigned integer sent either as a JSON number or as a decimal string.
    pub(crate) fn lenient_u64(&mut self, key: &str) -> Result<Option<u64>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| FieldError::new(self.child_path(key), "not an unsigned integer")),
            Some(Value::String(s)) => UnixTime::parse(s)
                .map(|t| Some(t.as_secs()))
                .map_err(|e| FieldError::new(self.child_path(key), e.to_string())),
            Some(other) => Err(self.type_error(key, "an integer", other)),
        }
    }

    pub(crate) fn time(&mut self, key: &str) -> Result<Option<UnixTime>, FieldError> {
        Ok(self.lenient_u64(key)?.map(UnixTime::from_secs))
    }

    pub(crate) fn req_time(&mut self, key: &str) -> Result<UnixTime, FieldError> {
        self.time(key)?.ok_or_else(|| self.missing(key))
    }

    /// A boolean, also accepting the strings `"true"`/`"false"`.
    pub(crate) fn bool(&mut self, key: &str) -> Result<Option<bool>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(other) => Err(self.type_error(key, "a boolean", other)),
        }
    }

    pub(crate) fn obj(&mut self, key: &str) -> Result<Option<Obj<'a>>, FieldError> {
        let path = self.child_path(key);
        self.get(key).map(|v| Obj::new(v, path)).transpose()
    }

    pub(crate) fn arr(&mut self, key: &str) -> Result<&'a [Value], FieldError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(self.type_error(key, "an array", other)),
        }
    }

    /// Reports every key that was never read as [`ParseNote::UnknownField`].
    pub(crate) fn finish(self, notes: &mut Vec<ParseNote>) {
        for key in self.map.keys() {
            if !self.used.contains(&key.as_str()) {
                notes.push(ParseNote::UnknownField {
                    path: format!("{}.{}", self.path, cut(key, 64)),
                });
            }
        }
    }

    fn missing(&self, key: &str) -> FieldError {
        FieldError::new(self.child_path(key), "missing")
    }

    fn type_error(&self, key: &str, want: &str, got: &Value) -> FieldError {
        FieldError::new(
            self.child_path(key),
            format!("expected {want}, got {}", kind(got)),
        )
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
