//! Application payloads and UTF-8 text that share the received buffer.

use std::fmt;

use bytes::Bytes;

/// UTF-8 text stored as [`Bytes`], so that channel names, reasons and
/// session names decoded from a frame are slices of it rather than copies.
///
/// The bytes are checked once, when the value is made; a `Text` always holds
/// valid UTF-8.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Text(Bytes);

/// The bytes were not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not valid UTF-8 (first bad byte at {valid_up_to})")]
pub struct Utf8Error {
    /// How many leading bytes were valid.
    pub valid_up_to: usize,
}

impl Text {
    /// Text from a `'static` string, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// Checks `bytes` for UTF-8 and wraps them without copying.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, Utf8Error> {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(Text(bytes)),
            Err(e) => Err(Utf8Error {
                valid_up_to: e.valid_up_to(),
            }),
        }
    }

    /// The text as a `&str`.
    pub fn as_str(&self) -> &str {
        // Validated when the value was made; the fallback is unreachable but
        // keeps this free of panics without `unsafe`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Gives up the wrapper and returns the bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The part of this text that `part` is (a `&str` borrowed from
    /// [`as_str`](Self::as_str)), sharing the buffer instead of copying
    /// it; `None` when `part` does not lie within this text.
    pub fn slice_ref(&self, part: &str) -> Option<Text> {
        let start = (part.as_ptr() as usize).checked_sub(self.0.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        // Within the buffer, `part` is these very bytes, and a `str`'s ends
        // are character boundaries: the slice is valid UTF-8.
        (end <= self.0.len()).then(|| Text(self.0.slice(start..end)))
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Bytes::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl TryFrom<Bytes> for Text {
    type Error = Utf8Error;
    fn try_from(b: Bytes) -> Result<Self, Utf8Error> {
        Text::from_utf8(b)
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One application message: its bytes and whether they are text.
///
/// Text payloads travel as WebSocket text frames with [`crate::Raw`] and carry
/// the text flag with [`crate::Wire`]; binary ones travel as binary frames.
/// The `Debug` output shows the length only: payloads are user data and do
/// not belong in logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload {
    data: Bytes,
    text: bool,
}

impl Payload {
    /// A text payload.
    pub fn text(s: impl Into<Text>) -> Self {
        Payload {
            data: s.into().into_bytes(),
            text: true,
        }
    }

    /// A binary payload.
    pub fn binary(b: impl Into<Bytes>) -> Self {
        Payload {
            data: b.into(),
            text: false,
        }
    }

    /// True when the payload is UTF-8 text.
    pub fn is_text(&self) -> bool {
        self.text
    }

    /// The payload's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }

    /// The payload as text, when it is text.
    pub fn as_text(&self) -> Option<&str> {
        if self.text {
            std::str::from_utf8(&self.data).ok()
        } else {
            None
        }
    }

    /// The payload as [`Text`] (sharing its bytes), when it is text.
    pub fn text_value(&self) -> Option<Text> {
        // A text payload is only ever built from a `Text`, so its bytes are
        // already known to be UTF-8.
        self.text.then(|| Text(self.data.clone()))
    }

    /// Gives up the wrapper and returns the bytes.
    pub fn into_bytes(self) -> Bytes {
        self.data
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl From<Text> for Payload {
    fn from(t: Text) -> Self {
        Payload::text(t)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("text", &self.text)
            .field("len", &self.data.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_shares_the_buffer_and_anything_else_is_refused() {
        let whole = Text::from("{\"result\":\"0x1b4\"}");
        let part = &whole.as_str()[10..17];
        let shared = whole.slice_ref(part).unwrap();
        assert_eq!(shared.as_str(), "\"0x1b4\"");
        assert_eq!(shared.as_bytes().as_ptr(), part.as_ptr());
        assert_eq!(whole.slice_ref(&whole.as_str()[18..]).unwrap().as_str(), "");
        assert_eq!(whole.slice_ref("\"0x1b4\""), None, "a copy elsewhere");
        let before = Text::from("ab");
        assert_eq!(whole.slice_ref(before.as_str()), None);
    }

    #[test]
    fn text_rejects_bad_utf8_and_keeps_the_buffer() {
        let buf = Bytes::from_static(b"ok\xffno");
        assert_eq!(Text::from_utf8(buf), Err(Utf8Error { valid_up_to: 2 }));
        let good = Bytes::from_static(b"chan");
        let t = Text::from_utf8(good.clone()).unwrap();
        assert_eq!(t.as_bytes().as_ptr(), good.as_ptr());
        assert_eq!(t, "chan");
    }

    #[test]
    fn payload_debug_hides_content() {
        let p = Payload::text("secret order 42");
        let s = format!("{p:?}");
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("len: 15"), "{s}");
    }
}
