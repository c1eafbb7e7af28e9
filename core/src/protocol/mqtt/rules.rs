//! What a refused CONNACK or a broker's DISCONNECT means for the session.

use crate::close_policy::CloseRule;
use crate::event::TerminalReason;

use super::codec::Version;

/// The rule for a CONNACK refusing with `code`.
pub(super) fn connack_rule(version: Version, code: u8) -> CloseRule {
    let code = match version {
        // 3.1.1's return codes, as the 5.0 reason codes that mean the same.
        Version::V311 => match code {
            1 => 0x84,
            2 => 0x85,
            3 => 0x88,
            4 => 0x86,
            5 => 0x87,
            _ => 0x80,
        },
        Version::V5 => code,
    };
    match code {
        // Bad user name or password, not authorized, banned, bad
        // authentication method: trying again changes nothing.
        0x86 | 0x87 | 0x8A | 0x8C => CloseRule::Terminal(TerminalReason::Unauthorized),
        0x84 => CloseRule::Terminal(TerminalReason::UnsupportedVersion),
        0x85 => CloseRule::Terminal(TerminalReason::NameUnavailable),
        // Unavailable, busy, quota exceeded, connection rate exceeded: the
        // broker asks for less, so coming back sooner would be wrong.
        0x88 | 0x89 | 0x97 | 0x9F => CloseRule::StepLadder { honour_hint: true },
        _ => CloseRule::Reconnect { honour_hint: true },
    }
}

/// The rule for a broker's DISCONNECT with `code` (5.0).
pub(super) fn disconnect_rule(code: u8) -> CloseRule {
    match code {
        0x87 | 0x8A => CloseRule::Terminal(TerminalReason::Unauthorized),
        0x89 | 0x97 | 0x9F => CloseRule::StepLadder { honour_hint: true },
        _ => CloseRule::Reconnect { honour_hint: true },
    }
}

/// The words for a CONNACK or DISCONNECT code.
pub(super) fn connack_reason(version: Version, code: u8) -> &'static str {
    match (version, code) {
        (Version::V311, 1) => "unacceptable protocol version",
        (Version::V311, 2) => "identifier rejected",
        (Version::V311, 3) => "server unavailable",
        (Version::V311, 4) => "bad user name or password",
        (Version::V311, 5) => "not authorized",
        (Version::V5, 0x00) => "normal disconnection",
        (Version::V5, 0x84) => "unsupported protocol version",
        (Version::V5, 0x85) => "client identifier not valid",
        (Version::V5, 0x86) => "bad user name or password",
        (Version::V5, 0x87) => "not authorized",
        (Version::V5, 0x88) => "server unavailable",
        (Version::V5, 0x89) => "server busy",
        (Version::V5, 0x8A) => "banned",
        (Version::V5, 0x8B) => "server shutting down",
        (Version::V5, 0x8C) => "bad authentication method",
        (Version::V5, 0x8D) => "keep alive timeout",
        (Version::V5, 0x8E) => "session taken over",
        (Version::V5, 0x95) => "packet too large",
        (Version::V5, 0x97) => "quota exceeded",
        (Version::V5, 0x9C) => "use another server",
        (Version::V5, 0x9D) => "server moved",
        (Version::V5, 0x9F) => "connection rate exceeded",
        _ => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_authorization_end_the_session_on_both_versions() {
        for (v, code) in [
            (Version::V311, 4),
            (Version::V311, 5),
            (Version::V5, 0x86),
            (Version::V5, 0x87),
        ] {
            assert_eq!(
                connack_rule(v, code),
                CloseRule::Terminal(TerminalReason::Unauthorized),
                "{v:?} {code}"
            );
        }
    }

    #[test]
    fn an_overloaded_broker_steps_the_ladder() {
        for (v, code) in [
            (Version::V311, 3),
            (Version::V5, 0x88),
            (Version::V5, 0x89),
            (Version::V5, 0x97),
        ] {
            assert_eq!(
                connack_rule(v, code),
                CloseRule::StepLadder { honour_hint: true }
            );
        }
    }

    #[test]
    fn use_another_server_reconnects() {
        assert_eq!(
            connack_rule(Version::V5, 0x9C),
            CloseRule::Reconnect { honour_hint: true }
        );
        assert_eq!(
            disconnect_rule(0x9D),
            CloseRule::Reconnect { honour_hint: true }
        );
    }
}
