//! Reading a JSON object field by field while collecting every bad field, so
//! a 422 lists all of them at once instead of the first one serde trips on.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::Fixed2;

/// Field name -> reason, listing every bad field of a request at once.
pub type FieldErrors = std::collections::BTreeMap<String, String>;

/// A field of a partial update: absent (leave as is), `null` (clear) or a value.
#[derive(Clone, Debug, PartialEq)]
pub enum Patch<T> {
    Absent,
    Null,
    Set(T),
}

impl<T> Patch<T> {
    /// `None` when absent, `Some(None)` when null, `Some(Some(v))` when set:
    /// the shape of an optional field in a partial update.
    pub fn into_option(self) -> Option<Option<T>> {
        match self {
            Patch::Absent => None,
            Patch::Null => Some(None),
            Patch::Set(v) => Some(Some(v)),
        }
    }
}

pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    pub errors: FieldErrors,
}

impl<'a> Fields<'a> {
    pub fn new(object: &'a Map<String, Value>) -> Self {
        Fields {
            object,
            errors: FieldErrors::new(),
        }
    }

    pub fn error(&mut self, name: &str, reason: &str) {
        self.errors
            .entry(name.to_owned())
            .or_insert_with(|| reason.to_owned());
    }

    /// The raw field: `Absent`, `Null` or `Set(value)`.
    fn raw(&self, name: &str) -> Patch<&'a Value> {
        match self.object.get(name) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(v) => Patch::Set(v),
        }
    }

    fn parse<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&Value) -> Result<T, &'static str>,
    ) -> Patch<T> {
        match self.raw(name) {
            Patch::Absent => Patch::Absent,
            Patch::Null => Patch::Null,
            Patch::Set(v) => match parse(v) {
                Ok(t) => Patch::Set(t),
                Err(reason) => {
                    self.error(name, reason);
                    Patch::Absent
                }
            },
        }
    }

    /// A field that must be present and not null.
    pub fn required<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&Value) -> Result<T, &'static str>,
    ) -> Option<T> {
        match self.parse(name, parse) {
            Patch::Set(t) => Some(t),
            Patch::Null | Patch::Absent => {
                self.error(name, "is required");
                None
            }
        }
    }

    /// A field that may be absent or null (both mean "none" on creation).
    pub fn optional<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&Value) -> Result<T, &'static str>,
    ) -> Option<T> {
        match self.parse(name, parse) {
            Patch::Set(t) => Some(t),
            _ => None,
        }
    }

    /// A field of a partial update that may be set but not cleared: `null`
    /// is an error.
    pub fn settable<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&Value) -> Result<T, &'static str>,
    ) -> Option<T> {
        match self.parse(name, parse) {
            Patch::Set(v) => Some(v),
            Patch::Null => {
                self.error(name, "cannot be null");
                None
            }
            Patch::Absent => None,
        }
    }

    /// A field of a partial update.
    pub fn patch<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&Value) -> Result<T, &'static str>,
    ) -> Patch<T> {
        self.parse(name, parse)
    }

    pub fn finish(self) -> Result<(), FieldErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

/// Applies one PATCH field: `None` leaves the value as it is.
pub fn set<T: Clone>(field: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *field = v.clone();
    }
}

/// A string of 1..=max characters after trimming.
pub fn text(max: usize) -> impl Fn(&Value) -> Result<String, &'static str> {
    move |v| {
        let s = v.as_str().ok_or("must be a string")?.trim();
        if s.is_empty() {
            Err("must not be empty")
        } else if s.chars().count() > max {
            Err("is too long")
        } else if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            Err("must not contain control characters")
        } else {
            Ok(s.to_owned())
        }
    }
}

pub fn uuid(v: &Value) -> Result<Uuid, &'static str> {
    v.as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or("must be an id (UUID string)")
}

pub fn date(v: &Value) -> Result<String, &'static str> {
    let s = v.as_str().ok_or("must be a date string YYYY-MM-DD")?;
    super::time::parse_date(s)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .ok_or("must be a valid date YYYY-MM-DD")
}

pub fn fixed2(v: &Value) -> Result<Fixed2, &'static str> {
    Fixed2::parse(v)
}

pub fn boolean(v: &Value) -> Result<bool, &'static str> {
    v.as_bool().ok_or("must be true or false")
}
