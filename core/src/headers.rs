//! Message headers: name/value pairs a protocol carries next to the
//! payload (NATS HPUB and HMSG).

use crate::payload::Text;

/// The headers of one message, in order. Names keep their case and may
/// repeat.
///
/// Publish with them through
/// [`Session::handle_publish_with_headers`](crate::Session::handle_publish_with_headers);
/// received ones arrive in [`Event::Message`](crate::Event::Message)'s
/// `headers`. Only protocols that carry headers take them
/// ([`Nats`](crate::Nats)); the others refuse the publish with
/// [`SendError::Unsupported`](crate::SendError::Unsupported). The protocol
/// checks names and values when the message is published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    // Boxed: one pointer in every `Event::Message` (most carry no headers)
    // instead of a whole Vec; the event stays at 96 bytes, not 112.
    #[allow(clippy::box_collection)]
    pairs: Box<Vec<(Text, Text)>>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers::default()
    }

    /// With `name: value` added after the others.
    pub fn with(mut self, name: impl Into<Text>, value: impl Into<Text>) -> Self {
        self.append(name, value);
        self
    }

    /// Adds `name: value` after the others (a repeated name is kept twice).
    pub fn append(&mut self, name: impl Into<Text>, value: impl Into<Text>) {
        self.pairs.push((name.into(), value.into()));
    }

    /// The first value of `name` (names compare exactly).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every `(name, value)` pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// No pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The bytes of every name and value, for the queue's byte limit.
    pub(crate) fn byte_len(&self) -> usize {
        self.pairs.iter().map(|(n, v)| n.len() + v.len()).sum()
    }
}

impl<N: Into<Text>, V: Into<Text>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers {
            pairs: Box::new(
                iter.into_iter()
                    .map(|(n, v)| (n.into(), v.into()))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_repeats_are_kept() {
        let h = Headers::new()
            .with("Trace", "a")
            .with("Kind", "x")
            .with("Trace", "b");
        assert_eq!(h.get("Trace"), Some("a"));
        assert_eq!(h.get_all("Trace").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(h.get("trace"), None, "names compare exactly");
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [("Trace", "a"), ("Kind", "x"), ("Trace", "b")]
        );
        assert_eq!(h.len(), 3);
        assert_eq!(h.byte_len(), 5 + 1 + 4 + 1 + 5 + 1);
        let collected: Headers = [("Trace", "a"), ("Kind", "x"), ("Trace", "b")]
            .into_iter()
            .collect();
        assert_eq!(collected, h);
        assert!(Headers::new().is_empty());
    }

    #[test]
    fn a_message_event_stays_small() {
        assert_eq!(std::mem::size_of::<Option<Headers>>(), 8);
    }
}
