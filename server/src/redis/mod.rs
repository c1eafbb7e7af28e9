//! [`RedisStore`]: sessions and channel logs in Redis (one server, or a
//! Redis Cluster), so that several nodes serve one logical server and any
//! node can resume any session.
//!
//! Layout (every key starts with the configured prefix `P`; see `keys.rs`):
//! * `P{c:<channel>}:log`: the channel's log, a stream capped at
//!   [`RedisStoreBuilder::channel_cap`] entries (`MAXLEN ~`). Each entry's
//!   ID is the Redis clock in microseconds when it was appended (never
//!   below the log's previous one) and it carries its per-channel seq (from
//!   the hash `P{c:<channel>}`), so a reader that finds a trimmed range
//!   knows exactly how many it missed.
//! * `P{s:<id>}`: the session hash (name, epoch, `H`, last offset,
//!   RECEIVED, connected flag, loss time, its direct-message cursor);
//!   `P{s:<id>}:subs` maps each subscribed channel to the session's cursor
//!   in it (`<entry ID>:<seq>`); `P{s:<id>}:in` holds the MESSAGEs numbered
//!   for it and not yet RECEIVED (a stream whose IDs are the offsets,
//!   capped at [`RedisStoreBuilder::backlog`]): a channel message as a
//!   reference to its log entry, never a copy, so a channel entry is stored
//!   once however many sessions it goes to; `P{s:<id>}:d` holds messages
//!   addressed to it by name until it numbers them (they then move into the
//!   inbox with their payload).
//! * `P{n:<name>}`: the session holding a name.
//! * `Pnotices`: the pub/sub channel every node listens to.
//!
//! Each script touches the keys of one hash tag only, so the same scripts
//! run on one Redis server and on a Redis Cluster
//! ([`RedisStore::cluster_builder`]); either needs Redis 7.0 or later (the
//! logs' IDs are given as `<time>-*`). Calls that concern two tags are
//! steps in an order that is safe if a node dies between them:
//! * `create`: claim the name (compare-and-set on `P{n:<name>}`), then
//!   write the session; if the second step fails the name is released. A
//!   node that died in between leaves a name pointing at a session that
//!   does not exist, which counts as free and expires with the detached
//!   TTL. A detached holder that lost its name is ended after the claim.
//! * `end` (and a `resume` that finds the session expired): delete the
//!   session, then release its name; in between the name points at nothing
//!   (free, as above).
//! * `publish` on a channel: check `seq` against `H` (fenced), append to
//!   the log remembering `(session, seq)` in `P{c:<channel>}:pub`, move
//!   `H` (fenced), forget the pending append. A retry after a failure
//!   between the append and `H` finds it remembered and does not append
//!   twice; one between `H` and forgetting leaves a stale field, which only
//!   costs its bytes.
//! * `subscribe`: read the channel's position, then store it as the
//!   session's cursor: entries appended after the read are delivered.
//! * `send_to`: look the name up, then append to that session's direct
//!   messages (nothing if the session ended meanwhile).
//! * `fetch`: see `fetch.rs`; read the channel logs after the session's
//!   cursors, then number and store them in one script that checks the
//!   cursors are still the ones read.
//!
//! Order: a session's messages from one channel keep the channel's order,
//! and messages addressed to it by name keep their sending order. Across
//! channels, entries are numbered in the order of their stream IDs among
//! those read by one fetch: on one Redis server that is the order they
//! were appended (unless the server's clock stepped back); on a cluster it
//! follows the clocks of the nodes holding the channels. An entry appended
//! while a fetch was between its steps is numbered by the next fetch, after
//! the entries that fetch numbered.
//!
//! Fetches are batched per node: every [`Store::fetch`] goes to one task
//! that serves whatever queued meanwhile (up to [`FETCH_BATCH`] sessions)
//! together, at most four batches in flight; each channel's new entries
//! are read once per batch however many sessions wait for them, and the
//! sessions of one slot (on one server, all of them) commit in one call.
//!
//! Each store keeps one dedicated pub/sub connection for notices (on a
//! cluster, to one of the nodes: Redis forwards every publish to every
//! node); when it drops and comes back, possibly to another node, the store
//! emits [`Notice::Lagged`]. A session that lost its connection expires in
//! Redis [`RedisStoreBuilder::detached_ttl`] after the loss, which must be
//! at least the server's token lifetime. Every Redis call has a deadline,
//! [`RedisStoreBuilder::response_timeout`]. Redis replicates
//! asynchronously; for writes that survive a failover, see
//! [`RedisStoreBuilder::wait_for_replicas`].

mod conn;
mod fetch;
mod keys;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redial_core::payload::Payload;
use redis::{Script, Value};
use tokio::sync::{mpsc, oneshot};

use self::conn::Conn;
pub use self::fetch::FETCH_BATCH;
use self::fetch::{Batcher, FetchCall, FETCH_QUEUE, MAX_OFFSET};
use self::keys::Keys;
use crate::notify::Fanout;
use crate::store::{
    CreateRefused, Notice, Notices, Owner, PublishOutcome, SessionId, SessionState, Store,
    StoreError, StoreFuture, StoredMessage,
};

/// The key prefix by default.
pub const DEFAULT_PREFIX: &str = "redial:";
/// Entries kept per channel log by default (approximately: Redis trims
/// whole blocks).
pub const DEFAULT_CHANNEL_CAP: usize = 10_000;
/// The defaults every store shares (see [`crate::store`]).
pub use crate::store::{DEFAULT_BACKLOG, DEFAULT_NOTICE_BUFFER};
/// How long a session without a connection is kept in Redis by default.
pub const DEFAULT_DETACHED_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a node's heartbeat lasts by default: the sessions of a node
/// silent for this long count as disconnected (their names are free).
pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(15);
/// How long one command may take by default before it fails.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest cap the builder accepts (Redis takes signed 64-bit counts).
const MAX_COUNT: u64 = 1 << 40;
/// The longest TTL the builder accepts.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Attempts at claiming a name whose holder keeps changing under us.
const NAME_ATTEMPTS: usize = 4;
/// Session keys the heartbeat renews at once.
const KEEPS_IN_FLIGHT: usize = 32;

/// Why a [`RedisStore`] could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisSetupError {
    /// A setting cannot work.
    #[error("invalid Redis store setting: {0}")]
    Invalid(&'static str),
    /// The URL was refused or Redis could not be reached.
    #[error("connecting to Redis: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Settings for a [`RedisStore`]; [`RedisStoreBuilder::connect`] checks them.
#[derive(Clone)]
pub struct RedisStoreBuilder {
    urls: Vec<String>,
    cluster: bool,
    prefix: String,
    channel_cap: usize,
    backlog: usize,
    notice_buffer: usize,
    detached_ttl: Duration,
    node_ttl: Duration,
    response_timeout: Duration,
    replicas: usize,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URLs may carry a password: they stay out of Debug output.
        f.debug_struct("RedisStoreBuilder")
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("channel_cap", &self.channel_cap)
            .field("backlog", &self.backlog)
            .field("notice_buffer", &self.notice_buffer)
            .field("detached_ttl", &self.detached_ttl)
            .field("node_ttl", &self.node_ttl)
            .field("response_timeout", &self.response_timeout)
            .field("replicas", &self.replicas)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key and of the notice channel (default
    /// [`DEFAULT_PREFIX`]); stores that share a prefix share everything.
    /// It may not hold `{` or `}` (they would change the keys' hash tags).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Entries kept per channel log (default [`DEFAULT_CHANNEL_CAP`]). A
    /// session that was away while more were appended resumes with a gap.
    pub fn channel_cap(mut self, entries: usize) -> Self {
        self.channel_cap = entries;
        self
    }

    /// MESSAGEs not yet RECEIVED that a session keeps (default
    /// [`DEFAULT_BACKLOG`]); beyond it the oldest is dropped and the client
    /// sees a gap.
    pub fn backlog(mut self, messages: usize) -> Self {
        self.backlog = messages;
        self
    }

    /// Notices each [`Store::notices`] stream buffers (default
    /// [`DEFAULT_NOTICE_BUFFER`]) before it yields [`Notice::Lagged`].
    pub fn notice_buffer(mut self, notices: usize) -> Self {
        self.notice_buffer = notices;
        self
    }

    /// How long Redis keeps a session after its connection was lost
    /// (default [`DEFAULT_DETACHED_TTL`]); set it to at least the token
    /// lifetime, or sessions end early.
    pub fn detached_ttl(mut self, ttl: Duration) -> Self {
        self.detached_ttl = ttl;
        self
    }

    /// How long this node's heartbeat lasts (default [`DEFAULT_NODE_TTL`]);
    /// it is renewed every third of that. When a node dies without
    /// detaching its sessions, they count as disconnected once its
    /// heartbeat lapses, so their names can be taken again.
    pub fn node_ttl(mut self, ttl: Duration) -> Self {
        self.node_ttl = ttl;
        self
    }

    /// How long one Redis call may take before the method fails with
    /// [`StoreError::Unavailable`] (default [`DEFAULT_RESPONSE_TIMEOUT`]).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Replicas that must hold every write before the call returns
    /// (default 0: Redis replicates in the background). Redis replicates
    /// asynchronously, so a master that fails over can lose writes it
    /// acknowledged: an applied PUBLISH, or offsets already sent. With `n`
    /// above 0, every write is followed by `WAIT n` on the node that took
    /// it (at most [`RedisStoreBuilder::response_timeout`]), and the call
    /// fails with [`StoreError::Unavailable`] when fewer replicas confirm
    /// (the client then retries on a new connection, without duplicates).
    /// It costs one more round trip, and the replication delay, per write.
    pub fn wait_for_replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    fn check(&self) -> Result<(), RedisSetupError> {
        if self.urls.is_empty() {
            return Err(RedisSetupError::Invalid("no Redis URL"));
        }
        if self.prefix.is_empty() {
            return Err(RedisSetupError::Invalid("the key prefix is empty"));
        }
        if self.prefix.contains(['{', '}']) {
            return Err(RedisSetupError::Invalid("the key prefix holds { or }"));
        }
        if self.channel_cap == 0 {
            return Err(RedisSetupError::Invalid("the channel cap is 0"));
        }
        if self.backlog == 0 {
            return Err(RedisSetupError::Invalid("the backlog is 0"));
        }
        if self.notice_buffer == 0 {
            return Err(RedisSetupError::Invalid("the notice buffer is 0"));
        }
        if self.detached_ttl.is_zero() {
            return Err(RedisSetupError::Invalid("the detached TTL is 0"));
        }
        let too_many = |n: usize| u64::try_from(n).map_or(true, |n| n > MAX_COUNT);
        if too_many(self.channel_cap) || too_many(self.backlog) {
            return Err(RedisSetupError::Invalid("a cap is over 2^40 entries"));
        }
        // Redis refuses expiry times past its clock's range.
        if self.detached_ttl > MAX_TTL || self.node_ttl > MAX_TTL {
            return Err(RedisSetupError::Invalid("a TTL is over 10 years"));
        }
        if self.node_ttl < Duration::from_millis(3) {
            return Err(RedisSetupError::Invalid("the node TTL is under 3 ms"));
        }
        if self.response_timeout.is_zero() {
            return Err(RedisSetupError::Invalid("the response timeout is 0"));
        }
        Ok(())
    }

    /// Connects (a command connection and the notice subscription) and
    /// returns the store. Must run inside a tokio runtime, which the
    /// notice listener is spawned on.
    ///
    /// # Errors
    /// [`RedisSetupError::Invalid`] for a zero or empty setting,
    /// [`RedisSetupError::Connect`] when Redis cannot be reached.
    pub async fn connect(self) -> Result<RedisStore, RedisSetupError> {
        self.check()?;
        let connect = |e: redis::RedisError| RedisSetupError::Connect(Box::new(e));
        let conn = if self.cluster {
            Conn::cluster(&self.urls, self.response_timeout).await
        } else {
            Conn::single(&self.urls[0], self.response_timeout).await
        }
        .map_err(connect)?;
        let clients = self
            .urls
            .iter()
            .map(|u| redis::Client::open(u.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(connect)?;
        let keys = Keys::new(self.prefix.clone());
        let channel = keys.notices();
        let fanout = Arc::new(Fanout::new(self.notice_buffer));
        let (first, at) = subscribe(&clients, 0, &channel).await.map_err(connect)?;
        let listener = tokio::spawn(listen(clients, at, channel, Arc::clone(&fanout), first));
        let scripts = Arc::new(Scripts::new());
        let held = Arc::new(Mutex::new(HashSet::new()));
        let beat = Heartbeat {
            conn: conn.clone(),
            scripts: Arc::clone(&scripts),
            keys: keys.clone(),
            node: node_id(),
            node_ttl: self.node_ttl,
            detached_ttl: self.detached_ttl,
            held: Arc::clone(&held),
        };
        // The first beat before any session: a node is live from the start.
        beat.beat(false).await.map_err(connect)?;
        let node = beat.node.clone();
        let heartbeat = tokio::spawn(beat.run());
        let (fetches, calls) = mpsc::channel(FETCH_QUEUE);
        let batcher = Batcher {
            conn: conn.clone(),
            scripts: Arc::clone(&scripts),
            keys: keys.clone(),
            backlog: self.backlog.to_string(),
            replicas: self.replicas,
            known: Mutex::default(),
        };
        let batcher = tokio::spawn(batcher.run(calls));
        Ok(RedisStore {
            conn,
            keys,
            channel_cap: self.channel_cap,
            backlog: self.backlog,
            detached_ttl_ms: millis(self.detached_ttl),
            replicas: self.replicas,
            fanout,
            listener,
            heartbeat,
            batcher,
            fetches,
            node,
            held,
            scripts,
        })
    }
}

/// Sessions and channel logs in Redis; see the module docs.
pub struct RedisStore {
    conn: Conn,
    keys: Keys,
    channel_cap: usize,
    backlog: usize,
    detached_ttl_ms: u64,
    /// Replicas every write waits for (`WAIT`), 0 for none.
    replicas: usize,
    fanout: Arc<Fanout>,
    listener: tokio::task::JoinHandle<()>,
    heartbeat: tokio::task::JoinHandle<()>,
    batcher: tokio::task::JoinHandle<()>,
    /// Fetches waiting for the batcher (at most `FETCH_QUEUE`, 4,096).
    fetches: mpsc::Sender<FetchCall>,
    /// This node's id, random: its heartbeat key and the start of every
    /// session id it creates.
    node: String,
    /// The sessions this node holds, whose keys its heartbeat keeps alive.
    held: Arc<Mutex<HashSet<SessionId>>>,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix())
            .field("channel_cap", &self.channel_cap)
            .field("backlog", &self.backlog)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.heartbeat.abort();
        self.batcher.abort();
    }
}

/// What a name's holder looks like to [`RedisStore::create`].
enum Holder {
    /// Nobody (or a session that no longer exists, or is not live).
    Free(Option<String>),
    /// A connected session whose node is alive.
    Live,
}

impl RedisStore {
    /// Settings for a store on the Redis server at `url`
    /// (`redis://host:port/db`, with a password if needed; the URL never
    /// appears in Debug output).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        Self::with_urls(vec![url.into()], false)
    }

    /// Settings for a store on a Redis Cluster, given the URLs of some of
    /// its nodes (`redis://host:port`; one reachable node is enough to find
    /// the rest). Same options as [`RedisStore::builder`].
    pub fn cluster_builder(urls: impl IntoIterator<Item = impl Into<String>>) -> RedisStoreBuilder {
        Self::with_urls(urls.into_iter().map(Into::into).collect(), true)
    }

    fn with_urls(urls: Vec<String>, cluster: bool) -> RedisStoreBuilder {
        RedisStoreBuilder {
            urls,
            cluster,
            prefix: DEFAULT_PREFIX.to_owned(),
            channel_cap: DEFAULT_CHANNEL_CAP,
            backlog: DEFAULT_BACKLOG,
            notice_buffer: DEFAULT_NOTICE_BUFFER,
            detached_ttl: DEFAULT_DETACHED_TTL,
            node_ttl: DEFAULT_NODE_TTL,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            replicas: 0,
        }
    }

    /// How many MESSAGEs were dropped so far, across every store sharing
    /// the prefix, because a session's backlog was full or a channel log was
    /// trimmed before the session numbered them (each one part of a gap its
    /// client reports).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub async fn dropped(&self) -> Result<u64, StoreError> {
        let n: Option<u64> = self
            .query(redis::cmd("HGET").arg(self.keys.stats()).arg("dropped"))
            .await?;
        Ok(n.unwrap_or(0))
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        cmd.query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Runs `script` on the slot of `key`, and waits for its writes to
    /// reach the replicas asked for.
    async fn eval(&self, script: &Script, key: &str, args: &[&[u8]]) -> Result<Value, StoreError> {
        let mut invocation = script.key(key);
        for arg in args {
            invocation.arg(*arg);
        }
        let mut conn = self.conn.clone();
        let reply = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        conn.replicated(key, self.replicas)
            .await
            .map_err(unavailable)?;
        Ok(reply)
    }

    /// `op` on the name key of `name` (see `name.lua`): `true` when it
    /// applied.
    async fn name_op(&self, name: &str, args: &[&[u8]]) -> Result<bool, StoreError> {
        let reply = self
            .eval(&self.scripts.name, &self.keys.name(name), args)
            .await?;
        Ok(int_signed(&reply)? == 1)
    }

    /// Whether the session holding `name` (if any) is connected on a live
    /// node.
    async fn holder(&self, name: &str) -> Result<Holder, StoreError> {
        let id: Option<String> = self
            .query(redis::cmd("GET").arg(self.keys.name(name)))
            .await?;
        let Some(id) = id else {
            return Ok(Holder::Free(None));
        };
        let (cn, nd): (Option<String>, Option<String>) = self
            .query(
                redis::cmd("HMGET")
                    .arg(self.keys.session(&id))
                    .arg("cn")
                    .arg("nd"),
            )
            .await?;
        if let (Some("1"), Some(nd)) = (cn.as_deref(), nd) {
            let live: bool = self
                .query(redis::cmd("EXISTS").arg(self.keys.node(&nd)))
                .await?;
            if live {
                return Ok(Holder::Live);
            }
        }
        Ok(Holder::Free(Some(id)))
    }

    async fn create_async(
        &self,
        name: &str,
    ) -> Result<Result<SessionState, CreateRefused>, StoreError> {
        let ttl = self.detached_ttl_ms.to_string();
        for _ in 0..NAME_ATTEMPTS {
            let previous = match self.holder(name).await? {
                Holder::Live => return Ok(Err(CreateRefused::NameTaken)),
                Holder::Free(previous) => previous,
            };
            // The counter keeps ids unique while Redis keeps its data; the
            // random tag keeps them unique if it loses it (an old token
            // must never name a new session).
            let n: u64 = self.query(redis::cmd("INCR").arg(self.keys.sid())).await?;
            let id = format!("{}-{n}-{:016x}", self.node, random_u64());
            let expected = previous.as_deref().unwrap_or("");
            let claim: [&[u8]; 4] = [b"claim", expected.as_bytes(), id.as_bytes(), ttl.as_bytes()];
            if !self.name_op(name, &claim).await? {
                // Someone else claimed it between our read and our claim.
                continue;
            }
            let args: [&[u8]; 3] = [name.as_bytes(), self.node.as_bytes(), ttl.as_bytes()];
            if let Err(e) = self
                .eval(&self.scripts.create, &self.keys.session(&id), &args)
                .await
            {
                let release: [&[u8]; 2] = [b"release", id.as_bytes()];
                let _ = self.name_op(name, &release).await;
                return Err(e);
            }
            if let Some(previous) = previous {
                // The detached holder gave its name up: it ends.
                self.eval(&self.scripts.end, &self.keys.session(&previous), &[b"*"])
                    .await?;
            }
            let id = SessionId::new(id);
            self.hold(&id, true);
            return Ok(Ok(SessionState {
                owner: Owner {
                    session: id,
                    epoch: 1,
                },
                name: name.to_owned(),
                last_client_seq: 0,
                subscriptions: Vec::new(),
                last_offset: 0,
            }));
        }
        Err(malformed("the name kept changing hands"))
    }

    async fn resume_async(
        &self,
        session: &SessionId,
        lifetime_ms: u64,
        now_ms: u64,
    ) -> Result<Option<SessionState>, StoreError> {
        let id = session.as_str();
        let ttl = self.detached_ttl_ms.to_string();
        let reply = self
            .eval(
                &self.scripts.resume,
                &self.keys.session(id),
                &[
                    lifetime_ms.to_string().as_bytes(),
                    now_ms.to_string().as_bytes(),
                    self.node.as_bytes(),
                    ttl.as_bytes(),
                    self.keys.notices().as_bytes(),
                    id.as_bytes(),
                ],
            )
            .await?;
        let items = array(&reply)?;
        match int(items.first())? {
            0 => return Ok(None),
            2 => {
                let name = string(items.get(1))?;
                self.name_op(&name, &[b"release", id.as_bytes()]).await?;
                return Ok(None);
            }
            _ => {}
        }
        self.hold(session, true);
        let name = string(items.get(2))?;
        self.name_op(&name, &[b"keep", id.as_bytes(), ttl.as_bytes()])
            .await?;
        let mut subscriptions = array(items.get(5).unwrap_or(&Value::Nil))?
            .iter()
            .map(|v| string(Some(v)))
            .collect::<Result<Vec<_>, _>>()?;
        subscriptions.sort();
        Ok(Some(SessionState {
            owner: Owner {
                session: session.clone(),
                epoch: int(items.get(1))?,
            },
            name,
            last_client_seq: int(items.get(3))?,
            subscriptions,
            last_offset: int(items.get(4))?,
        }))
    }

    /// Records that this node holds `session` (or no longer does).
    fn hold(&self, session: &SessionId, held: bool) {
        let mut set = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held {
            set.insert(session.clone());
        } else {
            set.remove(session);
        }
    }

    /// Runs a session script whose reply is a status: 0 or more is
    /// success.
    async fn held(
        &self,
        script: &Script,
        owner: &Owner,
        args: &[&[u8]],
    ) -> Result<i64, StoreError> {
        let reply = self.held_reply(script, owner, args).await?;
        status(owner, int_signed(&reply)?)
    }

    /// Runs a session script with the owner's epoch first.
    async fn held_reply(
        &self,
        script: &Script,
        owner: &Owner,
        args: &[&[u8]],
    ) -> Result<Value, StoreError> {
        let epoch = owner.epoch.to_string();
        let mut all: Vec<&[u8]> = vec![epoch.as_bytes()];
        all.extend_from_slice(args);
        self.eval(script, &self.keys.session(owner.session.as_str()), &all)
            .await
    }

    /// Runs a session script replying `{status, name}`: the name.
    async fn named(
        &self,
        script: &Script,
        owner: &Owner,
        args: &[&[u8]],
    ) -> Result<String, StoreError> {
        let reply = self.held_reply(script, owner, args).await?;
        let items = array(&reply)?;
        status(owner, int_signed(items.first().unwrap_or(&Value::Nil))?)?;
        string(items.get(1))
    }

    async fn detach_async(&self, owner: &Owner, now_ms: u64) -> Result<(), StoreError> {
        self.hold(&owner.session, false);
        let now = now_ms.to_string();
        let ttl = self.detached_ttl_ms.to_string();
        let name = match self
            .named(
                &self.scripts.detach,
                owner,
                &[now.as_bytes(), ttl.as_bytes()],
            )
            .await
        {
            Ok(name) => name,
            // A superseded or ended holder has nothing to detach.
            Err(StoreError::Fenced(_) | StoreError::UnknownSession(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let id = owner.session.as_str().as_bytes();
        self.name_op(&name, &[b"keep", id, ttl.as_bytes()])
            .await
            .map(drop)
    }

    async fn end_async(&self, owner: &Owner) -> Result<(), StoreError> {
        self.hold(&owner.session, false);
        let name = self.named(&self.scripts.end, owner, &[]).await?;
        let id = owner.session.as_str().as_bytes();
        self.name_op(&name, &[b"release", id]).await.map(drop)
    }

    async fn publish_async(
        &self,
        owner: &Owner,
        seq: u64,
        channel: Option<&str>,
        payload: &Payload,
    ) -> Result<PublishOutcome, StoreError> {
        let seq = seq.to_string();
        let outcome = |code| {
            if code == 2 {
                PublishOutcome::Duplicate
            } else {
                PublishOutcome::Applied
            }
        };
        let set = [seq.as_bytes(), b"set"];
        let Some(channel) = channel else {
            return Ok(outcome(
                self.held(&self.scripts.publish, owner, &set).await?,
            ));
        };
        let check = [seq.as_bytes(), b"check"];
        if self.held(&self.scripts.publish, owner, &check).await? == 2 {
            return Ok(PublishOutcome::Duplicate);
        }
        let id = owner.session.as_str().as_bytes();
        self.append(channel, payload, id, seq.as_bytes()).await?;
        let code = self.held(&self.scripts.publish, owner, &set).await?;
        self.eval(
            &self.scripts.published,
            &self.keys.channel(channel),
            &[id, seq.as_bytes()],
        )
        .await?;
        Ok(outcome(code))
    }

    /// Appends to `channel`'s log; `from` and `seq` name a session's
    /// PUBLISH (empty for the application's).
    async fn append(
        &self,
        channel: &str,
        payload: &Payload,
        from: &[u8],
        seq: &[u8],
    ) -> Result<(), StoreError> {
        let cap = self.channel_cap.to_string();
        let text: &[u8] = if payload.is_text() { b"1" } else { b"0" };
        self.eval(
            &self.scripts.append,
            &self.keys.channel(channel),
            &[
                channel.as_bytes(),
                payload.bytes(),
                text,
                cap.as_bytes(),
                self.keys.notices().as_bytes(),
                from,
                seq,
            ],
        )
        .await
        .map(drop)
    }

    async fn subscribe_async(&self, owner: &Owner, channel: &str) -> Result<(), StoreError> {
        let (id, seq): (Option<String>, Option<String>) = self
            .query(
                redis::cmd("HMGET")
                    .arg(self.keys.channel(channel))
                    .arg("id")
                    .arg("s"),
            )
            .await?;
        let cursor = format!(
            "{}:{}",
            id.as_deref().unwrap_or("0-0"),
            seq.as_deref().unwrap_or("0")
        );
        self.held(
            &self.scripts.subscribe,
            owner,
            &[channel.as_bytes(), cursor.as_bytes()],
        )
        .await
        .map(drop)
    }

    async fn send_to_async(&self, name: &str, payload: &Payload) -> Result<bool, StoreError> {
        let id: Option<String> = self
            .query(redis::cmd("GET").arg(self.keys.name(name)))
            .await?;
        let Some(id) = id else {
            return Ok(false);
        };
        let backlog = self.backlog.to_string();
        let text: &[u8] = if payload.is_text() { b"1" } else { b"0" };
        let reply = self
            .eval(
                &self.scripts.send_to,
                &self.keys.session(&id),
                &[
                    payload.bytes(),
                    text,
                    backlog.as_bytes(),
                    self.keys.notices().as_bytes(),
                    id.as_bytes(),
                ],
            )
            .await?;
        Ok(int_signed(&reply)? == 1)
    }

    async fn fetch_async(
        &self,
        owner: &Owner,
        after: u64,
        max: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let call = FetchCall {
            owner: owner.clone(),
            after,
            max,
            reply,
        };
        let stopped = |_| malformed("the fetch batcher stopped");
        self.fetches.send(call).await.map_err(stopped)?;
        answer
            .await
            .map_err(|_| malformed("the fetch batcher stopped"))?
    }
}

/// Every notice on the pub/sub channel, forwarded to the store's listeners;
/// after the link drops it reconnects (to the next node given, on a
/// cluster) and tells them they lagged.
async fn listen(
    clients: Vec<redis::Client>,
    mut at: usize,
    channel: String,
    fanout: Arc<Fanout>,
    mut stream: redis::aio::PubSubStream,
) {
    loop {
        while let Some(message) = stream.next().await {
            if let Some(notice) = parse_notice(message.get_payload_bytes()) {
                fanout.send(&notice);
            }
        }
        let mut delay = Duration::from_millis(50);
        (stream, at) = loop {
            tokio::time::sleep(delay).await;
            match subscribe(&clients, at + 1, &channel).await {
                Ok(found) => break found,
                Err(_) => delay = (delay * 2).min(Duration::from_secs(2)),
            }
        };
        fanout.send(&Notice::Lagged);
    }
}

/// Subscribes to `channel` on the first node that answers, trying them in
/// turn from `from`; returns the stream and which node it is on.
async fn subscribe(
    clients: &[redis::Client],
    from: usize,
    channel: &str,
) -> redis::RedisResult<(redis::aio::PubSubStream, usize)> {
    let mut last = None;
    for i in 0..clients.len() {
        let at = (from + i) % clients.len();
        let attempt = async {
            let mut pubsub = clients[at].get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        match attempt.await {
            Ok(stream) => return Ok((stream, at)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| (redis::ErrorKind::InvalidClientConfig, "no Redis URL").into()))
}

/// `c:<channel>`, `s:<session>` or `t:<epoch>:<session>`, as the scripts
/// publish them.
fn parse_notice(payload: &[u8]) -> Option<Notice> {
    let text = std::str::from_utf8(payload).ok()?;
    let (kind, rest) = text.split_once(':')?;
    match kind {
        "c" => Some(Notice::Channel(rest.to_owned())),
        "s" => Some(Notice::Session(SessionId::new(rest))),
        "t" => {
            let (epoch, session) = rest.split_once(':')?;
            Some(Notice::TakenOver(Owner {
                session: SessionId::new(session),
                epoch: epoch.parse().ok()?,
            }))
        }
        _ => None,
    }
}

/// Renews this node's heartbeat, and now and then the keys of the sessions
/// it holds and of their names (so a connected session never expires, and
/// one whose node died expires a detached TTL later).
struct Heartbeat {
    conn: Conn,
    scripts: Arc<Scripts>,
    keys: Keys,
    node: String,
    node_ttl: Duration,
    detached_ttl: Duration,
    held: Arc<Mutex<HashSet<SessionId>>>,
}

impl Heartbeat {
    async fn beat(&self, sessions: bool) -> redis::RedisResult<()> {
        redis::cmd("SET")
            .arg(self.keys.node(&self.node))
            .arg("1")
            .arg("PX")
            .arg(millis(self.node_ttl))
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        if !sessions {
            return Ok(());
        }
        let ids: Vec<SessionId> = {
            let set = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            set.iter().cloned().collect()
        };
        let ttl = millis(self.detached_ttl);
        futures_util::stream::iter(ids)
            .map(|id| async move {
                // One session's keys, then its name's: two slots.
                let reply: Value = self
                    .scripts
                    .keep
                    .key(self.keys.session(id.as_str()))
                    .arg(ttl)
                    .invoke_async(&mut self.conn.clone())
                    .await?;
                if let Value::Array(items) = &reply {
                    if let [_, Value::BulkString(name)] = items.as_slice() {
                        let name = String::from_utf8_lossy(name);
                        let _: Value = self
                            .scripts
                            .name
                            .key(self.keys.name(&name))
                            .arg("keep")
                            .arg(id.as_str())
                            .arg(ttl)
                            .invoke_async(&mut self.conn.clone())
                            .await?;
                    }
                }
                Ok::<_, redis::RedisError>(())
            })
            .buffer_unordered(KEEPS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    async fn run(self) {
        let tick = self.node_ttl / 3;
        // Session keys are renewed every quarter of their TTL.
        let every = (self.detached_ttl.as_millis() / 4 / tick.as_millis().max(1)).max(1);
        let mut ticks: u128 = 0;
        loop {
            tokio::time::sleep(tick).await;
            ticks += 1;
            // A failed beat is retried on the next tick; a node that cannot
            // reach Redis cannot serve anyone anyway.
            let _ = self.beat(ticks % every == 0).await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn node_id() -> String {
    format!("r{:012x}", random_u64() >> 16)
}

/// A random number from the standard library's hash seeds (each
/// `RandomState` gets fresh keys), so the store needs no random crate.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

fn malformed(what: &'static str) -> StoreError {
    StoreError::Unavailable(what.into())
}

/// Maps a script status: -1 unknown session, -2 fenced, else success.
fn status(owner: &Owner, code: i64) -> Result<i64, StoreError> {
    match code {
        -1 => Err(StoreError::UnknownSession(owner.session.clone())),
        -2 => Err(StoreError::Fenced(owner.session.clone())),
        n if n < 0 => Err(malformed("unknown script status")),
        n => Ok(n),
    }
}

fn array(v: &Value) -> Result<&[Value], StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(malformed("expected an array reply")),
    }
}

fn bytes(v: &Value) -> Result<&[u8], StoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        Value::Nil => Ok(b""),
        _ => Err(malformed("expected a string reply")),
    }
}

fn utf8(b: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(b).map_err(|_| malformed("name not UTF-8"))
}

fn string(v: Option<&Value>) -> Result<String, StoreError> {
    utf8(bytes(v.ok_or_else(|| malformed("missing reply field"))?)?.to_vec())
}

fn int_signed(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(n) => Ok(*n),
        other => std::str::from_utf8(bytes(other)?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("expected an integer reply")),
    }
}

fn int(v: Option<&Value>) -> Result<u64, StoreError> {
    match v.ok_or_else(|| malformed("missing reply field"))? {
        Value::Int(n) => u64::try_from(*n).map_err(|_| malformed("negative integer")),
        Value::Nil => Ok(0),
        other => std::str::from_utf8(bytes(other)?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("expected an integer reply")),
    }
}

impl Store for RedisStore {
    fn create<'a>(
        &'a self,
        name: &'a str,
        _now_ms: u64,
    ) -> StoreFuture<'a, Result<SessionState, CreateRefused>> {
        Box::pin(self.create_async(name))
    }

    fn resume<'a>(
        &'a self,
        session: &'a SessionId,
        lifetime_ms: u64,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<SessionState>> {
        Box::pin(self.resume_async(session, lifetime_ms, now_ms))
    }

    fn detach<'a>(&'a self, owner: &'a Owner, now_ms: u64) -> StoreFuture<'a, ()> {
        Box::pin(self.detach_async(owner, now_ms))
    }

    fn end<'a>(&'a self, owner: &'a Owner) -> StoreFuture<'a, ()> {
        Box::pin(self.end_async(owner))
    }

    fn publish<'a>(
        &'a self,
        owner: &'a Owner,
        seq: u64,
        channel: Option<&'a str>,
        payload: &'a Payload,
    ) -> StoreFuture<'a, PublishOutcome> {
        Box::pin(self.publish_async(owner, seq, channel, payload))
    }

    fn subscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(self.subscribe_async(owner, channel))
    }

    fn unsubscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.held(&self.scripts.unsubscribe, owner, &[channel.as_bytes()])
                .await
                .map(drop)
        })
    }

    fn fetch<'a>(
        &'a self,
        owner: &'a Owner,
        after: u64,
        max: usize,
    ) -> StoreFuture<'a, Vec<StoredMessage>> {
        Box::pin(self.fetch_async(owner, after, max))
    }

    fn received<'a>(&'a self, owner: &'a Owner, offset: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let offset = offset.min(MAX_OFFSET).to_string();
            self.held(&self.scripts.received, owner, &[offset.as_bytes()])
                .await
                .map(drop)
        })
    }

    fn broadcast<'a>(&'a self, channel: &'a str, payload: &'a Payload) -> StoreFuture<'a, ()> {
        Box::pin(self.append(channel, payload, b"", b""))
    }

    fn send_to<'a>(&'a self, name: &'a str, payload: &'a Payload) -> StoreFuture<'a, bool> {
        Box::pin(self.send_to_async(name, payload))
    }

    fn notices(&self) -> Notices {
        self.fanout.subscribe()
    }
}

/// The Lua scripts, each prefixed with [`PRELUDE`].
struct Scripts {
    name: Script,
    create: Script,
    resume: Script,
    detach: Script,
    end: Script,
    keep: Script,
    publish: Script,
    append: Script,
    published: Script,
    subscribe: Script,
    unsubscribe: Script,
    fetch: Script,
    received: Script,
    send_to: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            name: s(include_str!("scripts/name.lua")),
            create: s(include_str!("scripts/create.lua")),
            resume: s(include_str!("scripts/resume.lua")),
            detach: s(include_str!("scripts/detach.lua")),
            end: s(include_str!("scripts/end.lua")),
            keep: s(include_str!("scripts/keep.lua")),
            publish: s(include_str!("scripts/publish.lua")),
            append: s(include_str!("scripts/append.lua")),
            published: s(include_str!("scripts/published.lua")),
            subscribe: s(include_str!("scripts/subscribe.lua")),
            unsubscribe: s(include_str!("scripts/unsubscribe.lua")),
            fetch: s(include_str!("scripts/fetch.lua")),
            received: s(include_str!("scripts/received.lua")),
            send_to: s(include_str!("scripts/send_to.lua")),
        }
    }
}

// The scripts live in `scripts/`, each file opening with the `KEYS` and
// `ARGV` it takes and the reply it gives; every one runs after
// `prelude.lua`.
const PRELUDE: &str = include_str!("scripts/prelude.lua");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_parse_as_the_scripts_publish_them() {
        assert_eq!(
            parse_notice(b"c:news:eu"),
            Some(Notice::Channel("news:eu".into()))
        );
        assert_eq!(
            parse_notice(b"s:r1-2"),
            Some(Notice::Session(SessionId::new("r1-2")))
        );
        assert_eq!(
            parse_notice(b"t:7:r1-2"),
            Some(Notice::TakenOver(Owner {
                session: SessionId::new("r1-2"),
                epoch: 7
            }))
        );
        for bad in [&b"x:1"[..], b"t:z:r1", b"c", b"\xff:1"] {
            assert_eq!(parse_notice(bad), None);
        }
    }

    #[tokio::test]
    async fn settings_are_checked_before_connecting() {
        let base = || RedisStore::builder("redis://127.0.0.1:1/");
        for (builder, what) in [
            (base().prefix(""), "prefix"),
            (base().prefix("a{b"), "prefix"),
            (RedisStore::cluster_builder(Vec::<String>::new()), "URL"),
            (base().channel_cap(0), "cap"),
            (base().backlog(0), "backlog"),
            (base().backlog(usize::MAX), "cap"),
            (base().notice_buffer(0), "buffer"),
            (base().detached_ttl(Duration::ZERO), "TTL"),
            (base().detached_ttl(Duration::MAX), "TTL"),
            (base().node_ttl(Duration::from_millis(2)), "node TTL"),
            (base().response_timeout(Duration::ZERO), "timeout"),
        ] {
            match builder.connect().await {
                Err(RedisSetupError::Invalid(why)) => assert!(why.contains(what), "{why}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn debug_output_hides_the_url() {
        let b = RedisStore::builder("redis://:hunter2@127.0.0.1:6379/");
        assert!(!format!("{b:?}").contains("hunter2"));
        let c = RedisStore::cluster_builder(["redis://:hunter2@127.0.0.1:7000"]);
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn script_statuses_map_to_errors() {
        let owner = Owner {
            session: SessionId::new("s"),
            epoch: 1,
        };
        assert!(matches!(
            status(&owner, -1),
            Err(StoreError::UnknownSession(_))
        ));
        assert!(matches!(status(&owner, -2), Err(StoreError::Fenced(_))));
        assert!(matches!(status(&owner, 2), Ok(2)));
    }
}
