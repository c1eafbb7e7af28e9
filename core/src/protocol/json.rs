//! Raw JSON values for the JSON-based codecs (graphql-transport-ws,
//! JSON-RPC): kept as the text they were received or built from, so a
//! payload the session only forwards is never parsed into a tree, and
//! re-exported by each codec as its own `Json`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A JSON value kept as the exact text it was received or built from.
///
/// Two values are equal when their texts are.
#[derive(Clone, Copy)]
pub struct Json<'a>(&'a str);

/// A text that is not exactly one JSON value (serde_json's explanation).
///
/// Each codec turns it into its own `DecodeError::Json`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidJson(pub String);

impl<'a> Json<'a> {
    /// Wraps raw JSON (for example from [`serde_json::value::to_raw_value`]).
    pub fn new(raw: &'a RawValue) -> Self {
        Json(raw.get())
    }

    /// Wraps `text`, which the caller has checked is exactly one JSON
    /// value with no whitespace around it (a decoder's scan).
    pub(crate) fn scanned(text: &'a str) -> Self {
        Json(text)
    }

    /// Parses `text` as one JSON value, borrowing it.
    ///
    /// # Errors
    /// [`InvalidJson`] if `text` is not exactly one JSON value.
    pub fn parse(text: &'a str) -> Result<Self, InvalidJson> {
        serde_json::from_str::<&RawValue>(text)
            .map(Json::new)
            .map_err(|e| InvalidJson(e.to_string()))
    }

    /// The JSON text.
    pub fn get(&self) -> &'a str {
        self.0
    }

    /// The value deserialized into the caller's type (strings without
    /// escapes may borrow from it).
    ///
    /// # Errors
    /// [`InvalidJson`] when the value does not fit `T`.
    pub fn deserialize<T: Deserialize<'a>>(&self) -> Result<T, InvalidJson> {
        serde_json::from_str(self.0).map_err(|e| InvalidJson(e.to_string()))
    }

    /// Whether the value is an array or an object (JSON-RPC allows no
    /// other params).
    pub fn is_structured(&self) -> bool {
        matches!(self.first(), Some(b'[' | b'{'))
    }

    /// Whether the value is an object.
    pub fn is_object(&self) -> bool {
        self.first() == Some(b'{')
    }

    /// Whether the value is `null`.
    pub fn is_null(&self) -> bool {
        self.get() == "null"
    }

    /// Whether the value is an array with at least one element.
    pub fn is_non_empty_array(&self) -> bool {
        let text = self.get();
        text.starts_with('[') && !text[1..].trim_start().starts_with(']')
    }

    /// The value's first byte: a `RawValue` holds no leading whitespace.
    fn first(&self) -> Option<u8> {
        self.get().as_bytes().first().copied()
    }
}

impl PartialEq for Json<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Json<'_> {}

impl fmt::Debug for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Written as it is: serde_json's raw value carries the text through.
        // Every `Json` holds one valid value, so this parse cannot fail.
        let raw: &RawValue = serde_json::from_str(self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_read_from_the_text() {
        let kinds = |text: &str| {
            let v = Json::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            (
                v.is_structured(),
                v.is_object(),
                v.is_null(),
                v.is_non_empty_array(),
            )
        };
        assert_eq!(kinds(r#"{"a":1}"#), (true, true, false, false));
        assert_eq!(kinds("[ 1 ]"), (true, false, false, true));
        assert_eq!(kinds("[ ]"), (true, false, false, false));
        assert_eq!(kinds("null"), (false, false, true, false));
        assert_eq!(kinds(r#""[x""#), (false, false, false, false));
        assert!(Json::parse("[1] 2").is_err(), "one value, not two");
        assert_eq!(Json::parse(" [1]").map(|v| v.get()), Ok("[1]"));
    }
}
