//! tungstenite's socket settings as redial uses them by default: small
//! buffers for idle connections, unchanged limits on what may arrive.

use tungstenite::protocol::WebSocketConfig;

/// Bytes read from the socket per read call (tungstenite's default: 128 KiB).
///
/// tungstenite allocates this buffer when the connection opens and
/// zero-fills it on the first read, so all of it is resident on every
/// connection, idle or not. It does not limit message size: a message
/// larger than the buffer grows it for as long as the message is read.
pub const DEFAULT_READ_BUFFER_SIZE: usize = 16 * 1024;

/// Bytes of encoded frames tungstenite gathers before it writes them out
/// without waiting for a flush (tungstenite's default: 128 KiB).
///
/// The driver flushes after every batch anyway; this only caps the write
/// buffer a connection keeps after a burst (tungstenite never shrinks it).
pub const DEFAULT_WRITE_BUFFER_SIZE: usize = 16 * 1024;

/// The largest message a server may send, in bytes (tungstenite's default).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// The largest single frame a server may send, in bytes (tungstenite's
/// default). A server that does not fragment its messages can send at most
/// this much in one message.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;

/// The [`WebSocketConfig`] a [`Builder`](crate::Builder) uses unless
/// [`Builder::websocket_config`](crate::Builder::websocket_config) replaces
/// it: the buffer sizes above, tungstenite's message and frame limits, and
/// no cap on the write buffer (the driver stops handing frames to a socket
/// that is not taking them, so it cannot grow past one batch).
pub fn default_websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(DEFAULT_READ_BUFFER_SIZE)
        .write_buffer_size(DEFAULT_WRITE_BUFFER_SIZE)
        .max_message_size(Some(DEFAULT_MAX_MESSAGE_SIZE))
        .max_frame_size(Some(DEFAULT_MAX_FRAME_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_on_what_arrives_are_tungstenites() {
        let ours = default_websocket_config();
        let theirs = WebSocketConfig::default();
        assert_eq!(ours.max_message_size, theirs.max_message_size);
        assert_eq!(ours.max_frame_size, theirs.max_frame_size);
        assert_eq!(ours.max_write_buffer_size, theirs.max_write_buffer_size);
        assert!(ours.read_buffer_size < theirs.read_buffer_size);
        assert!(ours.write_buffer_size < theirs.write_buffer_size);
    }
}
