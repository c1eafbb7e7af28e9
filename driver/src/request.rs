//! The upgrade request: built afresh for every dial (new key, current token).

use redial_core::AuthToken;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::http::{HeaderName, HeaderValue};

use crate::builder::BuildError;

/// Where the token from the provider goes on the upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenPlacement {
    /// A header whose value is `prefix` followed by the token.
    Header {
        /// The header name.
        name: String,
        /// Put before the token (`"Bearer "` for the default).
        prefix: String,
    },
    /// A query parameter (percent-encoded) added to the URL.
    Query {
        /// The parameter name.
        param: String,
    },
}

impl TokenPlacement {
    /// `Authorization: Bearer <token>` (the default).
    pub fn bearer() -> Self {
        Self::header("Authorization", "Bearer ")
    }

    /// `name: <prefix><token>`.
    pub fn header(name: impl Into<String>, prefix: impl Into<String>) -> Self {
        TokenPlacement::Header {
            name: name.into(),
            prefix: prefix.into(),
        }
    }

    /// `?param=<token>` (or `&param=` when the URL has a query already).
    pub fn query(param: impl Into<String>) -> Self {
        TokenPlacement::Query {
            param: param.into(),
        }
    }
}

impl Default for TokenPlacement {
    fn default() -> Self {
        Self::bearer()
    }
}

#[derive(Debug, Clone)]
enum Placement {
    Header { name: HeaderName, prefix: String },
    Query { param: String },
}

impl Placement {
    fn new(placement: &TokenPlacement) -> Result<Self, BuildError> {
        Ok(match placement {
            TokenPlacement::Header { name, prefix } => Placement::Header {
                name: HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| BuildError::InvalidHeader(name.clone()))?,
                prefix: prefix.clone(),
            },
            TokenPlacement::Query { param } => {
                if param.is_empty() {
                    return Err(BuildError::InvalidTokenParam);
                }
                Placement::Query {
                    param: encode_component(param),
                }
            }
        })
    }
}

/// Everything but the key and the token, checked once at build time.
#[derive(Debug, Clone)]
pub(crate) struct RequestTemplate {
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `None`: the token is not put on the upgrade request.
    placement: Option<Placement>,
    endpoint: String,
}

impl RequestTemplate {
    pub(crate) fn new(
        url: String,
        headers: &[(String, String)],
        placement: Option<&TokenPlacement>,
    ) -> Result<Self, BuildError> {
        let request = url
            .as_str()
            .into_client_request()
            .map_err(|e| BuildError::InvalidUrl(e.to_string()))?;
        let endpoint = endpoint(&request);
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let n = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| BuildError::InvalidHeader(name.clone()))?;
                let v = HeaderValue::from_str(value)
                    .map_err(|_| BuildError::InvalidHeader(name.clone()))?;
                Ok((n, v))
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let placement = placement.map(Placement::new).transpose()?;
        Ok(RequestTemplate {
            url,
            headers,
            placement,
            endpoint,
        })
    }

    /// Scheme, host, port and path: safe to log (no query, no user info).
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether the URL's scheme is `wss`.
    pub(crate) fn secure(&self) -> bool {
        self.endpoint.starts_with("wss://")
    }

    /// A fresh upgrade request carrying `token`. Fails only when the token
    /// cannot travel where it was asked to (for example a newline in a
    /// header); the message never contains the token.
    pub(crate) fn request(&self, token: Option<&AuthToken>) -> Result<Request, String> {
        let url = match (token, &self.placement) {
            (Some(t), Some(Placement::Query { param })) => {
                with_query(&self.url, param, &encode_component(t.expose()))
            }
            _ => self.url.clone(),
        };
        let mut request = url
            .into_client_request()
            .map_err(|e| format!("invalid request: {e}"))?;
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        if let (Some(t), Some(Placement::Header { name, prefix })) = (token, &self.placement) {
            let mut value = HeaderValue::from_str(&format!("{prefix}{}", t.expose()))
                .map_err(|_| "the token is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            headers.insert(name.clone(), value);
        }
        Ok(request)
    }
}

fn endpoint(request: &Request) -> String {
    let uri = request.uri();
    let scheme = uri.scheme_str().unwrap_or("ws");
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{}", uri.path())
}

/// `url` with `name=value` added to its query (before any fragment).
fn with_query(url: &str, name: &str, value: &str) -> String {
    let (base, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let sep = match base.find('?') {
        None => "?",
        Some(_) if base.ends_with('?') || base.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{base}{sep}{name}={value}{fragment}")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(url: &str, placement: TokenPlacement) -> RequestTemplate {
        let headers = [("X-Client".to_owned(), "test".to_owned())];
        RequestTemplate::new(url.to_owned(), &headers, Some(&placement)).unwrap()
    }

    #[test]
    fn bearer_header_by_default_and_marked_sensitive() {
        let t = template("ws://127.0.0.1:9/feed?x=1", TokenPlacement::default());
        let r = t.request(Some(&AuthToken::new("abc"))).unwrap();
        let auth = r.headers().get("authorization").unwrap();
        assert_eq!(auth, "Bearer abc");
        assert!(auth.is_sensitive());
        assert_eq!(r.headers().get("x-client").unwrap(), "test");
        assert_eq!(r.uri().query(), Some("x=1"));
        assert_eq!(t.endpoint(), "ws://127.0.0.1:9/feed");
    }

    #[test]
    fn query_placement_encodes_the_token() {
        let t = template("ws://h/feed", TokenPlacement::query("access_token"));
        let r = t.request(Some(&AuthToken::new("a b&c"))).unwrap();
        assert_eq!(r.uri().query(), Some("access_token=a%20b%26c"));
        assert!(r.headers().get("authorization").is_none());
        let t = template("ws://h/feed?v=2", TokenPlacement::query("t"));
        let r = t.request(Some(&AuthToken::new("z"))).unwrap();
        assert_eq!(r.uri().query(), Some("v=2&t=z"));
    }

    #[test]
    fn every_request_gets_a_fresh_key() {
        let t = template("ws://h/", TokenPlacement::default());
        let a = t.request(None).unwrap();
        let b = t.request(None).unwrap();
        let key = |r: &Request| r.headers().get("sec-websocket-key").cloned();
        assert_ne!(key(&a), key(&b));
    }

    #[test]
    fn bad_token_fails_without_echoing_it() {
        let t = template("ws://h/", TokenPlacement::default());
        let e = t.request(Some(&AuthToken::new("x\ny"))).unwrap_err();
        assert!(!e.contains("x\ny"));
    }

    #[test]
    fn bad_inputs_are_build_errors() {
        let p = TokenPlacement::default();
        assert!(matches!(
            RequestTemplate::new("not a url".into(), &[], Some(&p)),
            Err(BuildError::InvalidUrl(_))
        ));
        let h = [("bad header".to_owned(), "v".to_owned())];
        assert!(matches!(
            RequestTemplate::new("ws://h/".into(), &h, Some(&p)),
            Err(BuildError::InvalidHeader(_))
        ));
    }

    #[test]
    fn no_placement_keeps_the_token_off_the_request() {
        let t = RequestTemplate::new("ws://127.0.0.1:9/feed?x=1".into(), &[], None).unwrap();
        let r = t.request(Some(&AuthToken::new("abc"))).unwrap();
        assert!(r.headers().get("authorization").is_none());
        assert_eq!(r.uri().to_string(), "ws://127.0.0.1:9/feed?x=1");
    }
}
