//! Where a close code or a handshake status becomes a decision.
//!
//! Every way a transport can end — a close frame from the server, an HTTP
//! status on the upgrade, no frame at all — is looked up here and turned into
//! either *reconnect, and how* or *stop, and why*. The session only carries
//! the decision out.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::event::TerminalReason;

/// What to do after a transport closed with a given code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseRule {
    /// Reconnect on the ladder. With `honour_hint`, a retry hint the server
    /// sent (GOING_AWAY) replaces the ladder's delay when it is the outage's
    /// first server wait, and otherwise only lengthens it.
    Reconnect {
        /// Use the server's retry hint when there is one.
        honour_hint: bool,
    },
    /// Reconnect and step the ladder even if the connection had been stable:
    /// the server asked us to come back later, so coming back sooner each
    /// time would be wrong.
    StepLadder {
        /// Use the server's retry hint when there is one.
        honour_hint: bool,
    },
    /// The token expired: fetch a fresh one and reconnect at once. Only once
    /// per outage (a provider that keeps returning a stale token falls back to
    /// the ladder); without a token provider this is terminal `token_expired`.
    RefreshToken,
    /// Reconnect, but no sooner than this floor (plus up to 10 % jitter so a
    /// fleet does not come back in lockstep), and never sooner than the
    /// ladder's own draw. Capped by `max_server_delay` like a server's wait;
    /// [`ConfigBuilder::build`](crate::ConfigBuilder::build) rejects floors
    /// above 24 h.
    Floor(Duration),
    /// Never reconnect; the session ends with this reason.
    Terminal(TerminalReason),
}

/// The close-code table: defaults, plus the user's overrides per code and per
/// range.
///
/// Look-up order: an exact-code override, then the first matching range
/// override (in the order added), then the default table below.
///
/// | code | rule |
/// |---|---|
/// | none (abnormal drop, 1006) | reconnect, honour hint |
/// | 1000, 1002, 1003, 1011 and every code not listed | reconnect |
/// | 1001 going away, 1012 service restart | reconnect, honour hint |
/// | 1013 try again later | step the ladder, honour hint |
/// | 1008 policy violation | terminal `policy_violation` |
/// | 1009 message too big (ours for an inbound message over the limit, or the server's) | terminal `message_too_large` |
/// | 4001 | terminal `invalid_token` |
/// | 4002 | refresh the token, reconnect at once |
/// | 4003 | terminal `channel_not_authorized` |
/// | 4010 | reconnect with a 30 s floor |
/// | 4012 | terminal `account_suspended` |
/// | 4020 | terminal `admin_disconnect` |
/// | dial: certificate rejected ([`DialFailure::Certificate`](crate::DialFailure::Certificate)) | terminal `certificate_rejected` |
///
/// Why 1009 is terminal: the size limit is the client's own setting and the
/// message does not shrink by asking again; a [`Wire`](crate::Wire) server
/// replays it on resume, so reconnecting would lose the connection to the
/// same message in a loop. Raise the limit, or override 1009 with a
/// reconnect rule for a server known to send such a message only once.
///
/// Why a rejected certificate is terminal: it stays rejected until someone
/// changes the server or the client's trusted roots, and fifty retries only
/// hide the cause. Override with
/// [`with_certificate_rule`](ClosePolicy::with_certificate_rule) (for
/// example while a certificate is being rotated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClosePolicy {
    codes: BTreeMap<u16, CloseRule>,
    ranges: Vec<(RangeInclusive<u16>, CloseRule)>,
    certificate: Option<CloseRule>,
}

/// The concurrency-cap floor for 4010.
pub const CONCURRENCY_FLOOR: Duration = Duration::from_secs(30);

impl ClosePolicy {
    /// The default table, no overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overrides the rule for one code.
    pub fn with_code(mut self, code: u16, rule: CloseRule) -> Self {
        self.codes.insert(code, rule);
        self
    }

    /// Overrides the rule for a range of codes (after exact-code overrides).
    pub fn with_range(mut self, codes: RangeInclusive<u16>, rule: CloseRule) -> Self {
        self.ranges.push((codes, rule));
        self
    }

    /// Every override, for validation.
    pub(crate) fn overrides(&self) -> impl Iterator<Item = &CloseRule> {
        self.codes
            .values()
            .chain(self.ranges.iter().map(|(_, r)| r))
            .chain(self.certificate.iter())
    }

    /// Overrides what a dial whose certificate TLS rejected leads to.
    /// [`CloseRule::Reconnect`], [`CloseRule::StepLadder`] and
    /// [`CloseRule::RefreshToken`] retry on the ladder, [`CloseRule::Floor`]
    /// no sooner than the floor, [`CloseRule::Terminal`] stops.
    pub fn with_certificate_rule(mut self, rule: CloseRule) -> Self {
        self.certificate = Some(rule);
        self
    }

    /// The rule for a dial whose certificate TLS rejected.
    pub fn certificate_rule(&self) -> CloseRule {
        self.certificate
            .clone()
            .unwrap_or(CloseRule::Terminal(TerminalReason::CertificateRejected))
    }

    /// The decision for a dial whose certificate TLS rejected.
    pub(crate) fn certificate_decision(&self) -> HandshakeRule {
        match self.certificate_rule() {
            CloseRule::Terminal(why) => HandshakeRule::Terminal(why),
            CloseRule::Floor(floor) => HandshakeRule::RetryAfter(floor),
            _ => HandshakeRule::Ladder,
        }
    }

    /// The rule for a close with `code` (`None`: the transport ended without
    /// a close frame).
    pub fn rule_for(&self, code: Option<u16>) -> CloseRule {
        self.rule_with(code, |_| None)
    }

    /// The rule for a close with `code` when the protocol gives some codes
    /// a meaning of its own (`protocol`): the user's overrides first, then
    /// the protocol's row, then the default table.
    pub fn rule_with(
        &self,
        code: Option<u16>,
        protocol: impl FnOnce(u16) -> Option<CloseRule>,
    ) -> CloseRule {
        let Some(code) = code else {
            return CloseRule::Reconnect { honour_hint: true };
        };
        if let Some(rule) = self.codes.get(&code) {
            return rule.clone();
        }
        if let Some((_, rule)) = self.ranges.iter().find(|(r, _)| r.contains(&code)) {
            return rule.clone();
        }
        protocol(code).unwrap_or_else(|| default_rule(code))
    }
}

fn default_rule(code: u16) -> CloseRule {
    match code {
        1001 | 1012 => CloseRule::Reconnect { honour_hint: true },
        1013 => CloseRule::StepLadder { honour_hint: true },
        1008 => CloseRule::Terminal(TerminalReason::PolicyViolation),
        1009 => CloseRule::Terminal(TerminalReason::MessageTooLarge),
        4001 => CloseRule::Terminal(TerminalReason::InvalidToken),
        4002 => CloseRule::RefreshToken,
        4003 => CloseRule::Terminal(TerminalReason::ChannelNotAuthorized),
        4010 => CloseRule::Floor(CONCURRENCY_FLOOR),
        4012 => CloseRule::Terminal(TerminalReason::AccountSuspended),
        4020 => CloseRule::Terminal(TerminalReason::AdminDisconnect),
        _ => CloseRule::Reconnect { honour_hint: false },
    }
}

/// What kind of close ended a connection: a small fixed set, stable across
/// releases, for metric labels and dashboards (a raw close code or reason
/// would make an unbounded label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseClass {
    /// 1000: the peer closed normally.
    Normal,
    /// 1001, 1012: the server is going away or restarting.
    GoingAway,
    /// 1013, 4010: the server asked to come back later.
    ServerHint,
    /// 1002, 1003, 1007: a frame one side could not accept.
    ProtocolError,
    /// 1008, 4003, 4012, 4020: refused by policy; terminal by default.
    PolicyTerminal,
    /// 4001, 4002: the token was refused or has expired.
    Token,
    /// No close frame (1006), 1011, 1014, 1015 and every other code: the
    /// transport or the server failed.
    Transport,
    /// The session's own deadline: no pong in time, or no handshake answer
    /// in time.
    Timeout,
    /// 1009: a message over the size limit.
    TooLarge,
}

impl CloseClass {
    /// Every class, in a fixed order (for pre-registering metrics).
    pub const ALL: [CloseClass; 9] = [
        CloseClass::Normal,
        CloseClass::GoingAway,
        CloseClass::ServerHint,
        CloseClass::ProtocolError,
        CloseClass::PolicyTerminal,
        CloseClass::Token,
        CloseClass::Transport,
        CloseClass::Timeout,
        CloseClass::TooLarge,
    ];

    /// The class's name in snake case (`"going_away"`), the metric label.
    pub fn name(self) -> &'static str {
        match self {
            CloseClass::Normal => "normal",
            CloseClass::GoingAway => "going_away",
            CloseClass::ServerHint => "server_hint",
            CloseClass::ProtocolError => "protocol_error",
            CloseClass::PolicyTerminal => "policy_terminal",
            CloseClass::Token => "token",
            CloseClass::Transport => "transport",
            CloseClass::Timeout => "timeout",
            CloseClass::TooLarge => "too_large",
        }
    }

    /// The class of an [`Event::Disconnected`](crate::Event::Disconnected)
    /// with this `code` and `reason`.
    ///
    /// The code decides, by the default table's meaning of each code
    /// (user overrides change what the session does, not what a code
    /// means). Without a code, the session's own timeouts (`"pong
    /// timeout"`, `"no … in time"`) are [`CloseClass::Timeout`] and
    /// anything else [`CloseClass::Transport`]; the reason is read for
    /// nothing else.
    pub fn of(code: Option<u16>, reason: &str) -> CloseClass {
        match code {
            None if reason == "pong timeout"
                || (reason.starts_with("no ") && reason.ends_with(" in time")) =>
            {
                CloseClass::Timeout
            }
            None => CloseClass::Transport,
            Some(1000) => CloseClass::Normal,
            Some(1001 | 1012) => CloseClass::GoingAway,
            Some(1013 | 4010) => CloseClass::ServerHint,
            Some(1002 | 1003 | 1007) => CloseClass::ProtocolError,
            Some(1008 | 4003 | 4012 | 4020) => CloseClass::PolicyTerminal,
            Some(4001 | 4002) => CloseClass::Token,
            Some(1009) => CloseClass::TooLarge,
            Some(_) => CloseClass::Transport,
        }
    }
}

impl std::fmt::Display for CloseClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a failed WebSocket upgrade means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandshakeRule {
    /// 401 with a token provider: fetch a fresh token and try once more at
    /// once; a second 401 in the same outage is terminal.
    RetryWithFreshToken,
    /// Honour the server's Retry-After (never earlier, up to 10 % later).
    RetryAfter(Duration),
    /// Step the ladder.
    Ladder,
    /// Stop.
    Terminal(TerminalReason),
}

/// The decision for an upgrade answered with `status`.
pub(crate) fn handshake_rule(
    status: u16,
    retry_after: Option<Duration>,
    has_token_provider: bool,
    fresh_token_retry_used: bool,
) -> HandshakeRule {
    match status {
        401 if has_token_provider && !fresh_token_retry_used => HandshakeRule::RetryWithFreshToken,
        401 => HandshakeRule::Terminal(TerminalReason::Unauthorized),
        403 => HandshakeRule::Terminal(TerminalReason::Forbidden),
        429 | 503 => match retry_after {
            Some(d) => HandshakeRule::RetryAfter(d),
            None => HandshakeRule::Ladder,
        },
        _ => HandshakeRule::Ladder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_classes() {
        let c = |code, reason| CloseClass::of(code, reason);
        assert_eq!(c(None, "connection reset"), CloseClass::Transport);
        assert_eq!(c(None, "pong timeout"), CloseClass::Timeout);
        assert_eq!(c(None, "no WELCOME in time"), CloseClass::Timeout);
        // A close code decides, whatever the reason says.
        assert_eq!(c(Some(1000), "pong timeout"), CloseClass::Normal);
        for (code, class) in [
            (1001, CloseClass::GoingAway),
            (1012, CloseClass::GoingAway),
            (1013, CloseClass::ServerHint),
            (4010, CloseClass::ServerHint),
            (1002, CloseClass::ProtocolError),
            (1003, CloseClass::ProtocolError),
            (1007, CloseClass::ProtocolError),
            (1008, CloseClass::PolicyTerminal),
            (4003, CloseClass::PolicyTerminal),
            (4012, CloseClass::PolicyTerminal),
            (4020, CloseClass::PolicyTerminal),
            (4001, CloseClass::Token),
            (4002, CloseClass::Token),
            (1009, CloseClass::TooLarge),
            (1006, CloseClass::Transport),
            (1011, CloseClass::Transport),
            (3000, CloseClass::Transport),
            (4999, CloseClass::Transport),
        ] {
            assert_eq!(c(Some(code), ""), class, "{code}");
        }
        // Every code maps into the fixed list, and names are unique.
        let names: std::collections::BTreeSet<_> =
            CloseClass::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), CloseClass::ALL.len());
        for code in 0..=u16::MAX {
            assert!(CloseClass::ALL.contains(&c(Some(code), "")));
        }
    }

    #[test]
    fn default_table() {
        let p = ClosePolicy::new();
        let reconnect = CloseRule::Reconnect { honour_hint: false };
        let hinted = CloseRule::Reconnect { honour_hint: true };
        assert_eq!(p.rule_for(None), hinted);
        for c in [1000, 1002, 1003, 1006, 1011, 3000, 4000, 4999] {
            assert_eq!(p.rule_for(Some(c)), reconnect, "{c}");
        }
        assert_eq!(p.rule_for(Some(1001)), hinted);
        assert_eq!(p.rule_for(Some(1012)), hinted);
        assert_eq!(
            p.rule_for(Some(1013)),
            CloseRule::StepLadder { honour_hint: true }
        );
        let terminal = |r| CloseRule::Terminal(r);
        assert_eq!(
            p.rule_for(Some(1008)),
            terminal(TerminalReason::PolicyViolation)
        );
        assert_eq!(
            p.rule_for(Some(4001)),
            terminal(TerminalReason::InvalidToken)
        );
        assert_eq!(
            p.rule_for(Some(4003)),
            terminal(TerminalReason::ChannelNotAuthorized)
        );
        assert_eq!(
            p.rule_for(Some(4012)),
            terminal(TerminalReason::AccountSuspended)
        );
        assert_eq!(
            p.rule_for(Some(4020)),
            terminal(TerminalReason::AdminDisconnect)
        );
        assert_eq!(p.rule_for(Some(4002)), CloseRule::RefreshToken);
        assert_eq!(
            p.rule_for(Some(4010)),
            CloseRule::Floor(Duration::from_secs(30))
        );
    }

    #[test]
    fn too_large_and_certificate_rows() {
        let p = ClosePolicy::new();
        assert_eq!(
            p.rule_for(Some(1009)),
            CloseRule::Terminal(TerminalReason::MessageTooLarge)
        );
        assert_eq!(
            p.certificate_decision(),
            HandshakeRule::Terminal(TerminalReason::CertificateRejected)
        );
        let p = p
            .with_code(1009, CloseRule::StepLadder { honour_hint: false })
            .with_certificate_rule(CloseRule::Reconnect { honour_hint: false });
        assert_eq!(
            p.rule_for(Some(1009)),
            CloseRule::StepLadder { honour_hint: false }
        );
        assert_eq!(p.certificate_decision(), HandshakeRule::Ladder);
        let floor = Duration::from_secs(60);
        let p = p.with_certificate_rule(CloseRule::Floor(floor));
        assert_eq!(p.certificate_decision(), HandshakeRule::RetryAfter(floor));
        // A range override does not reach the certificate rule.
        let p = ClosePolicy::new()
            .with_range(0..=u16::MAX, CloseRule::Reconnect { honour_hint: false });
        assert!(matches!(
            p.certificate_decision(),
            HandshakeRule::Terminal(_)
        ));
    }

    #[test]
    fn overrides_code_beats_range_beats_default() {
        let p = ClosePolicy::new()
            .with_range(
                4100..=4199,
                CloseRule::Terminal(TerminalReason::CloseCode(4100)),
            )
            .with_code(4150, CloseRule::Reconnect { honour_hint: false })
            .with_code(4001, CloseRule::Reconnect { honour_hint: false });
        assert_eq!(
            p.rule_for(Some(4150)),
            CloseRule::Reconnect { honour_hint: false }
        );
        assert!(matches!(p.rule_for(Some(4199)), CloseRule::Terminal(_)));
        assert_eq!(
            p.rule_for(Some(4001)),
            CloseRule::Reconnect { honour_hint: false }
        );
        assert!(matches!(p.rule_for(Some(4012)), CloseRule::Terminal(_)));
    }

    #[test]
    fn handshake_statuses() {
        use HandshakeRule::*;
        let ra = Some(Duration::from_secs(7));
        assert_eq!(handshake_rule(401, None, true, false), RetryWithFreshToken);
        assert_eq!(
            handshake_rule(401, None, true, true),
            Terminal(TerminalReason::Unauthorized)
        );
        assert_eq!(
            handshake_rule(401, None, false, false),
            Terminal(TerminalReason::Unauthorized)
        );
        assert_eq!(
            handshake_rule(403, None, true, false),
            Terminal(TerminalReason::Forbidden)
        );
        assert_eq!(
            handshake_rule(429, ra, false, false),
            RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            handshake_rule(503, ra, false, false),
            RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(handshake_rule(503, None, false, false), Ladder);
        assert_eq!(handshake_rule(500, ra, false, false), Ladder);
        assert_eq!(handshake_rule(404, None, false, false), Ladder);
    }
}
