//! Model-based test of the session core: a reference model of one client's
//! session (what the store holds, what the client should receive), run side
//! by side with a real `Connection` on the scripted store over generated
//! sequences of connects, drops, publishes, duplicates, subscriptions,
//! broadcasts and RECEIVEDs (proptest-state-machine).
//!
//! Checked after every step: WELCOME resumes exactly when the model has a
//! session and reports its H and subscriptions; ACKs never decrease and
//! equal the model's H; every publish is applied once; every MESSAGE with
//! offset `o` carries the `o`-th entry appended for the session, offsets
//! strictly increase across reconnects (replay in order, never below the
//! resume point), and they skip only when the store dropped entries. At
//! the end a client that keeps confirming receives everything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use redial_core::payload::{Payload, Text};
use redial_core::secret::ResumeToken;
use redial_core::wire::{Frame, Hello};
use redial_server::testing::{at, Driver, ScriptedStore};
use redial_server::token::TokenKey;
use redial_server::{AllowAll, ServerConfig};

const CHANNELS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
struct Model {
    /// The store keeps at most this many numbered MESSAGEs per session.
    backlog: Option<usize>,
    connected: bool,
    has_session: bool,
    /// H: the highest seq stored.
    h: u64,
    subs: BTreeSet<usize>,
    /// Ids of the entries appended for the session, in order.
    expected: Vec<u64>,
    next_id: u64,
}

#[derive(Debug, Clone)]
enum Transition {
    Connect,
    Drop,
    Publish(Option<usize>),
    Duplicate(u64),
    Subscribe(usize),
    Unsubscribe(usize),
    Broadcast(usize),
    Receive,
}

struct Ref;

impl ReferenceStateMachine for Ref {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        prop_oneof![Just(None), (1usize..5).prop_map(Some)]
            .prop_map(|backlog| Model {
                backlog,
                connected: false,
                has_session: false,
                h: 0,
                subs: BTreeSet::new(),
                expected: Vec::new(),
                next_id: 1,
            })
            .boxed()
    }

    fn transitions(m: &Model) -> BoxedStrategy<Transition> {
        let ch = 0..CHANNELS.len();
        if !m.connected {
            return prop_oneof![
                3 => Just(Transition::Connect),
                1 => ch.prop_map(Transition::Broadcast),
            ]
            .boxed();
        }
        prop_oneof![
            1 => Just(Transition::Drop),
            3 => proptest::option::of(ch.clone()).prop_map(Transition::Publish),
            1 => (1..=m.h.max(1)).prop_map(Transition::Duplicate),
            2 => ch.clone().prop_map(Transition::Subscribe),
            1 => ch.clone().prop_map(Transition::Unsubscribe),
            3 => ch.prop_map(Transition::Broadcast),
            3 => Just(Transition::Receive),
        ]
        .boxed()
    }

    fn preconditions(m: &Model, t: &Transition) -> bool {
        match t {
            Transition::Connect => !m.connected,
            Transition::Broadcast(_) => true,
            Transition::Duplicate(s) => m.connected && *s <= m.h,
            _ => m.connected,
        }
    }

    fn apply(mut m: Model, t: &Transition) -> Model {
        match t {
            Transition::Connect => {
                m.connected = true;
                m.has_session = true;
            }
            Transition::Drop => m.connected = false,
            Transition::Publish(ch) => {
                m.h += 1;
                if let Some(c) = ch {
                    let id = m.next_id;
                    m.next_id += 1;
                    if m.subs.contains(c) {
                        m.expected.push(id);
                    }
                }
            }
            Transition::Duplicate(_) | Transition::Receive => {}
            Transition::Subscribe(c) => {
                m.subs.insert(*c);
            }
            Transition::Unsubscribe(c) => {
                m.subs.remove(c);
            }
            Transition::Broadcast(c) => {
                let id = m.next_id;
                m.next_id += 1;
                if m.subs.contains(c) {
                    m.expected.push(id);
                }
            }
        }
        m
    }
}

struct Sut {
    cfg: Arc<ServerConfig>,
    store: ScriptedStore,
    driver: Option<Driver>,
    /// Frames of the current connection already looked at.
    seen: usize,
    token: Option<ResumeToken>,
    /// Highest offset the client delivered.
    delivered: u64,
    /// Highest ACK on this connection.
    acked: u64,
    now: u64,
    seeds: u64,
    publishes: u64,
}

impl Sut {
    fn tick(&mut self) -> u64 {
        self.now += 1;
        self.now
    }

    fn route_notices(&mut self) {
        let now = self.tick();
        let notices = self.store.take_notices();
        if let Some(d) = &mut self.driver {
            d.notices(&mut self.store, now, &notices);
        }
    }

    /// Checks the new frames like a client would, against the model.
    fn absorb(&mut self, m: &Model) {
        let d = self.driver.as_ref().unwrap();
        let new: Vec<Frame> = d.sent_since(self.seen).to_vec();
        self.seen = d.sent.len();
        for f in new {
            match f {
                Frame::Welcome(w) => {
                    self.token = Some(w.resume_token.clone());
                    self.acked = w.last_client_seq;
                }
                Frame::Ack { seq } => {
                    assert!(seq >= self.acked, "ACK went back: {} -> {seq}", self.acked);
                    self.acked = seq;
                }
                Frame::Message {
                    offset, payload, ..
                } => {
                    assert!(
                        offset > self.delivered,
                        "offset {offset} not above delivered {}",
                        self.delivered
                    );
                    if m.backlog.is_none() {
                        assert_eq!(offset, self.delivered + 1, "gap without a store skip");
                    }
                    let id: u64 = payload.as_text().unwrap().parse().unwrap();
                    let want = usize::try_from(offset - 1).unwrap();
                    assert_eq!(
                        m.expected.get(want),
                        Some(&id),
                        "offset {offset} carries the wrong entry"
                    );
                    self.delivered = offset;
                }
                Frame::Subscribed { .. } | Frame::SubscribeError { .. } => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

struct Test;

impl StateMachineTest for Test {
    type SystemUnderTest = Sut;
    type Reference = Ref;

    fn init_test(m: &Model) -> Sut {
        let cfg = ServerConfig::builder()
            .key(TokenKey::new(1, [5; 32]))
            .outbound_window(4, 1 << 20)
            .fetch_batch(2)
            .max_backlog(6)
            .token_lifetime_ms(1 << 40)
            .build()
            .unwrap();
        let mut store = ScriptedStore::new();
        store.backlog = m.backlog;
        Sut {
            cfg: Arc::new(cfg),
            store,
            driver: None,
            seen: 0,
            token: None,
            delivered: 0,
            acked: 0,
            now: 0,
            seeds: 0,
            publishes: 0,
        }
    }

    fn apply(mut s: Sut, m: &Model, t: Transition) -> Sut {
        let now = s.tick();
        match t {
            Transition::Connect => {
                s.seeds += 1;
                let mut d = Driver::new(now, s.cfg.clone(), Arc::new(AllowAll), s.seeds);
                let hello = Frame::Hello(Hello {
                    version: 1,
                    resume_token: s.token.clone(),
                    last_offset: s.delivered,
                    name: None,
                });
                d.frame(&mut s.store, now, &hello);
                let Some(Frame::Welcome(w)) = d.sent.first().cloned() else {
                    panic!("no WELCOME: {:?}", d.sent);
                };
                assert_eq!(w.resumed, s.token.is_some(), "resumed flag");
                assert_eq!(w.last_client_seq, m.h);
                let kept: Vec<Text> = m.subs.iter().map(|&c| Text::from(CHANNELS[c])).collect();
                assert_eq!(w.kept, kept);
                s.seen = 0;
                s.driver = Some(d);
                s.absorb(m);
            }
            Transition::Drop => {
                let mut d = s.driver.take().unwrap();
                d.conn.handle_closed(at(now));
                d.run(&mut s.store, now);
            }
            Transition::Publish(ch) => {
                let seq = m.h;
                s.publishes += 1;
                let f = Frame::Publish {
                    seq,
                    channel: ch.map(|c| Text::from(CHANNELS[c])),
                    payload: Payload::text((m.next_id - u64::from(ch.is_some())).to_string()),
                };
                let d = s.driver.as_mut().unwrap();
                d.frame(&mut s.store, now, &f);
                s.absorb(m);
                assert_eq!(s.acked, m.h);
                s.route_notices();
                s.absorb(m);
            }
            Transition::Duplicate(seq) => {
                let f = Frame::Publish {
                    seq,
                    channel: Some(Text::from("a")),
                    payload: Payload::text("dup"),
                };
                s.driver.as_mut().unwrap().frame(&mut s.store, now, &f);
                s.absorb(m);
                assert_eq!(s.acked, m.h);
            }
            Transition::Subscribe(c) => {
                let f = Frame::Subscribe {
                    channel: Text::from(CHANNELS[c]),
                };
                s.driver.as_mut().unwrap().frame(&mut s.store, now, &f);
                s.absorb(m);
            }
            Transition::Unsubscribe(c) => {
                let f = Frame::Unsubscribe {
                    channel: Text::from(CHANNELS[c]),
                };
                s.driver.as_mut().unwrap().frame(&mut s.store, now, &f);
                s.absorb(m);
            }
            Transition::Broadcast(c) => {
                let id = m.next_id - 1;
                s.store
                    .broadcast(CHANNELS[c], &Payload::text(id.to_string()));
                s.route_notices();
                if s.driver.is_some() {
                    s.absorb(m);
                }
            }
            Transition::Receive => {
                let f = Frame::Received {
                    offset: s.delivered,
                };
                s.driver.as_mut().unwrap().frame(&mut s.store, now, &f);
                s.absorb(m);
            }
        }
        s
    }

    fn check_invariants(s: &Sut, m: &Model) {
        assert_eq!(
            s.store.applied.len() as u64,
            m.h,
            "each publish applied once"
        );
        if let Some(d) = &s.driver {
            assert!(d.closed.is_none(), "closed: {:?}", d.closed);
        }
    }

    fn teardown(mut s: Sut, m: Model) {
        // A client that keeps confirming gets everything the store kept.
        if s.driver.is_none() {
            s = Self::apply(s, &m, Transition::Connect);
        }
        for _ in 0..m.expected.len() + 2 {
            s = Self::apply(s, &m, Transition::Receive);
        }
        let total = m.expected.len() as u64;
        assert_eq!(s.delivered, total, "not everything was delivered");
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn connection_follows_the_model(sequential 1..60 => Test);
}
