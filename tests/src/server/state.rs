//! The server's session table and the protocol rules that act on it.
//!
//! Everything here runs under one mutex and never awaits, so each operation
//! (a HELLO, a PUBLISH and its fan-out, a restart) is atomic with respect to
//! the others. Frames for a connection are queued on its channel in the
//! order they were produced; the connection task only writes them out.

use std::collections::{BTreeSet, HashMap, VecDeque};

use redial_core::payload::{Payload, Text};
use redial_core::secret::ResumeToken;
use redial_core::wire::{self, error_code, Frame, Hello, Welcome};
use tokio::sync::mpsc;

use super::names::{is_valid_name, NameGen};
use super::token::{Claims, TokenSigner};
use super::{AppliedPublish, ServerStats, SessionInfo};

/// What a connection task is told to do next, in order with its frames.
#[derive(Debug)]
pub(crate) enum Out {
    /// Write this frame.
    Frame(Frame),
    /// Close the WebSocket with this code and reason.
    Close(u16, String),
}

/// The sending side of a connection's queue.
pub(crate) type OutTx = mpsc::UnboundedSender<Out>;

struct Attached {
    conn: u64,
    tx: OutTx,
}

struct Session {
    id: u64,
    name: String,
    /// H in PROTOCOL.md 8.4: the highest PUBLISH seq stored.
    last_seq: u64,
    /// The last MESSAGE offset assigned.
    last_offset: u64,
    replay: VecDeque<(u64, Frame)>,
    subscriptions: BTreeSet<String>,
    attached: Option<Attached>,
    /// When the last connection was lost (server clock, Unix ms).
    detached_at_ms: u64,
    publishes_applied: u64,
    duplicates_dropped: u64,
    resumes: u64,
}

/// The answer to a HELLO.
pub(crate) enum HelloOutcome {
    /// WELCOME and the replay are queued on the connection; serve `session`.
    Welcome { session: u64 },
    /// Send this ERROR and close.
    Refuse { code: u16, reason: String },
}

/// Fixed settings the table needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub lifetime_ms: u64,
    pub replay_capacity: usize,
}

pub(crate) struct Inner {
    rules: Rules,
    signer: TokenSigner,
    names: NameGen,
    next_session: u64,
    next_nonce: u64,
    sessions: HashMap<u64, Session>,
    by_name: HashMap<String, u64>,
    channels: HashMap<String, BTreeSet<u64>>,
    /// Applied publishes by session name; survives eviction and restarts so
    /// tests can check exactly-once across all of them.
    applied: HashMap<String, Vec<AppliedPublish>>,
}

impl Inner {
    pub(crate) fn new(rules: Rules, signer: TokenSigner, name_seed: u64) -> Self {
        Inner {
            rules,
            signer,
            names: NameGen::new(name_seed),
            next_session: 1,
            next_nonce: 1,
            sessions: HashMap::new(),
            by_name: HashMap::new(),
            channels: HashMap::new(),
            applied: HashMap::new(),
        }
    }

    /// Answers a HELLO from connection `conn`, attaching it to a session on
    /// success (a connection already attached to that session is told to
    /// close: the client has evidently lost it).
    pub(crate) fn hello(
        &mut self,
        hello: &Hello,
        conn: u64,
        tx: &OutTx,
        now_ms: u64,
        stats: &mut ServerStats,
    ) -> HelloOutcome {
        if hello.version < 1 {
            stats.hello_errors += 1;
            return HelloOutcome::Refuse {
                code: error_code::UNSUPPORTED_VERSION,
                reason: format!("supported versions: {}", wire::VERSION),
            };
        }
        let resumable = hello
            .resume_token
            .as_ref()
            .map(|t| self.resumable(t, now_ms));
        let (sid, resumed) = match resumable {
            Some(Some(sid)) => (sid, true),
            other => {
                if other.is_some() {
                    stats.tokens_rejected += 1;
                }
                match self.fresh(hello.name.as_ref().map(Text::as_str)) {
                    Ok(sid) => (sid, false),
                    Err(reason) => {
                        stats.hello_errors += 1;
                        return HelloOutcome::Refuse {
                            code: error_code::NAME_UNAVAILABLE,
                            reason,
                        };
                    }
                }
            }
        };
        let Some(session) = self.sessions.get_mut(&sid) else {
            return HelloOutcome::Refuse {
                code: error_code::INTERNAL,
                reason: "session vanished".into(),
            };
        };
        if resumed {
            stats.sessions_resumed += 1;
            session.resumes += 1;
        } else {
            stats.sessions_created += 1;
        }
        if let Some(old) = session.attached.take() {
            let _ = old.tx.send(Out::Close(
                1000,
                "session resumed on another connection".into(),
            ));
        }
        session.attached = Some(Attached {
            conn,
            tx: tx.clone(),
        });
        // The client has delivered up to last_offset: that is as good as a
        // RECEIVED (only meaningful on a resumed session).
        if resumed {
            session.replay.retain(|(o, _)| *o > hello.last_offset);
        }
        self.next_nonce += 1;
        let token = self.signer.issue(&Claims {
            session_id: session.id,
            name: session.name.clone(),
            issued_unix_ms: now_ms,
            nonce: self.next_nonce,
        });
        let welcome = Welcome {
            version: wire::VERSION,
            resumed,
            session_id: Text::from(session_id_text(session.id)),
            name: Text::from(session.name.clone()),
            resume_token: ResumeToken::new(token),
            token_lifetime_ms: self.rules.lifetime_ms,
            last_client_seq: session.last_seq,
            kept: session
                .subscriptions
                .iter()
                .map(|c| Text::from(c.clone()))
                .collect(),
        };
        // Queued under the table lock, so no fan-out can slip a MESSAGE in
        // ahead of the WELCOME or between replayed ones.
        let _ = tx.send(Out::Frame(Frame::Welcome(welcome)));
        if resumed {
            for (_, f) in &session.replay {
                let _ = tx.send(Out::Frame(f.clone()));
            }
        }
        HelloOutcome::Welcome { session: sid }
    }

    /// The session `token` resumes, if it is genuine, its session still
    /// exists under the same name, and its lifetime has not run out.
    fn resumable(&mut self, token: &ResumeToken, now_ms: u64) -> Option<u64> {
        let claims = self.signer.verify(token.expose()).ok()?;
        let session = self.sessions.get(&claims.session_id)?;
        if session.name != claims.name {
            return None;
        }
        if session.attached.is_none() {
            // PROTOCOL.md 8.6 counts the lifetime from the loss of the
            // connection; the issue time is a floor for tokens minted after
            // it (e.g. by a restart that kept the table).
            let since = claims.issued_unix_ms.max(session.detached_at_ms);
            if now_ms.saturating_sub(since) > self.rules.lifetime_ms {
                self.evict(claims.session_id);
                return None;
            }
        }
        Some(claims.session_id)
    }

    /// Creates a fresh session, with the requested name if it is valid and
    /// not held by a connected session.
    fn fresh(&mut self, requested: Option<&str>) -> Result<u64, String> {
        let name = match requested {
            Some(name) => {
                if !is_valid_name(name) {
                    return Err("subdomain unavailable".into());
                }
                if let Some(&holder) = self.by_name.get(name) {
                    let connected = self
                        .sessions
                        .get(&holder)
                        .is_some_and(|s| s.attached.is_some());
                    if connected {
                        return Err("subdomain unavailable".into());
                    }
                    // Names live as long as their connection: a session
                    // waiting to be resumed gives its name up to a new
                    // requester and is gone for good.
                    self.evict(holder);
                }
                name.to_owned()
            }
            None => self.random_name(),
        };
        let id = self.next_session;
        self.next_session += 1;
        self.by_name.insert(name.clone(), id);
        self.sessions.insert(
            id,
            Session {
                id,
                name,
                last_seq: 0,
                last_offset: 0,
                replay: VecDeque::new(),
                subscriptions: BTreeSet::new(),
                attached: None,
                detached_at_ms: 0,
                publishes_applied: 0,
                duplicates_dropped: 0,
                resumes: 0,
            },
        );
        Ok(id)
    }

    fn random_name(&mut self) -> String {
        for _ in 0..1000 {
            let name = self.names.next_name();
            if !self.by_name.contains_key(&name) {
                return name;
            }
        }
        // The word lists are exhausted (tens of thousands of sessions):
        // stay valid and unique with the session number.
        format!("session-{}", self.next_session)
    }

    fn evict(&mut self, sid: u64) {
        if let Some(s) = self.sessions.remove(&sid) {
            self.by_name.remove(&s.name);
            for ch in &s.subscriptions {
                if let Some(subs) = self.channels.get_mut(ch) {
                    subs.remove(&sid);
                }
            }
        }
    }

    /// Detaches connection `conn` from session `sid` if it is still the
    /// attached one.
    pub(crate) fn detach(&mut self, sid: u64, conn: u64, now_ms: u64) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.attached.as_ref().is_some_and(|a| a.conn == conn) {
            s.attached = None;
            s.detached_at_ms = now_ms;
            if self.rules.lifetime_ms == 0 {
                self.evict(sid);
            }
        }
    }

    /// Applies a PUBLISH (unless it is a duplicate), fans it out, and queues
    /// the cumulative ACK on `reply`. Returns false if the session is gone.
    pub(crate) fn publish(
        &mut self,
        sid: u64,
        seq: u64,
        channel: Option<Text>,
        payload: Payload,
        reply: &OutTx,
        stats: &mut ServerStats,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        if seq <= s.last_seq {
            s.duplicates_dropped += 1;
            stats.duplicates_dropped += 1;
            let ack = s.last_seq;
            let _ = reply.send(Out::Frame(Frame::Ack { seq: ack }));
            return true;
        }
        s.last_seq = seq;
        s.publishes_applied += 1;
        stats.publishes_applied += 1;
        let name = s.name.clone();
        self.applied.entry(name).or_default().push(AppliedPublish {
            seq,
            channel: channel.as_ref().map(|c| c.as_str().to_owned()),
            payload: payload.clone(),
        });
        match channel {
            None => {
                self.deliver(sid, None, payload, stats);
            }
            Some(ch) => {
                self.fan_out(&ch, payload, stats);
            }
        }
        // One ACK per PUBLISH, queued after the MESSAGEs it caused.
        let _ = reply.send(Out::Frame(Frame::Ack { seq }));
        true
    }

    /// Sends `payload` as a MESSAGE on `channel` to every subscriber.
    /// Returns how many sessions it was queued for.
    pub(crate) fn fan_out(
        &mut self,
        channel: &Text,
        payload: Payload,
        stats: &mut ServerStats,
    ) -> usize {
        let targets: Vec<u64> = self
            .channels
            .get(channel.as_str())
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for &t in &targets {
            self.deliver(t, Some(channel.clone()), payload.clone(), stats);
        }
        targets.len()
    }

    /// Numbers a MESSAGE for session `sid`, keeps it for replay and queues it
    /// on the attached connection, if any.
    pub(crate) fn deliver(
        &mut self,
        sid: u64,
        channel: Option<Text>,
        payload: Payload,
        stats: &mut ServerStats,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        s.last_offset += 1;
        let frame = Frame::Message {
            offset: s.last_offset,
            channel,
            payload,
        };
        stats.messages_queued += 1;
        if self.rules.replay_capacity > 0 {
            s.replay.push_back((s.last_offset, frame.clone()));
            while s.replay.len() > self.rules.replay_capacity {
                s.replay.pop_front();
            }
        }
        if let Some(a) = &s.attached {
            let _ = a.tx.send(Out::Frame(frame));
        }
        true
    }

    /// The session id currently holding `name`.
    pub(crate) fn session_by_name(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).copied()
    }

    /// Handles SUBSCRIBE: `denied` decides, the answer goes on `reply`.
    pub(crate) fn subscribe(
        &mut self,
        sid: u64,
        channel: Text,
        denied: bool,
        reply: &OutTx,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        if denied {
            let _ = reply.send(Out::Frame(Frame::SubscribeError {
                channel,
                code: error_code::UNAUTHORIZED,
                reason: Text::from("forbidden"),
            }));
            return true;
        }
        s.subscriptions.insert(channel.as_str().to_owned());
        self.channels
            .entry(channel.as_str().to_owned())
            .or_default()
            .insert(sid);
        let _ = reply.send(Out::Frame(Frame::Subscribed { channel }));
        true
    }

    /// Handles UNSUBSCRIBE (no reply, per PROTOCOL.md 8.3).
    pub(crate) fn unsubscribe(&mut self, sid: u64, channel: &str) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        s.subscriptions.remove(channel);
        if let Some(subs) = self.channels.get_mut(channel) {
            subs.remove(&sid);
        }
        true
    }

    /// Handles RECEIVED: MESSAGEs up to `offset` need no replay any more.
    pub(crate) fn received(&mut self, sid: u64, offset: u64) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        while s.replay.front().is_some_and(|(o, _)| *o <= offset) {
            s.replay.pop_front();
        }
        true
    }

    /// A restart: every connection is being closed by the caller. With
    /// `keep_key` the table survives (detached as of `now_ms`) so tokens
    /// resume; otherwise the key rotates and every session is forgotten.
    pub(crate) fn restart(&mut self, keep_key: bool, new_signer: Option<TokenSigner>, now_ms: u64) {
        if keep_key {
            for s in self.sessions.values_mut() {
                if s.attached.take().is_some() {
                    s.detached_at_ms = now_ms;
                }
            }
        } else {
            if let Some(signer) = new_signer {
                self.signer = signer;
            }
            self.sessions.clear();
            self.by_name.clear();
            self.channels.clear();
        }
    }

    /// What tests may look at about the session named `name`.
    pub(crate) fn info(&self, name: &str) -> Option<SessionInfo> {
        let s = self.sessions.get(self.by_name.get(name)?)?;
        Some(SessionInfo {
            name: s.name.clone(),
            session_id: session_id_text(s.id),
            connected: s.attached.is_some(),
            last_client_seq: s.last_seq,
            last_offset: s.last_offset,
            replay_len: s.replay.len(),
            subscriptions: s.subscriptions.iter().cloned().collect(),
            publishes_applied: s.publishes_applied,
            duplicates_dropped: s.duplicates_dropped,
            resumes: s.resumes,
        })
    }

    /// Every publish applied for sessions named `name`, in order.
    pub(crate) fn applied(&self, name: &str) -> Vec<AppliedPublish> {
        self.applied.get(name).cloned().unwrap_or_default()
    }

    /// Names of the sessions in the table.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_name.keys().cloned().collect();
        v.sort();
        v
    }
}

fn session_id_text(id: u64) -> String {
    format!("s-{id:x}")
}
