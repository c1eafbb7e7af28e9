//! A whole-system simulation without sockets: real client [`Session`]s
//! (redial-core, `Wire`), real server [`Connection`]s (redial-server's
//! sans-IO core) on a few nodes and one [`MemoryStore`], all on one
//! virtual clock, joined by in-memory links that can be cut, blackholed,
//! delayed or left unread.
//!
//! [`World::apply`] carries out one [`Step`]; [`World::check`] says whether
//! every invariant held so far. The invariants are checked as the events
//! come out, against what the world saw happen:
//!
//! - every publish is applied at most once per server session, and a
//!   publish the client saw acknowledged was applied;
//! - a subscriber never sees a message more often than it was applied, and
//!   its offsets increase, with gaps adding up to no more than the store
//!   trimmed;
//! - a client that presents its resume token within the token lifetime, to
//!   a node with the key that signed it, for a session the store still
//!   keeps, is resumed, and one that does not is not;
//! - no client dials more than [`MAX_DIALS_PER_SECOND`] times in any second
//!   of virtual time, and no instant of virtual time takes more than
//!   [`MAX_TURNS_PER_INSTANT`] turns (no busy loop anywhere).
//!
//! # Running the store without a runtime
//!
//! The [`Store`] trait is asynchronous. [`MemoryStore`] never waits, so
//! every store call is polled exactly once (`FutureExt::now_or_never`) and
//! its result handed straight back to the connection, in the order the
//! calling contract asks for: no executor, no threads. A store future that
//! is not ready at once is reported as a violation rather than waited for.
//!
//! # Time
//!
//! Milliseconds since the start, and `origin + now` as the `Instant` the
//! client and server cores take. The store's times and the tokens' issue
//! times are those milliseconds: the servers' [`WallClock`] is anchored at
//! Unix millisecond 0 at the origin. A link
//! delivers each direction in order, every frame `delay` after it was
//! written (or after the frame before it). A [`Step::ClockJump`] moves the
//! clock at once: everything that fell due meanwhile runs at the new
//! instant, as after a suspended laptop.
//!
//! # Bounds
//!
//! A link that is not read (a slow consumer) takes at most
//! [`SOCKET_FRAMES`] frames before the server's writes stop completing, so
//! the server's outbound window and stall timer decide what happens, as
//! with a real socket.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use redial_core::{
    Action as ClientAction, CloseFrame, Config, DialFailure, Event, Frame, Payload, Session, Wire,
};
use redial_server::memory::MemoryStore;
use redial_server::store::{
    Decorate, Notices, Owner, PublishOutcome, SessionId, SessionState, Store, StoreFuture,
};
use redial_server::token::TokenKey;
use redial_server::{
    Action as ServerAction, AllowAll, Connection, Phase, ServerConfig, StoreOp, StoreReply,
    WallClock,
};

/// Frames an unread link holds before the server's writes stop completing.
pub const SOCKET_FRAMES: usize = 4;
/// More dials than this by one client within one second of virtual time is
/// a tight loop.
pub const MAX_DIALS_PER_SECOND: usize = 3;
/// More turns than this at one instant of virtual time is a busy loop.
pub const MAX_TURNS_PER_INSTANT: usize = 10_000;
/// Channels the clients publish to and subscribe to.
pub const CHANNELS: [&str; 2] = ["a", "b"];

/// Near the token lifetime's edge, link delays decide whether a token is
/// still good; the resume check skips presentations this close to it.
const EDGE_MS: u64 = 1_000;

/// One thing that happens to the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Client `client` publishes a fresh message to `CHANNELS[channel]`.
    Publish {
        /// Which client.
        client: usize,
        /// Index into [`CHANNELS`].
        channel: usize,
    },
    /// Client `client` subscribes to `CHANNELS[channel]`.
    Subscribe {
        /// Which client.
        client: usize,
        /// Index into [`CHANNELS`].
        channel: usize,
    },
    /// The client's link is reset: both ends see it close at once.
    Cut {
        /// Which client.
        client: usize,
    },
    /// The client's link goes silent: nothing more arrives either way and
    /// neither end is told.
    Blackhole {
        /// Which client.
        client: usize,
    },
    /// The client's links deliver `ms` after writing, from now on.
    Delay {
        /// Which client.
        client: usize,
        /// The one-way delay.
        ms: u64,
    },
    /// The client stops reading its current link.
    SlowConsumer {
        /// Which client.
        client: usize,
    },
    /// The node's process dies and starts again at once: its connections
    /// vanish without a detach; with `keep_key` false it comes back with a
    /// new token key, so tokens it signed before no longer verify there.
    Restart {
        /// Which node.
        node: usize,
        /// Whether the node keeps its token key.
        keep_key: bool,
    },
    /// The node sends GOING_AWAY on every connection and refuses dials for
    /// its retry-after.
    GoingAway {
        /// Which node.
        node: usize,
    },
    /// Time passes, everything due runs in order.
    Advance {
        /// How long.
        ms: u64,
    },
    /// The clock leaps forward; everything due runs at the new instant.
    ClockJump {
        /// How far.
        ms: u64,
    },
    /// The client's link is cut and the clock leaps past the token
    /// lifetime: its token (and every other disconnected client's) expires.
    TokenExpiry {
        /// Which client.
        client: usize,
    },
}

/// The shape of a simulated system.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Client sessions.
    pub clients: usize,
    /// Server nodes sharing the store.
    pub nodes: usize,
    /// The servers' token lifetime.
    pub token_lifetime_ms: u64,
    /// MESSAGEs the store keeps per session before it trims the oldest.
    pub backlog: usize,
    /// The one-way delay of a new link until a [`Step::Delay`].
    pub delay_ms: u64,
    /// Seeds every client and node.
    pub seed: u64,
    /// Runs the store behind [`LosesDedupeMark`]: a planted bug the
    /// invariants must catch.
    pub planted_bug: bool,
    /// Prints every client event and store call to stderr, to read a
    /// failing case.
    pub trace: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            clients: 3,
            nodes: 2,
            token_lifetime_ms: 30_000,
            backlog: 3,
            delay_ms: 5,
            seed: 1,
            planted_bug: false,
            trace: false,
        }
    }
}

/// A store that loses its dedupe mark: on resume it reports the highest
/// stored seq one lower than it is, and a PUBLISH at or below the mark is
/// stored again. A planted bug for the simulation to catch; nothing but
/// the simulation's own test uses it.
pub struct LosesDedupeMark {
    inner: Arc<MemoryStore>,
}

impl Decorate for LosesDedupeMark {
    type Inner = MemoryStore;

    fn inner(&self) -> &MemoryStore {
        &self.inner
    }

    fn resume<'a>(
        &'a self,
        session: &'a SessionId,
        lifetime_ms: u64,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<SessionState>> {
        Box::pin(async move {
            let state = Store::resume(&*self.inner, session, lifetime_ms, now_ms).await?;
            Ok(state.map(|mut s| {
                s.last_client_seq = s.last_client_seq.saturating_sub(1);
                s
            }))
        })
    }

    fn publish<'a>(
        &'a self,
        owner: &'a Owner,
        seq: u64,
        channel: Option<&'a str>,
        payload: &'a Payload,
    ) -> StoreFuture<'a, PublishOutcome> {
        Box::pin(async move {
            let outcome = Store::publish(&*self.inner, owner, seq, channel, payload).await?;
            if outcome == PublishOutcome::Duplicate {
                if let Some(c) = channel {
                    Store::broadcast(&*self.inner, c, payload).await?;
                }
            }
            Ok(PublishOutcome::Applied)
        })
    }
}

/// What travels on a link.
#[derive(Debug)]
enum Item {
    Frame(Frame),
    /// The sender closed (with a close frame) or the connection reset.
    Close(Option<CloseFrame>),
}

#[derive(Debug)]
struct Link {
    id: u64,
    client: usize,
    node: usize,
    node_epoch: u64,
    delay_ms: u64,
    blackholed: bool,
    /// The client stopped reading.
    paused: bool,
    to_server: VecDeque<(u64, Item)>,
    to_client: VecDeque<(u64, Item)>,
    /// Server writes not yet reported complete (the socket was full).
    owed_written: usize,
    client_gone: bool,
    server_gone: bool,
    /// The key of the node when the link was made.
    node_key: u8,
}

impl Link {
    fn push(queue: &mut VecDeque<(u64, Item)>, at: u64, item: Item) {
        let at = queue.back().map_or(at, |(last, _)| at.max(*last));
        queue.push_back((at, item));
    }
}

struct Node {
    config: Arc<ServerConfig>,
    key: u8,
    epoch: u64,
    refuse_until: u64,
    notices: Notices,
    conns: BTreeMap<u64, Connection>,
    seeds: u64,
}

#[derive(Debug, Default)]
struct Client {
    link: Option<u64>,
    /// A dial in flight: when it is answered and by which node.
    dial: Option<(u64, usize)>,
    delay_ms: u64,
    dials: VecDeque<u64>,
    dial_count: usize,
    connected: bool,
    closed: bool,
    /// When the last established connection was lost.
    lost_at: Option<u64>,
    /// The server session, the key that signed its token.
    session: Option<(String, u8)>,
    /// What the world expects of the handshake in flight: resumed or not,
    /// `None` when too close to an edge to say.
    expect_resumed: Option<Option<bool>>,
    published: u64,
    /// seq -> payload id, not yet acknowledged.
    unacked: BTreeMap<u64, String>,
    last_offset: u64,
    /// Deliveries of each payload id in this server session.
    seen: HashMap<String, u32>,
}

/// Store-side facts the world tracks to judge resumes.
#[derive(Debug, Default)]
struct Held {
    name: String,
    /// When the holder detached, `None` while connected.
    detached_at: Option<u64>,
    ended: bool,
}

/// Counters a run reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Steps applied.
    pub steps: u64,
    /// Publishes the store applied.
    pub applied: u64,
    /// Messages delivered to clients.
    pub delivered: u64,
    /// Handshakes that resumed a session.
    pub resumed: u64,
    /// Handshakes that started a fresh session after having one.
    pub fresh: u64,
    /// Dials.
    pub dials: u64,
    /// Offsets clients reported missing.
    pub gaps: u64,
}

/// The simulated system.
pub struct World {
    cfg: SimConfig,
    origin: Instant,
    now: u64,
    memory: Arc<MemoryStore>,
    store: Box<dyn Store>,
    nodes: Vec<Node>,
    clients: Vec<Session>,
    obs: Vec<Client>,
    links: HashMap<u64, Link>,
    next_link: u64,
    next_key: u8,
    /// Applications per (session, payload id), and per payload id in all.
    applied: HashMap<(String, String), u32>,
    applied_total: HashMap<String, u32>,
    held: HashMap<String, Held>,
    violations: Vec<String>,
    tally: Tally,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("now", &self.now)
            .field("tally", &self.tally)
            .finish_non_exhaustive()
    }
}

impl World {
    /// A system with every client connecting at time 0.
    ///
    /// # Panics
    /// When `cfg` asks for a store the memory store refuses (a backlog of 0).
    pub fn new(cfg: SimConfig) -> Self {
        let memory = match MemoryStore::builder().backlog(cfg.backlog).build() {
            Ok(m) => Arc::new(m),
            Err(e) => panic!("simulation store config: {e}"),
        };
        let store: Box<dyn Store> = if cfg.planted_bug {
            Box::new(LosesDedupeMark {
                inner: Arc::clone(&memory),
            })
        } else {
            Box::new(Shared(Arc::clone(&memory)))
        };
        let mut world = World {
            origin: Instant::now(),
            now: 0,
            nodes: Vec::new(),
            clients: Vec::new(),
            obs: Vec::new(),
            links: HashMap::new(),
            next_link: 0,
            next_key: 1,
            applied: HashMap::new(),
            applied_total: HashMap::new(),
            held: HashMap::new(),
            violations: Vec::new(),
            tally: Tally::default(),
            memory,
            store,
            cfg,
        };
        for n in 0..world.cfg.nodes {
            let node = world.node(n, 1, 0);
            world.nodes.push(node);
        }
        for c in 0..world.cfg.clients {
            let seed = world.cfg.seed.wrapping_mul(1_000).wrapping_add(c as u64);
            let config = match Config::builder().seed(seed).build() {
                Ok(config) => config,
                Err(e) => panic!("simulation client config: {e}"),
            };
            let mut session = Session::new(config, Wire);
            session.handle_connect(world.origin);
            world.clients.push(session);
            world.obs.push(Client {
                delay_ms: world.cfg.delay_ms,
                ..Client::default()
            });
            world.drain_client(c);
        }
        world.run_until(0);
        world
    }

    fn node(&self, n: usize, key: u8, epoch: u64) -> Node {
        let config = ServerConfig::builder()
            .key(TokenKey::new(key, [key; 32]))
            .token_lifetime_ms(self.cfg.token_lifetime_ms)
            .outbound_window(8, 1 << 16)
            .fetch_batch(4)
            .max_backlog(16)
            .stall_timeout_ms(2_000)
            .going_away(1_000, 1_000)
            .drain_timeout_ms(1_000)
            .seed(self.cfg.seed ^ ((n as u64 + 1) << 40) ^ (epoch << 20))
            .build()
            .map(Arc::new);
        let config = match config {
            Ok(c) => c,
            // The values above are valid; a failure here is a bug in them.
            Err(e) => panic!("simulation server config: {e}"),
        };
        Node {
            config,
            key,
            epoch,
            refuse_until: 0,
            notices: self.store.notices(),
            conns: BTreeMap::new(),
            seeds: 0,
        }
    }

    /// The virtual time, in milliseconds since the start.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// What happened so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Whether client `c` is connected now.
    pub fn connected(&self, c: usize) -> bool {
        self.obs.get(c).is_some_and(|o| o.connected)
    }

    /// Whether client `c`'s session ended for good.
    pub fn closed(&self, c: usize) -> bool {
        self.obs.get(c).is_some_and(|o| o.closed)
    }

    /// Publishes of client `c` not acknowledged yet.
    pub fn unacked(&self, c: usize) -> usize {
        self.obs.get(c).map_or(0, |o| o.unacked.len())
    }

    /// The channels client `c`'s session is subscribed to.
    pub fn subscriptions(&self, c: usize) -> Vec<String> {
        self.clients.get(c).map_or_else(Vec::new, |s| {
            s.subscriptions().map(|t| t.as_str().to_owned()).collect()
        })
    }

    /// `Ok` while every invariant held; the first violation otherwise.
    pub fn check(&self) -> Result<(), String> {
        match self.violations.first() {
            Some(v) => Err(v.clone()),
            None => Ok(()),
        }
    }

    fn violation(&mut self, what: String) {
        self.violations.push(format!("t={} ms: {what}", self.now));
    }

    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    fn ms(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.origin);
        // Rounded up, so a timer never runs before it is due.
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if Duration::from_millis(ms) < d {
            ms.saturating_add(1)
        } else {
            ms
        }
    }

    /// Carries out one step.
    pub fn apply(&mut self, step: &Step) {
        self.tally.steps += 1;
        match *step {
            Step::Publish { client, channel } => {
                let Some(session) = self.clients.get_mut(client) else {
                    return;
                };
                let o = &mut self.obs[client];
                o.published += 1;
                let id = format!("c{client}-{}", o.published);
                let now = self.origin + Duration::from_millis(self.now);
                let channel = CHANNELS[channel % CHANNELS.len()];
                if let Ok(seq) = session.handle_publish(now, channel, Payload::text(id.clone())) {
                    o.unacked.insert(seq, id);
                }
                self.drain_client(client);
            }
            Step::Subscribe { client, channel } => {
                let now = self.at(self.now);
                let Some(session) = self.clients.get_mut(client) else {
                    return;
                };
                let _ = session.handle_subscribe(now, CHANNELS[channel % CHANNELS.len()]);
                self.drain_client(client);
            }
            Step::Cut { client } => self.cut(client),
            Step::Blackhole { client } => {
                if let Some(l) = self.obs.get(client).and_then(|o| o.link) {
                    if let Some(link) = self.links.get_mut(&l) {
                        link.blackholed = true;
                        link.to_server.clear();
                        link.to_client.clear();
                    }
                }
            }
            Step::Delay { client, ms } => {
                if let Some(o) = self.obs.get_mut(client) {
                    o.delay_ms = ms;
                    if let Some(link) = o.link.and_then(|l| self.links.get_mut(&l)) {
                        link.delay_ms = ms;
                    }
                }
            }
            Step::SlowConsumer { client } => {
                if let Some(link) = self
                    .obs
                    .get(client)
                    .and_then(|o| o.link)
                    .and_then(|l| self.links.get_mut(&l))
                {
                    link.paused = true;
                }
            }
            Step::Restart { node, keep_key } => self.restart(node, keep_key),
            Step::GoingAway { node } => self.going_away(node),
            Step::Advance { ms } => self.run_until(self.now.saturating_add(ms)),
            Step::ClockJump { ms } => self.jump(ms),
            Step::TokenExpiry { client } => {
                self.cut(client);
                self.jump(self.cfg.token_lifetime_ms + EDGE_MS);
            }
        }
        self.run_until(self.now);
    }

    /// Ends a run: every link heals its pause, and two minutes pass, so
    /// everything that can finish does.
    pub fn settle(&mut self) {
        for link in self.links.values_mut() {
            link.paused = false;
        }
        self.run_until(self.now + 120_000);
    }

    fn jump(&mut self, ms: u64) {
        self.now = self.now.saturating_add(ms);
        self.run_until(self.now);
    }

    fn cut(&mut self, client: usize) {
        let Some(l) = self.obs.get_mut(client).and_then(|o| o.link.take()) else {
            return;
        };
        let Some(link) = self.links.remove(&l) else {
            return;
        };
        let now = self.at(self.now);
        self.clients[client].handle_transport_closed(now, None);
        self.drain_client(client);
        if !link.server_gone {
            self.server_closed(link.node, link.node_epoch, l);
        }
    }

    fn restart(&mut self, node: usize, keep_key: bool) {
        let Some(n) = self.nodes.get(node) else {
            return;
        };
        let key = if keep_key {
            n.key
        } else {
            self.next_key = self.next_key.wrapping_add(1).max(2);
            self.next_key
        };
        let epoch = n.epoch + 1;
        // The process is gone: its connections vanish with no detach, and
        // every peer sees a reset.
        let fresh = self.node(node, key, epoch);
        self.nodes[node] = fresh;
        for link in self.links.values_mut() {
            if link.node == node && !link.server_gone {
                link.server_gone = true;
                link.to_server.clear();
                link.to_client.clear();
                if !link.blackholed {
                    let at = self.now + link.delay_ms;
                    Link::push(&mut link.to_client, at, Item::Close(None));
                }
            }
        }
    }

    fn going_away(&mut self, node: usize) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        let (retry, window) = n.config.going_away();
        n.refuse_until = self.now + retry;
        let ids: Vec<u64> = n.conns.keys().copied().collect();
        for id in ids {
            let instant = self.at(self.now);
            if let Some(conn) = self.nodes[node].conns.get_mut(&id) {
                conn.handle_going_away(instant, retry, window);
            }
            self.drain_conn(node, id);
        }
    }

    /// Runs everything due up to `until`, in time order, then sets the
    /// clock there.
    fn run_until(&mut self, until: u64) {
        let mut turns_at_now = 0usize;
        while let Some(next) = self.next_due() {
            if next > until {
                break;
            }
            if next > self.now {
                self.now = next;
                turns_at_now = 0;
            }
            turns_at_now += 1;
            if turns_at_now > MAX_TURNS_PER_INSTANT {
                self.violation(format!(
                    "over {MAX_TURNS_PER_INSTANT} turns at one instant: a busy loop"
                ));
                break;
            }
            self.turn();
            if !self.violations.is_empty() {
                break;
            }
        }
        self.now = self.now.max(until);
    }

    /// The earliest instant something is due.
    fn next_due(&self) -> Option<u64> {
        let clients = self
            .clients
            .iter()
            .zip(&self.obs)
            .filter_map(|(s, o)| {
                let timer = s.poll_timeout().map(|t| self.ms(t));
                let dial = o.dial.map(|(at, _)| at);
                timer.into_iter().chain(dial).min()
            })
            .min();
        let conns = self
            .nodes
            .iter()
            .flat_map(|n| n.conns.values())
            .filter_map(|c| c.poll_timeout().map(|t| self.ms(t)))
            .min();
        let links = self.links.values().filter_map(|l| self.link_due(l)).min();
        [clients, conns, links].into_iter().flatten().min()
    }

    fn link_due(&self, l: &Link) -> Option<u64> {
        let to_client = (!l.paused && !l.client_gone)
            .then(|| l.to_client.front().map(|(at, _)| *at))
            .flatten();
        let to_server = (!l.server_gone && self.wants_input(l))
            .then(|| l.to_server.front().map(|(at, _)| *at))
            .flatten();
        to_client.into_iter().chain(to_server).min()
    }

    fn wants_input(&self, l: &Link) -> bool {
        let Some(n) = self.nodes.get(l.node) else {
            return false;
        };
        if n.epoch != l.node_epoch {
            return false;
        }
        let id = l.id;
        // A close is always read; frames only while the core wants them.
        match (n.conns.get(&id), l.to_server.front()) {
            (Some(_), Some((_, Item::Close(_)))) => true,
            (Some(c), _) => c.wants_input(),
            (None, _) => false,
        }
    }

    /// Runs one of the things due at `now`.
    fn turn(&mut self) {
        let now = self.now;
        let at = self.at(now);
        for c in 0..self.clients.len() {
            if let Some((due, node)) = self.obs[c].dial {
                if due <= now {
                    self.obs[c].dial = None;
                    self.dial_answered(c, node);
                    return;
                }
            }
            if self.clients[c]
                .poll_timeout()
                .is_some_and(|t| self.ms(t) <= now)
            {
                self.clients[c].handle_timeout(at);
                self.drain_client(c);
                return;
            }
        }
        for n in 0..self.nodes.len() {
            let due = self.nodes[n]
                .conns
                .iter()
                .find(|(_, c)| c.poll_timeout().is_some_and(|t| self.ms(t) <= now))
                .map(|(id, _)| *id);
            if let Some(id) = due {
                if let Some(conn) = self.nodes[n].conns.get_mut(&id) {
                    conn.handle_timeout(at);
                }
                self.drain_conn(n, id);
                return;
            }
        }
        let mut ids: Vec<u64> = self.links.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(l) = self.links.get(&id) else {
                continue;
            };
            let to_client =
                !l.paused && !l.client_gone && l.to_client.front().is_some_and(|(t, _)| *t <= now);
            if to_client {
                self.deliver_to_client(id);
                return;
            }
            let to_server = !l.server_gone
                && self.wants_input(l)
                && l.to_server.front().is_some_and(|(t, _)| *t <= now);
            if to_server {
                self.deliver_to_server(id);
                return;
            }
        }
    }

    fn dial_answered(&mut self, c: usize, node: usize) {
        let at = self.at(self.now);
        let up = self
            .nodes
            .get(node)
            .is_some_and(|n| n.refuse_until <= self.now);
        if !up {
            self.clients[c].handle_dial_failed(at, DialFailure::Io("connection refused".into()));
            self.drain_client(c);
            return;
        }
        let id = self.next_link;
        self.next_link += 1;
        let (instant, wall) = (self.at(self.now), WallClock::new(self.origin, 0));
        let n = &mut self.nodes[node];
        n.seeds += 1;
        // Distinct per node, restart and connection, as a node derives them.
        let seed = n
            .config
            .seed()
            .wrapping_add(n.epoch.wrapping_mul(1 << 20))
            .wrapping_add(n.seeds)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let conn = Connection::new(
            instant,
            wall,
            Arc::clone(&n.config),
            Arc::new(AllowAll),
            None,
            seed,
        );
        n.conns.insert(id, conn);
        let key = n.key;
        let epoch = n.epoch;
        self.links.insert(
            id,
            Link {
                id,
                client: c,
                node,
                node_epoch: epoch,
                delay_ms: self.obs[c].delay_ms,
                blackholed: false,
                paused: false,
                to_server: VecDeque::new(),
                to_client: VecDeque::new(),
                owed_written: 0,
                client_gone: false,
                server_gone: false,
                node_key: key,
            },
        );
        self.obs[c].link = Some(id);
        self.expect_resume(c, key);
        self.clients[c].handle_dial_ok(at);
        self.drain_client(c);
    }

    /// What the handshake starting now should end in: the client presents
    /// its token while its lifetime (counted from the loss) lasts; the node
    /// accepts it with the key that signed it; the store resumes a session
    /// it keeps (not ended, and connected or detached less than a lifetime
    /// ago).
    fn expect_resume(&mut self, c: usize, node_key: u8) {
        let life = self.cfg.token_lifetime_ms;
        let near = |elapsed: u64| elapsed.abs_diff(life) <= EDGE_MS;
        let o = &self.obs[c];
        let expect = match &o.session {
            None => Some(false),
            Some((id, key)) => {
                let since_loss = o.lost_at.map(|l| self.now.saturating_sub(l));
                let held = self.held.get(id);
                let since_detach = held
                    .and_then(|h| h.detached_at)
                    .map(|d| self.now.saturating_sub(d));
                if since_loss.is_some_and(near) || since_detach.is_some_and(near) {
                    None
                } else {
                    let presented = since_loss.is_none_or(|e| e < life);
                    let kept =
                        held.is_some_and(|h| !h.ended) && since_detach.is_none_or(|e| e < life);
                    Some(presented && *key == node_key && kept)
                }
            }
        };
        self.obs[c].expect_resumed = Some(expect);
    }

    fn deliver_to_client(&mut self, id: u64) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let Some((_, item)) = link.to_client.pop_front() else {
            return;
        };
        let c = link.client;
        let (node, epoch) = (link.node, link.node_epoch);
        // The socket has room again: writes the server was owed complete.
        let owed = if link.to_client.len() < SOCKET_FRAMES {
            std::mem::take(&mut link.owed_written)
        } else {
            0
        };
        let at = self.at(self.now);
        match item {
            Item::Frame(f) => {
                if self.obs[c].link == Some(id) {
                    self.clients[c].handle_frame(at, f);
                    self.drain_client(c);
                }
            }
            Item::Close(close) => {
                if let Some(link) = self.links.remove(&id) {
                    if !link.server_gone {
                        self.server_closed(node, epoch, id);
                    }
                }
                if self.obs[c].link == Some(id) {
                    self.obs[c].link = None;
                    self.clients[c].handle_transport_closed(at, close);
                    self.drain_client(c);
                }
                return;
            }
        }
        if owed > 0 && self.node_epoch(node) == Some(epoch) {
            let instant = self.at(self.now);
            if let Some(conn) = self.nodes[node].conns.get_mut(&id) {
                conn.handle_written(instant, owed);
            }
            self.drain_conn(node, id);
        }
    }

    fn node_epoch(&self, node: usize) -> Option<u64> {
        self.nodes.get(node).map(|n| n.epoch)
    }

    fn deliver_to_server(&mut self, id: u64) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let Some((_, item)) = link.to_server.pop_front() else {
            return;
        };
        let (node, epoch, delay) = (link.node, link.node_epoch, link.delay_ms);
        let now = self.now;
        match item {
            Item::Frame(Frame::Binary(b)) => {
                let instant = self.at(now);
                if let Some(conn) = self.nodes[node].conns.get_mut(&id) {
                    conn.handle_frame(instant, b);
                }
            }
            Item::Frame(Frame::Text(_)) => {
                let instant = self.at(now);
                if let Some(conn) = self.nodes[node].conns.get_mut(&id) {
                    conn.handle_text(instant);
                }
            }
            Item::Frame(Frame::Ping(p)) => {
                // The WebSocket layer answers pings itself.
                if !link.blackholed {
                    Link::push(
                        &mut link.to_client,
                        now + delay,
                        Item::Frame(Frame::Pong(p)),
                    );
                }
            }
            Item::Frame(_) => {}
            Item::Close(_) => {
                link.server_gone = true;
                if link.client_gone {
                    self.links.remove(&id);
                }
                self.server_closed(node, epoch, id);
                return;
            }
        }
        self.drain_conn(node, id);
    }

    /// The server learns its socket is gone.
    fn server_closed(&mut self, node: usize, epoch: u64, id: u64) {
        if self.node_epoch(node) != Some(epoch) {
            return;
        }
        let instant = self.at(self.now);
        if let Some(conn) = self.nodes[node].conns.get_mut(&id) {
            conn.handle_closed(instant);
        }
        self.drain_conn(node, id);
    }

    fn drain_client(&mut self, c: usize) {
        while let Some(action) = self.clients[c].poll_action() {
            match action {
                ClientAction::Dial { .. } => self.dial(c),
                ClientAction::Send(frame, _) => {
                    let Some(link) = self.obs[c].link.and_then(|l| self.links.get_mut(&l)) else {
                        continue;
                    };
                    if !link.blackholed && !link.server_gone {
                        let at = self.now + link.delay_ms;
                        Link::push(&mut link.to_server, at, Item::Frame(frame));
                    }
                }
                ClientAction::Close(close) => {
                    self.obs[c].dial = None;
                    if let Some(l) = self.obs[c].link.take() {
                        if let Some(link) = self.links.get_mut(&l) {
                            link.client_gone = true;
                            link.to_client.clear();
                            if link.blackholed || link.server_gone {
                                self.links.remove(&l);
                            } else {
                                let at = self.now + link.delay_ms;
                                Link::push(&mut link.to_server, at, Item::Close(Some(close)));
                            }
                        }
                    }
                }
                ClientAction::FetchToken => {
                    // No token provider is configured; the core never asks.
                    self.violation(format!("client {c} asked for a token"));
                }
                _ => {}
            }
        }
        while let Some(event) = self.clients[c].poll_event() {
            self.observe(c, event);
        }
    }

    fn dial(&mut self, c: usize) {
        self.tally.dials += 1;
        let now = self.now;
        let o = &mut self.obs[c];
        o.dials.push_back(now);
        while o
            .dials
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= 1_000)
        {
            o.dials.pop_front();
        }
        let burst = o.dials.len();
        o.dial_count += 1;
        // Spread clients over the nodes, and move on after each dial.
        let node = (c + o.dial_count) % self.nodes.len().max(1);
        o.dial = Some((now + o.delay_ms, node));
        if burst > MAX_DIALS_PER_SECOND {
            self.violation(format!("client {c} dialed {burst} times within one second"));
        }
    }

    fn observe(&mut self, c: usize, event: Event) {
        if self.cfg.trace {
            eprintln!("{:>8} client {c}: {event:?}", self.now);
        }
        match event {
            Event::Connected {
                resumed, session, ..
            } => {
                let id = session.map(|s| s.id.as_str().to_owned());
                let key = self.obs[c]
                    .link
                    .and_then(|l| self.links.get(&l))
                    .map_or(0, |l| l.node_key);
                if let Some(Some(expected)) = self.obs[c].expect_resumed.take() {
                    if resumed != expected {
                        self.violation(format!(
                            "client {c}: resumed {resumed}, expected {expected}"
                        ));
                    }
                }
                let o = &mut self.obs[c];
                if resumed {
                    self.tally.resumed += 1;
                    if o.session.as_ref().map(|(s, _)| s) != id.as_ref() {
                        self.violation(format!("client {c} resumed another session"));
                    }
                } else {
                    if o.session.is_some() {
                        self.tally.fresh += 1;
                    }
                    o.last_offset = 0;
                    o.seen.clear();
                }
                let o = &mut self.obs[c];
                o.connected = true;
                o.session = id.map(|s| (s, key));
            }
            Event::Disconnected { .. } => {
                let o = &mut self.obs[c];
                if std::mem::take(&mut o.connected) {
                    o.lost_at = Some(self.now);
                }
            }
            Event::Message {
                offset, payload, ..
            } => {
                self.tally.delivered += 1;
                let o = &mut self.obs[c];
                let offset = offset.unwrap_or(0);
                if offset <= o.last_offset {
                    let last = o.last_offset;
                    self.violation(format!(
                        "client {c}: offset {offset} after {last} in one session"
                    ));
                    return;
                }
                o.last_offset = offset;
                let id = String::from_utf8_lossy(payload.bytes()).into_owned();
                let seen = o.seen.entry(id.clone()).or_default();
                *seen += 1;
                let times = *seen;
                let applied = self.applied_total.get(&id).copied().unwrap_or(0);
                if times > applied {
                    self.violation(format!(
                        "client {c} got {id} {times} times, applied {applied} times"
                    ));
                }
            }
            Event::Gap { from, to } => {
                self.tally.gaps += to.saturating_sub(from) + 1;
                let trimmed = self.memory.dropped();
                if self.tally.gaps > trimmed {
                    let gaps = self.tally.gaps;
                    self.violation(format!(
                        "clients reported {gaps} missing offsets, the store trimmed {trimmed}"
                    ));
                }
            }
            Event::Acked { seq } => {
                let session = self.obs[c].session.as_ref().map(|(s, _)| s.clone());
                let acked: Vec<String> = {
                    let o = &mut self.obs[c];
                    let rest = o.unacked.split_off(&(seq + 1));
                    std::mem::replace(&mut o.unacked, rest)
                        .into_values()
                        .collect()
                };
                for id in acked {
                    let n = session
                        .as_ref()
                        .and_then(|s| self.applied.get(&(s.clone(), id.clone())))
                        .copied()
                        .unwrap_or(0);
                    if n != 1 {
                        self.violation(format!("client {c}: {id} acknowledged, applied {n} times"));
                    }
                }
            }
            Event::Closed { .. } => self.obs[c].closed = true,
            _ => {}
        }
    }

    /// Carries out every action of connection `id`, store calls included,
    /// then hands the store's notices to every node.
    fn drain_conn(&mut self, node: usize, id: u64) {
        self.conn_actions(node, id);
        self.notices();
    }

    fn conn_actions(&mut self, node: usize, id: u64) {
        loop {
            let Some(action) = self.nodes[node]
                .conns
                .get_mut(&id)
                .and_then(Connection::poll_action)
            else {
                break;
            };
            match action {
                ServerAction::Send(frame) => {
                    self.server_write(id, Item::Frame(Frame::Binary(frame.to_bytes())));
                }
                ServerAction::Close { code, reason } => {
                    self.server_write(id, Item::Close(Some(CloseFrame::new(code, reason))));
                    if let Some(link) = self.links.get_mut(&id) {
                        link.server_gone = true;
                        link.to_server.clear();
                    }
                }
                ServerAction::Store(op) => {
                    let reply = self.store_call(&op);
                    let instant = self.at(self.now);
                    if let Some(conn) = self.nodes[node].conns.get_mut(&id) {
                        conn.handle_store_reply(instant, reply);
                    }
                }
                // Requests go to the application; the clients here only
                // publish to channels.
                _ => {}
            }
        }
        let closed = self.nodes[node]
            .conns
            .get(&id)
            .is_some_and(|c| c.phase() == Phase::Closed);
        if closed {
            self.nodes[node].conns.remove(&id);
        }
    }

    fn server_write(&mut self, id: u64, item: Item) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if link.blackholed || link.client_gone {
            return;
        }
        let frame = matches!(item, Item::Frame(_));
        let at = self.now + link.delay_ms;
        Link::push(&mut link.to_client, at, item);
        if !frame {
            return;
        }
        if link.to_client.len() > SOCKET_FRAMES && link.paused {
            link.owed_written += 1;
            return;
        }
        let node = link.node;
        let instant = self.at(self.now);
        if let Some(conn) = self.nodes[node].conns.get_mut(&id) {
            conn.handle_written(instant, 1);
        }
    }

    /// One store call, made at once (the memory store never waits), with
    /// what the world learns from it.
    fn store_call(&mut self, op: &StoreOp) -> StoreReply {
        let Some(reply) = op.execute(&*self.store, self.now).now_or_never() else {
            self.violation(format!("store call {op:?} did not complete at once"));
            return StoreReply::Done;
        };
        if self.cfg.trace {
            eprintln!("{:>8} store: {op:?} -> {reply:?}", self.now);
        }
        match (op, &reply) {
            (
                StoreOp::Publish { owner, payload, .. },
                StoreReply::Published(PublishOutcome::Applied),
            ) => {
                self.tally.applied += 1;
                let id = String::from_utf8_lossy(payload.bytes()).into_owned();
                let session = owner.session.as_str().to_owned();
                let n = self.applied.entry((session, id.clone())).or_default();
                *n += 1;
                let n = *n;
                *self.applied_total.entry(id.clone()).or_default() += 1;
                if n > 1 {
                    self.violation(format!("{id} applied {n} times in one session"));
                }
            }
            (StoreOp::Create { name }, StoreReply::Created(Ok(_))) => {
                // A detached session gives its name up to a new one: it ends.
                for h in self.held.values_mut() {
                    if &h.name == name && h.detached_at.is_some() {
                        h.ended = true;
                    }
                }
            }
            _ => {}
        }
        match (op, &reply) {
            (StoreOp::Create { .. }, StoreReply::Created(Ok(state)))
            | (StoreOp::Resume { .. }, StoreReply::Resumed(Some(state))) => {
                let h = self
                    .held
                    .entry(state.owner.session.as_str().to_owned())
                    .or_default();
                h.name.clone_from(&state.name);
                h.detached_at = None;
            }
            (StoreOp::Resume { session, .. }, StoreReply::Resumed(None)) => {
                // Expired (or unknown): the store forgot it.
                self.held
                    .entry(session.as_str().to_owned())
                    .or_default()
                    .ended = true;
            }
            (StoreOp::Detach { owner }, StoreReply::Done) => {
                if let Some(h) = self.held.get_mut(owner.session.as_str()) {
                    h.detached_at = Some(self.now);
                }
            }
            (StoreOp::End { owner }, StoreReply::Done) => {
                self.held
                    .entry(owner.session.as_str().to_owned())
                    .or_default()
                    .ended = true;
            }
            _ => {}
        }
        reply
    }

    /// Hands every notice the store sent to every connection of the node
    /// that received it, until none is left.
    fn notices(&mut self) {
        loop {
            let mut any = false;
            for n in 0..self.nodes.len() {
                while let Some(Some(notice)) = self.nodes[n].notices.next().now_or_never() {
                    any = true;
                    let ids: Vec<u64> = self.nodes[n].conns.keys().copied().collect();
                    for id in ids {
                        let instant = self.at(self.now);
                        if let Some(conn) = self.nodes[n].conns.get_mut(&id) {
                            conn.handle_notice(instant, &notice);
                        }
                        self.conn_actions(n, id);
                    }
                }
            }
            if !any {
                break;
            }
        }
    }
}

/// A [`MemoryStore`] shared with the world, which reads its counters.
struct Shared(Arc<MemoryStore>);

impl Decorate for Shared {
    type Inner = MemoryStore;

    fn inner(&self) -> &MemoryStore {
        &self.0
    }
}
