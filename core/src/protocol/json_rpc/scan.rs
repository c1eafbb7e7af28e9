//! One pass over a received text: checks that it is JSON, bounds its
//! nesting as it goes, and finds the members of a message object without
//! building anything.
//!
//! The codec reads every frame a node pushes, so this pass is the decoder's
//! cost: no separate nesting pre-scan, no tree, no second parse of a
//! notification's params. It accepts exactly the JSON grammar (RFC 8259):
//! what serde_json accepts as a raw value, escapes in strings checked for
//! form only, as serde_json does for values it skips. Containers are
//! walked with a stack of their kinds, never by recursion, so a hostile
//! text costs one linear scan and the depth limit, not the call stack,
//! bounds it.

use std::borrow::Cow;

use super::codec::DecodeError;

/// The members of one message object, each as the exact text of its value.
#[derive(Default)]
pub(crate) struct Members<'a> {
    pub jsonrpc: Option<&'a str>,
    pub method: Option<&'a str>,
    pub params: Option<&'a str>,
    pub id: Option<&'a str>,
    pub result: Option<&'a str>,
    pub error: Option<&'a str>,
    /// When `params` is an object holding `subscription` and `result`
    /// once each: those two values (a pubsub notification's).
    pub pubsub: Option<Pubsub<'a>>,
}

/// A pubsub notification's params: the server's subscription id and the
/// result, each as raw JSON text.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pubsub<'a> {
    pub subscription: &'a str,
    pub result: &'a str,
}

/// What one frame's text holds, each message as its members.
pub(crate) enum Scanned<'a> {
    One(Members<'a>),
    /// A batch: each element's text and the depth it sits at is rescanned
    /// on its own (batches are rare; single messages are the stream).
    Many(Vec<&'a str>),
}

/// Scans `text` (a frame): one message object, or a batch array of any
/// values (its elements are checked as messages afterwards).
pub(crate) fn frame(text: &str, max_depth: usize) -> Result<Scanned<'_>, DecodeError> {
    let mut s = Scanner::new(text, max_depth);
    s.ws();
    let scanned = match s.peek() {
        Some(b'{') => Scanned::One(s.message(0)?),
        Some(b'[') => Scanned::Many(s.batch()?),
        _ => return Err(json("not a JSON object or array")),
    };
    s.end()?;
    Ok(scanned)
}

/// Scans `text` (one element of a batch, at nesting depth 1) as a message
/// object.
pub(crate) fn batch_element(text: &str, max_depth: usize) -> Result<Members<'_>, DecodeError> {
    let mut s = Scanner::new(text, max_depth);
    if s.peek() != Some(b'{') {
        return Err(json("not an object"));
    }
    let members = s.message(1)?;
    s.end()?;
    Ok(members)
}

/// The contents of the JSON string `raw` (quotes included, as scanned),
/// borrowed when it holds no escapes; `None` when `raw` is not a string or
/// its escapes name no text (a lone surrogate).
pub(crate) fn unquote(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

fn json(why: &str) -> DecodeError {
    DecodeError::Json(why.to_owned())
}

/// The kinds of the containers open around the scanner's position: a bit
/// per level (set: an object), the first 128 levels without allocating.
struct Kinds {
    low: u128,
    high: Vec<bool>,
    len: usize,
}

impl Kinds {
    fn new() -> Self {
        Kinds {
            low: 0,
            high: Vec::new(),
            len: 0,
        }
    }

    fn push(&mut self, object: bool) {
        if self.len < 128 {
            let bit = 1u128 << self.len;
            self.low = if object {
                self.low | bit
            } else {
                self.low & !bit
            };
        } else {
            self.high.push(object);
        }
        self.len += 1;
    }

    fn pop(&mut self) {
        if self.len > 128 {
            self.high.pop();
        }
        self.len = self.len.saturating_sub(1);
    }

    /// Whether the innermost open container is an object; `None` when none
    /// is open.
    fn top(&self) -> Option<bool> {
        match self.len {
            0 => None,
            n if n <= 128 => Some(self.low & (1u128 << (n - 1)) != 0),
            _ => self.high.last().copied(),
        }
    }
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    max_depth: usize,
}

/// Eight copies of a byte, for the word-at-a-time string scan.
const fn splat(b: u8) -> u64 {
    u64::from_le_bytes([b; 8])
}

/// The lowest byte of `w` that is zero has its top bit set in the result
/// (bytes above it may be flagged falsely; the lowest flag is exact).
const fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(splat(0x01)) & !w & splat(0x80)
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str, max_depth: usize) -> Self {
        Scanner {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            max_depth,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Nothing but whitespace is left.
    fn end(&mut self) -> Result<(), DecodeError> {
        self.ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(json("trailing characters after the JSON value")),
        }
    }

    fn eat(&mut self, b: u8, why: &str) -> Result<(), DecodeError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(json(why))
        }
    }

    /// One more container open around depth `depth`.
    fn deeper(&self, depth: usize) -> Result<(), DecodeError> {
        if depth + 1 > self.max_depth {
            return Err(DecodeError::TooDeep {
                max: self.max_depth,
            });
        }
        Ok(())
    }

    /// A message object at `depth` (the containers around it): its
    /// members, every value checked.
    fn message(&mut self, depth: usize) -> Result<Members<'a>, DecodeError> {
        let mut m = Members::default();
        self.object(depth, |s, key, depth| {
            let slot = match key {
                "jsonrpc" => &mut m.jsonrpc,
                "method" => &mut m.method,
                "id" => &mut m.id,
                "result" => &mut m.result,
                "error" => &mut m.error,
                "params" => {
                    if m.params.is_some() {
                        return Err(duplicate(key));
                    }
                    let start = s.pos;
                    if s.peek() == Some(b'{') {
                        m.pubsub = s.pubsub(depth)?;
                    } else {
                        s.value(depth)?;
                    }
                    m.params = Some(&s.text[start..s.pos]);
                    return Ok(());
                }
                _ => {
                    s.value(depth)?;
                    return Ok(());
                }
            };
            if slot.is_some() {
                return Err(duplicate(key));
            }
            let start = s.pos;
            s.value(depth)?;
            *slot = Some(&s.text[start..s.pos]);
            Ok(())
        })?;
        Ok(m)
    }

    /// An object of params at `depth`: its `subscription` and `result`
    /// when it holds each once.
    fn pubsub(&mut self, depth: usize) -> Result<Option<Pubsub<'a>>, DecodeError> {
        let (mut subscription, mut result) = (None, None);
        let mut twice = false;
        self.object(depth, |s, key, depth| {
            let start = s.pos;
            s.value(depth)?;
            let value = &s.text[start..s.pos];
            let slot = match key {
                "subscription" => &mut subscription,
                "result" => &mut result,
                _ => return Ok(()),
            };
            twice |= slot.replace(value).is_some();
            Ok(())
        })?;
        Ok(match (subscription, result) {
            (Some(subscription), Some(result)) if !twice => Some(Pubsub {
                subscription,
                result,
            }),
            _ => None,
        })
    }

    /// An object at `depth`, the scanner on its `{`: `member` is called with
    /// each key (unescaped) and the scanner on its value, at the object's
    /// own depth, and must consume that value.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &str, usize) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        self.deeper(depth)?;
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key = self.key()?;
            self.ws();
            member(self, &key, depth + 1)?;
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(json("expected `,` or `}` after an object member")),
            }
        }
    }

    /// A batch array at depth 0: its elements' texts.
    fn batch(&mut self) -> Result<Vec<&'a str>, DecodeError> {
        self.deeper(0)?;
        self.pos += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            self.ws();
            let start = self.pos;
            self.value(1)?;
            items.push(&self.text[start..self.pos]);
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(json("expected `,` or `]` after an array element")),
            }
        }
    }

    /// A key of a member this decoder reads, unescaped, and the `:` after
    /// it.
    fn key(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        let start = self.pos;
        let escaped = self.key_string()?;
        let raw = &self.text[start..self.pos];
        self.colon()?;
        if !escaped {
            return Ok(Cow::Borrowed(&raw[1..raw.len() - 1]));
        }
        serde_json::from_str::<String>(raw)
            .map(Cow::Owned)
            .map_err(|_| json("a key that is no text"))
    }

    /// A key inside a value this decoder only checks (its escapes checked
    /// for form only), and the `:` after it.
    fn skip_key(&mut self) -> Result<(), DecodeError> {
        self.key_string()?;
        self.colon()
    }

    /// The string a key is; whether it held an escape.
    fn key_string(&mut self) -> Result<bool, DecodeError> {
        if self.peek() != Some(b'"') {
            return Err(json("expected a string key"));
        }
        self.string()
    }

    fn colon(&mut self) -> Result<(), DecodeError> {
        self.ws();
        self.eat(b':', "expected `:` after a key")
    }

    /// Any one value at `depth`, the scanner on its first byte.
    fn value(&mut self, depth: usize) -> Result<(), DecodeError> {
        let mut open = Kinds::new();
        loop {
            // A value is due.
            self.ws();
            match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    self.deeper(depth + open.len)?;
                    self.pos += 1;
                    let object = c == b'{';
                    open.push(object);
                    self.ws();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        open.pop();
                    } else {
                        if object {
                            self.skip_key()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(json("expected a JSON value")),
            }
            // A value ended: close what it ends, or go on to the next.
            loop {
                let Some(object) = open.top() else {
                    return Ok(());
                };
                self.ws();
                match (self.peek(), object) {
                    (Some(b','), _) => {
                        self.pos += 1;
                        if object {
                            self.ws();
                            self.skip_key()?;
                        }
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.pos += 1;
                        open.pop();
                    }
                    _ => return Err(json("expected `,` or a closing bracket")),
                }
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), DecodeError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(json("expected a JSON value"))
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), DecodeError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(json("a number without digits")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), DecodeError> {
        let start = self.pos;
        self.digits();
        if self.pos == start {
            return Err(json("a number without digits"));
        }
        Ok(())
    }

    /// A string, the scanner on its opening quote; ends past the closing
    /// one, and says whether the string held an escape. Eight bytes at a time to the next quote, backslash or control
    /// byte: the hashes and hex numbers that fill a node's messages are
    /// long plain runs.
    fn string(&mut self) -> Result<bool, DecodeError> {
        self.pos += 1;
        let mut escaped = false;
        loop {
            while let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let w = u64::from_le_bytes(word);
                let special = zero_bytes(w ^ splat(b'"'))
                    | zero_bytes(w ^ splat(b'\\'))
                    // Bytes under 0x20 (UTF-8 lead and continuation
                    // bytes are all 0x80 and over: never flagged).
                    | (w.wrapping_sub(splat(0x20)) & !w & splat(0x80));
                if special != 0 {
                    self.pos += (special.trailing_zeros() / 8) as usize;
                    break;
                }
                self.pos += 8;
            }
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    escaped = true;
                    self.escape()?;
                }
                Some(0x00..=0x1f) => return Err(json("a control character in a string")),
                Some(_) => self.pos += 1,
                None => return Err(json("an unterminated string")),
            }
        }
    }

    /// The rest of an escape after its backslash. Its form only: a `\u`
    /// surrogate out of its pair is text's business, not the grammar's.
    fn escape(&mut self) -> Result<(), DecodeError> {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                let hex = self.bytes.get(self.pos + 1..self.pos + 5);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return Err(json("a `\\u` escape without four hex digits"));
                }
                self.pos += 5;
                Ok(())
            }
            _ => Err(json("an invalid escape")),
        }
    }
}

fn duplicate(key: &str) -> DecodeError {
    DecodeError::Json(format!("duplicate field `{key}`"))
}

#[cfg(test)]
mod tests {
    use super::super::codec::tests::json_value;
    use super::*;
    use proptest::prelude::*;

    /// Whether the scanner takes `text` as one JSON value.
    fn accepts(text: &str) -> bool {
        let mut s = Scanner::new(text, usize::MAX);
        s.ws();
        s.value(0).and_then(|()| s.end()).is_ok()
    }

    #[test]
    fn the_grammar_and_nothing_else() {
        for good in [
            "0",
            "-0",
            "-12.5e+3",
            "1E9",
            "true",
            "null",
            r#""a\"b\\c\/\b\f\n\r\t\u00e9""#,
            "\"\u{e9}\u{1f600}\"",
            r#""\ud800""#,
            r#"{"\ud800":1}"#,
            " [ 1 , { \"a\" : [ ] } , { } ] ",
            r#"{"a":{"b":{"c":"0123456789abcdef0123456789"}}}"#,
        ] {
            assert!(accepts(good), "{good}");
        }
        for bad in [
            "",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "tru",
            "nul",
            "\"\t\"",
            r#""\x""#,
            r#""\u12g4""#,
            r#""abc"#,
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":1]",
            "[1}",
            "[1 2]",
            "1 2",
            "'a'",
        ] {
            assert!(!accepts(bad), "{bad:?}");
        }
    }

    #[test]
    fn depth_is_bounded_as_it_is_scanned() {
        let mut s = Scanner::new("[[[]]]", 3);
        assert!(s.value(0).is_ok());
        let mut s = Scanner::new("[[[[]]]]", 3);
        assert_eq!(s.value(0), Err(DecodeError::TooDeep { max: 3 }));
        // Past the 128 levels kept in a word, kinds still match.
        let deep = format!("{}1{}", "[{\"k\":".repeat(100), "}]".repeat(100));
        assert!(accepts(&deep));
        let crossed = format!("{}1{}", "[".repeat(200), "]".repeat(199) + "}");
        assert!(!accepts(&crossed));
    }

    #[test]
    fn members_and_pubsub_params_are_found() {
        let text = r#"{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xab","result":{"n":[1]},"x":2}}"#;
        let Ok(Scanned::One(m)) = frame(text, 8) else {
            panic!("not one message");
        };
        assert_eq!(m.method, Some(r#""eth_subscription""#));
        let p = m.pubsub.unwrap_or_else(|| panic!("no pubsub params"));
        assert_eq!((p.subscription, p.result), (r#""0xab""#, r#"{"n":[1]}"#));
        // Escaped keys are matched by what they say.
        let text = r#"{"jsonrpc":"2.0","method":"m","params":{"subscr\u0069ption":1,"result":2}}"#;
        assert!(matches!(
            frame(text, 8),
            Ok(Scanned::One(Members {
                pubsub: Some(_),
                ..
            }))
        ));
        // A member twice is no pubsub notification.
        let text =
            r#"{"jsonrpc":"2.0","method":"m","params":{"subscription":1,"result":2,"result":3}}"#;
        assert!(matches!(
            frame(text, 8),
            Ok(Scanned::One(Members { pubsub: None, .. }))
        ));
    }

    proptest! {
        #[test]
        fn agrees_with_serde_json(text in "[\\[\\]{}\",:0-9a-z\\\\ .eE+-]{0,24}") {
            let serde = serde_json::from_str::<&serde_json::value::RawValue>(&text).is_ok();
            prop_assert_eq!(accepts(&text), serde, "{:?}", text);
        }

        #[test]
        fn takes_what_serde_json_writes(value in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            };
            let text = text.unwrap_or_else(|e| panic!("{e}"));
            prop_assert!(accepts(&text), "{}", text);
        }
    }
}
