//! Between tungstenite's types and the core's: frames, closes, dial errors.

use bytes::Bytes;
use redial_core::transport::parse_retry_after;
use redial_core::{CloseFrame, DialFailure, Frame, Text};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame as WsCloseFrame;
use tungstenite::{Message, Utf8Bytes};

/// Longest close reason a close frame can carry (125 bytes minus the code).
const MAX_REASON: usize = 123;

/// The core's view of a received message. Close and raw frames have no
/// [`Frame`] (closes are reported separately), so they give `None`.
///
/// Text stays in the buffer tungstenite received it in: `Utf8Bytes` becomes
/// `Bytes` becomes [`Text`] without a copy.
pub fn message_to_frame(message: Message) -> Option<Frame> {
    match message {
        Message::Text(t) => {
            let bytes = Bytes::from(t);
            // tungstenite has already checked the UTF-8; the fallback keeps
            // the data rather than panicking should that ever change.
            Some(match Text::from_utf8(bytes.clone()) {
                Ok(text) => Frame::Text(text),
                Err(_) => Frame::Binary(bytes),
            })
        }
        Message::Binary(b) => Some(Frame::Binary(b)),
        Message::Ping(p) => Some(Frame::Ping(p)),
        Message::Pong(p) => Some(Frame::Pong(p)),
        Message::Close(_) | Message::Frame(_) => None,
    }
}

/// The message for a frame the session asked to send, sharing its bytes.
pub fn frame_to_message(frame: Frame) -> Option<Message> {
    Some(match frame {
        Frame::Text(t) => match Utf8Bytes::try_from(t.into_bytes()) {
            Ok(text) => Message::Text(text),
            Err(_) => return None,
        },
        Frame::Binary(b) => Message::Binary(b),
        Frame::Ping(p) => Message::Ping(p),
        Frame::Pong(p) => Message::Pong(p),
        _ => return None,
    })
}

/// The close frame to send for the session's [`CloseFrame`], with the
/// reason cut (at a character boundary) to what fits in a frame.
pub fn close_frame_to_ws(frame: &CloseFrame) -> WsCloseFrame {
    WsCloseFrame {
        code: CloseCode::from(frame.code),
        reason: Utf8Bytes::from(redial_core::utf8::prefix(&frame.reason, MAX_REASON)),
    }
}

/// The session's view of a close frame the server sent.
pub(crate) fn close_frame_from_ws(frame: Option<WsCloseFrame>) -> Option<CloseFrame> {
    frame.map(|f| CloseFrame::new(u16::from(f.code), f.reason.as_str()))
}

/// Why a dial failed, as the core wants it: the HTTP status and
/// `Retry-After` of a refused upgrade, a certificate TLS rejected, anything
/// else as an IO failure. The text is the underlying error's, without
/// tungstenite's "IO error:" wrapper.
pub fn dial_failure(error: &tungstenite::Error) -> DialFailure {
    match error {
        tungstenite::Error::Http(response) => {
            let retry_after = response
                .headers()
                .get(tungstenite::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            DialFailure::http(response.status().as_u16(), retry_after)
        }
        tungstenite::Error::Io(io) => match rejected_certificate(io) {
            Some(why) => DialFailure::Certificate(why),
            None => DialFailure::Io(io.to_string()),
        },
        other => DialFailure::Io(other.to_string()),
    }
}

/// The reason TLS gave for refusing the server's certificate, when that is
/// what this IO error is (rustls' stream wrappers carry its error inside).
#[cfg(feature = "rustls")]
fn rejected_certificate(io: &std::io::Error) -> Option<String> {
    match io.get_ref()?.downcast_ref::<rustls::Error>()? {
        e @ rustls::Error::InvalidCertificate(_) => Some(e.to_string()),
        _ => None,
    }
}

#[cfg(not(feature = "rustls"))]
fn rejected_certificate(_: &std::io::Error) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tungstenite::http::Response;

    #[test]
    fn text_shares_the_received_buffer() {
        let received = Utf8Bytes::from("héllo".to_owned());
        let ptr = received.as_str().as_ptr();
        let Some(Frame::Text(t)) = message_to_frame(Message::Text(received)) else {
            panic!("not text");
        };
        assert_eq!(t.as_str().as_ptr(), ptr);
        let Some(Message::Text(back)) = frame_to_message(Frame::Text(t)) else {
            panic!("not text");
        };
        assert_eq!(back.as_str().as_ptr(), ptr);
    }

    #[test]
    fn control_frames_map_both_ways() {
        let p = Bytes::from_static(b"1");
        assert_eq!(
            message_to_frame(Message::Ping(p.clone())),
            Some(Frame::Ping(p.clone()))
        );
        assert_eq!(
            frame_to_message(Frame::Pong(p.clone())),
            Some(Message::Pong(p.clone()))
        );
        assert_eq!(message_to_frame(Message::Close(None)), None);
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let f = close_frame_to_ws(&CloseFrame::new(1000, reason));
        assert!(f.reason.len() <= MAX_REASON);
        assert_eq!(f.reason.len() % 2, 0);
        assert_eq!(u16::from(f.code), 1000);
    }

    #[test]
    fn refused_upgrade_keeps_status_and_retry_after() {
        let response = Response::builder()
            .status(503)
            .header("Retry-After", "7")
            .body(None)
            .unwrap();
        let e = tungstenite::Error::Http(Box::new(response));
        assert_eq!(
            dial_failure(&e),
            DialFailure::http(503, Some(Duration::from_secs(7)))
        );
        let e = tungstenite::Error::Io(std::io::Error::other("refused"));
        assert!(matches!(dial_failure(&e), DialFailure::Io(_)));
    }

    #[test]
    fn io_errors_lose_the_wrapper() {
        let e = tungstenite::Error::Io(std::io::Error::other("connection refused"));
        assert_eq!(
            dial_failure(&e),
            DialFailure::Io("connection refused".into())
        );
        assert_eq!(dial_failure(&e).describe(), "io error: connection refused");
    }

    #[cfg(feature = "rustls")]
    #[test]
    fn rejected_certificates_are_typed() {
        use rustls::CertificateError;
        for (cert, text) in [
            (
                CertificateError::UnknownIssuer,
                "invalid peer certificate: UnknownIssuer",
            ),
            (
                CertificateError::Expired,
                "invalid peer certificate: Expired",
            ),
        ] {
            let io = std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(cert),
            );
            let failure = dial_failure(&tungstenite::Error::Io(io));
            assert_eq!(failure, DialFailure::Certificate(text.into()));
        }
        // Other TLS trouble stays an IO failure (worth retrying).
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::HandshakeNotComplete,
        );
        assert!(matches!(
            dial_failure(&tungstenite::Error::Io(io)),
            DialFailure::Io(_)
        ));
    }

    #[test]
    fn close_codes_pass_unchanged() {
        let f = WsCloseFrame {
            code: CloseCode::from(4001),
            reason: Utf8Bytes::from("bad token"),
        };
        assert_eq!(
            close_frame_from_ws(Some(f)),
            Some(CloseFrame::new(4001, "bad token"))
        );
    }
}
