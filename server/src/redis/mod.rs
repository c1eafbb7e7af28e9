//! [`RedisStore`]: sessions and channel logs in Redis, so that several nodes
//! serve one logical server and any node can resume any session.
//!
//! Layout (every key starts with the configured prefix `P`):
//! * `P:g`: one global counter; every entry appended to any log gets the
//!   next value `g` and is stored with the stream ID `<g>-0`, so entries of
//!   all logs are totally ordered and reading several logs at once gives a
//!   consistent snapshot.
//! * `P:c:<channel>`: the channel's log, a stream capped at
//!   [`RedisStoreBuilder::channel_cap`] entries (`MAXLEN ~`); each entry
//!   carries its per-channel sequence number (from the hash `P:cseq`), so a
//!   reader that finds a trimmed range knows exactly how many it missed.
//! * `P:s:<id>`: the session hash (name, epoch, `H`, last offset, RECEIVED,
//!   connected flag, loss time, its direct-message cursor);
//!   `P:s:<id>:subs` maps each subscribed channel to the session's cursor
//!   in it (`<g>:<seq>`); `P:s:<id>:in` holds the MESSAGEs numbered for it
//!   and not yet RECEIVED (a stream whose IDs are the offsets, capped at
//!   [`RedisStoreBuilder::backlog`]): a channel message as a reference to
//!   its log entry (channel and `g`), never a copy, so a channel entry is
//!   stored once however many sessions it goes to; `P:s:<id>:d` holds
//!   messages addressed to it by name until it numbers them (they then
//!   move into the inbox with their payload).
//! * `P:n:<name>`: the session holding a name.
//! * `P:notices`: the pub/sub channel every node listens to.
//!
//! Every method is one Lua script, so it is atomic: a fenced owner can
//! change nothing, and offsets are numbered and stored in the same step
//! (`fetch` reads every source after its cursor, merges by `g`, numbers the
//! entries in that order, counting a trimmed range as a gap of its exact
//! size, appends them to the inbox and returns the inbox above `after`).
//! A reference whose channel entry was trimmed before it was delivered is
//! dropped and counted like any other trimmed message: the client sees a
//! gap.
//!
//! Fetches are batched per node: every [`Store::fetch`] goes to one task
//! that sends whatever queued meanwhile (up to [`FETCH_BATCH`] sessions) as
//! one script call, at most four in flight. When a publish wakes every
//! local subscriber of a channel, their fetches share a few round trips, the
//! channel's new entries are read once per call, and each payload crosses
//! the link once per call however many sessions receive it.
//! The scripts touch keys they compute from the prefix, so the store needs
//! one Redis server (with replicas if wanted), not a Redis Cluster.
//!
//! Each store keeps one dedicated pub/sub connection for notices; when it
//! drops and comes back, the store emits [`Notice::Lagged`]. A session that
//! lost its connection expires in Redis [`RedisStoreBuilder::detached_ttl`]
//! after the loss, which must be at least the server's token lifetime.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redial_core::payload::{Payload, Text};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use tokio::sync::{mpsc, oneshot, Semaphore};

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

/// Offsets are Lua numbers in the scripts; below this they are exact and
/// print without an exponent.
const MAX_OFFSET: u64 = 10_000_000_000_000;

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
    url: String,
    prefix: String,
    channel_cap: usize,
    backlog: usize,
    notice_buffer: usize,
    detached_ttl: Duration,
    node_ttl: Duration,
    response_timeout: Duration,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: it stays out of Debug output.
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("channel_cap", &self.channel_cap)
            .field("backlog", &self.backlog)
            .field("notice_buffer", &self.notice_buffer)
            .field("detached_ttl", &self.detached_ttl)
            .field("node_ttl", &self.node_ttl)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key and of the notice channel (default
    /// [`DEFAULT_PREFIX`]); stores that share a prefix share everything.
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

    /// Connects (a command connection and the notice subscription) and
    /// returns the store. Must run inside a tokio runtime, which the
    /// notice listener is spawned on.
    ///
    /// # Errors
    /// [`RedisSetupError::Invalid`] for a zero or empty setting,
    /// [`RedisSetupError::Connect`] when Redis cannot be reached.
    pub async fn connect(self) -> Result<RedisStore, RedisSetupError> {
        if self.prefix.is_empty() {
            return Err(RedisSetupError::Invalid("the key prefix is empty"));
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
        let connect = |e: redis::RedisError| RedisSetupError::Connect(Box::new(e));
        let client = redis::Client::open(self.url.as_str()).map_err(connect)?;
        // Few, short reconnect attempts per call: with Redis gone a call
        // should fail fast (the connection closes with `internal` and the
        // client resumes later) rather than hold its connection for seconds.
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.response_timeout))
            .set_connection_timeout(Some(self.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(connect)?;
        let channel = format!("{}notices", self.prefix);
        let fanout = Arc::new(Fanout::new(self.notice_buffer));
        let first = subscribe(&client, &channel).await.map_err(connect)?;
        let listener = tokio::spawn(listen(client, channel, Arc::clone(&fanout), first));
        let scripts = Arc::new(Scripts::new());
        let held = Arc::new(Mutex::new(HashSet::new()));
        let beat = Heartbeat {
            conn: conn.clone(),
            scripts: Arc::clone(&scripts),
            prefix: self.prefix.clone(),
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
            prefix: self.prefix.clone(),
            backlog: self.backlog.to_string(),
        };
        let batcher = tokio::spawn(batcher.run(calls));
        Ok(RedisStore {
            conn,
            prefix: self.prefix,
            channel_cap: self.channel_cap,
            backlog: self.backlog,
            detached_ttl_ms: millis(self.detached_ttl),
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
    conn: ConnectionManager,
    prefix: String,
    channel_cap: usize,
    backlog: usize,
    detached_ttl_ms: u64,
    fanout: Arc<Fanout>,
    listener: tokio::task::JoinHandle<()>,
    heartbeat: tokio::task::JoinHandle<()>,
    batcher: tokio::task::JoinHandle<()>,
    /// Fetches waiting for the batcher (at most [`FETCH_QUEUE`]).
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
            .field("prefix", &self.prefix)
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

impl RedisStore {
    /// Settings for a store on the Redis at `url` (`redis://host:port/db`,
    /// with a password if needed; the URL never appears in Debug output).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            channel_cap: DEFAULT_CHANNEL_CAP,
            backlog: DEFAULT_BACKLOG,
            notice_buffer: DEFAULT_NOTICE_BUFFER,
            detached_ttl: DEFAULT_DETACHED_TTL,
            node_ttl: DEFAULT_NODE_TTL,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
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
        let mut conn = self.conn.clone();
        let n: Option<u64> = redis::cmd("HGET")
            .arg(format!("{}stats", self.prefix))
            .arg("dropped")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(n.unwrap_or(0))
    }

    async fn eval(&self, script: &Script, args: &[&[u8]]) -> Result<Value, StoreError> {
        let mut conn = self.conn.clone();
        let mut invocation = script.prepare_invoke();
        invocation.arg(self.prefix.as_bytes());
        for arg in args {
            invocation.arg(*arg);
        }
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn create_async(
        &self,
        name: &str,
    ) -> Result<Result<SessionState, CreateRefused>, StoreError> {
        let tag = format!("{:016x}", random_u64());
        let reply = self
            .eval(
                &self.scripts.create,
                &[
                    name.as_bytes(),
                    self.node.as_bytes(),
                    self.detached_ttl_ms.to_string().as_bytes(),
                    tag.as_bytes(),
                ],
            )
            .await?;
        let items = array(&reply)?;
        if int(items.first())? == 0 {
            return Ok(Err(CreateRefused::NameTaken));
        }
        let id = SessionId::new(string(items.get(1))?);
        self.hold(&id, true);
        Ok(Ok(SessionState {
            owner: Owner {
                session: id,
                epoch: 1,
            },
            name: name.to_owned(),
            last_client_seq: 0,
            subscriptions: Vec::new(),
            last_offset: 0,
        }))
    }

    async fn resume_async(
        &self,
        session: &SessionId,
        lifetime_ms: u64,
        now_ms: u64,
    ) -> Result<Option<SessionState>, StoreError> {
        let reply = self
            .eval(
                &self.scripts.resume,
                &[
                    session.as_str().as_bytes(),
                    lifetime_ms.to_string().as_bytes(),
                    now_ms.to_string().as_bytes(),
                    self.node.as_bytes(),
                    self.detached_ttl_ms.to_string().as_bytes(),
                ],
            )
            .await?;
        let items = array(&reply)?;
        if int(items.first())? == 0 {
            return Ok(None);
        }
        self.hold(session, true);
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
            name: string(items.get(2))?,
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

    /// Runs a script whose reply is a status: 0 or more is success.
    async fn held(
        &self,
        script: &Script,
        owner: &Owner,
        args: &[&[u8]],
    ) -> Result<i64, StoreError> {
        let epoch = owner.epoch.to_string();
        let mut all: Vec<&[u8]> = vec![owner.session.as_str().as_bytes(), epoch.as_bytes()];
        all.extend_from_slice(args);
        let reply = self.eval(script, &all).await?;
        status(owner, int_signed(&reply)?)
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

/// Fetches gathered into one script call at most (each adds four script
/// arguments and its reply).
pub const FETCH_BATCH: usize = 256;
/// Fetches that may wait for a batch; a caller beyond it waits to queue
/// (its own deadline still applies).
const FETCH_QUEUE: usize = 4096;
/// Batched fetch calls in flight to Redis at once per store.
const FETCH_BATCHES_IN_FLIGHT: usize = 4;

/// One [`Store::fetch`] waiting for its batch.
struct FetchCall {
    owner: Owner,
    after: u64,
    max: usize,
    reply: oneshot::Sender<Result<Vec<StoredMessage>, StoreError>>,
}

/// Runs every fetch the node's connections ask for, as few script calls as
/// possible: whatever queued while earlier batches were in flight goes in
/// the next one. A notice that wakes every local subscriber of a channel
/// thus costs one round trip for all of them, and the channel's entries
/// cross the link once.
struct Batcher {
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    prefix: String,
    backlog: String,
}

impl Batcher {
    async fn run(self, mut calls: mpsc::Receiver<FetchCall>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(FETCH_BATCHES_IN_FLIGHT));
        loop {
            // Waiting for a free slot first lets the next batch grow.
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let Some(first) = calls.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < FETCH_BATCH {
                match calls.try_recv() {
                    Ok(call) => batch.push(call),
                    Err(_) => break,
                }
            }
            let this = Arc::clone(&this);
            tokio::spawn(async move {
                this.serve(batch).await;
                drop(slot);
            });
        }
    }

    async fn serve(&self, batch: Vec<FetchCall>) {
        match self.call(&batch).await {
            Ok(results) => {
                for (call, result) in batch.into_iter().zip(results) {
                    let result =
                        result.and_then(|(st, messages)| status(&call.owner, st).map(|_| messages));
                    // A caller that gave up (its deadline passed) is gone.
                    let _ = call.reply.send(result);
                }
            }
            Err(e) => {
                let why = e.to_string();
                for call in batch {
                    let _ = call
                        .reply
                        .send(Err(StoreError::Unavailable(why.clone().into())));
                }
            }
        }
    }

    /// One script call for the whole batch: per call its status and its
    /// MESSAGEs, or why the reply could not be read.
    async fn call(
        &self,
        batch: &[FetchCall],
    ) -> Result<Vec<Result<(i64, Vec<StoredMessage>), StoreError>>, StoreError> {
        let mut invocation = self.scripts.fetch.prepare_invoke();
        invocation
            .arg(self.prefix.as_bytes())
            .arg(self.backlog.as_bytes());
        for call in batch {
            invocation
                .arg(call.owner.session.as_str())
                .arg(call.owner.epoch)
                .arg(call.after.min(MAX_OFFSET))
                .arg(call.max.min(1 << 30));
        }
        let mut conn = self.conn.clone();
        let reply: Value = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let [entries, sessions] = array(&reply)? else {
            return Err(malformed("fetch reply is not a pair"));
        };
        let entries = array(entries)?
            .chunks(3)
            .map(|chunk| {
                let [channel, payload, text] = chunk else {
                    return Err(malformed("fetch entries are not in threes"));
                };
                let channel = match bytes(channel)?.split_first() {
                    Some((b'c', name)) => Some(utf8(name.to_vec())?),
                    _ => None,
                };
                let data = Bytes::copy_from_slice(bytes(payload)?);
                let payload = if bytes(text)? == b"1" {
                    Payload::text(
                        Text::from_utf8(data).map_err(|_| malformed("text payload not UTF-8"))?,
                    )
                } else {
                    Payload::binary(data)
                };
                Ok((channel, payload))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let sessions = array(sessions)?;
        if sessions.len() != batch.len() {
            return Err(malformed("fetch reply has the wrong number of sessions"));
        }
        Ok(sessions
            .iter()
            .map(|one| {
                let items = array(one)?;
                let first = items
                    .first()
                    .ok_or_else(|| malformed("empty fetch reply"))?;
                let st = int_signed(first)?;
                let messages = items[1..]
                    .chunks(2)
                    .map(|pair| {
                        let [offset, index] = pair else {
                            return Err(malformed("fetch reply is not in pairs"));
                        };
                        let index = usize::try_from(int(Some(index))?)
                            .map_err(|_| malformed("entry index out of range"))?;
                        let (channel, payload) = index
                            .checked_sub(1)
                            .and_then(|i| entries.get(i))
                            .ok_or_else(|| malformed("entry index out of range"))?;
                        Ok(StoredMessage {
                            offset: int(Some(offset))?,
                            channel: channel.clone(),
                            payload: payload.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((st, messages))
            })
            .collect())
    }
}

/// Every notice on the pub/sub channel, forwarded to the store's listeners;
/// after the link drops it reconnects and tells them they lagged.
async fn listen(
    client: redis::Client,
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
        stream = loop {
            tokio::time::sleep(delay).await;
            match subscribe(&client, &channel).await {
                Ok(stream) => break stream,
                Err(_) => delay = (delay * 2).min(Duration::from_secs(2)),
            }
        };
        fanout.send(&Notice::Lagged);
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSubStream> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub.into_on_message())
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
/// it holds (so a connected session never expires, and one whose node died
/// expires a detached TTL later).
struct Heartbeat {
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    prefix: String,
    node: String,
    node_ttl: Duration,
    detached_ttl: Duration,
    held: Arc<Mutex<HashSet<SessionId>>>,
}

impl Heartbeat {
    async fn beat(&self, sessions: bool) -> redis::RedisResult<()> {
        let ids: Vec<SessionId> = if sessions {
            let set = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            set.iter().cloned().collect()
        } else {
            Vec::new()
        };
        let mut invocation = self.scripts.heartbeat.prepare_invoke();
        invocation
            .arg(self.prefix.as_bytes())
            .arg(self.node.as_bytes())
            .arg(millis(self.node_ttl))
            .arg(millis(self.detached_ttl));
        for id in &ids {
            invocation.arg(id.as_str());
        }
        let mut conn = self.conn.clone();
        invocation.invoke_async::<()>(&mut conn).await
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
        Box::pin(async move {
            self.hold(&owner.session, false);
            let now = now_ms.to_string();
            let ttl = self.detached_ttl_ms.to_string();
            match self
                .held(
                    &self.scripts.detach,
                    owner,
                    &[now.as_bytes(), ttl.as_bytes()],
                )
                .await
            {
                // A superseded or ended holder has nothing to detach.
                Ok(_) | Err(StoreError::Fenced(_) | StoreError::UnknownSession(_)) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn end<'a>(&'a self, owner: &'a Owner) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.hold(&owner.session, false);
            self.held(&self.scripts.end, owner, &[]).await.map(drop)
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
            let seq = seq.to_string();
            let cap = self.channel_cap.to_string();
            let (has, name) = channel.map_or((&b"0"[..], &b""[..]), |c| (b"1", c.as_bytes()));
            let text: &[u8] = if payload.is_text() { b"1" } else { b"0" };
            let code = self
                .held(
                    &self.scripts.publish,
                    owner,
                    &[
                        seq.as_bytes(),
                        has,
                        name,
                        payload.bytes(),
                        text,
                        cap.as_bytes(),
                    ],
                )
                .await?;
            Ok(if code == 2 {
                PublishOutcome::Duplicate
            } else {
                PublishOutcome::Applied
            })
        })
    }

    fn subscribe<'a>(&'a self, owner: &'a Owner, channel: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.held(&self.scripts.subscribe, owner, &[channel.as_bytes()])
                .await
                .map(drop)
        })
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
        Box::pin(async move {
            let cap = self.channel_cap.to_string();
            let text: &[u8] = if payload.is_text() { b"1" } else { b"0" };
            self.eval(
                &self.scripts.broadcast,
                &[channel.as_bytes(), payload.bytes(), text, cap.as_bytes()],
            )
            .await
            .map(drop)
        })
    }

    fn send_to<'a>(&'a self, name: &'a str, payload: &'a Payload) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let backlog = self.backlog.to_string();
            let text: &[u8] = if payload.is_text() { b"1" } else { b"0" };
            let reply = self
                .eval(
                    &self.scripts.send_to,
                    &[name.as_bytes(), payload.bytes(), text, backlog.as_bytes()],
                )
                .await?;
            Ok(int_signed(&reply)? == 1)
        })
    }

    fn notices(&self) -> Notices {
        self.fanout.subscribe()
    }
}

/// The Lua scripts, each prefixed with [`PRELUDE`].
struct Scripts {
    create: Script,
    resume: Script,
    detach: Script,
    end: Script,
    publish: Script,
    subscribe: Script,
    unsubscribe: Script,
    fetch: Script,
    received: Script,
    broadcast: Script,
    send_to: Script,
    heartbeat: Script,
}

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            create: s(CREATE),
            resume: s(RESUME),
            detach: s(DETACH),
            end: s(END),
            publish: s(PUBLISH),
            subscribe: s(SUBSCRIBE),
            unsubscribe: s(UNSUBSCRIBE),
            fetch: s(FETCH),
            received: s(RECEIVED),
            broadcast: s(BROADCAST),
            send_to: s(SEND_TO),
            heartbeat: s(HEARTBEAT),
        }
    }
}

// The scripts live in `scripts/`, each file opening with the `ARGV` it takes
// and the reply it gives; every one runs after `prelude.lua`.
const PRELUDE: &str = include_str!("scripts/prelude.lua");
const CREATE: &str = include_str!("scripts/create.lua");
const RESUME: &str = include_str!("scripts/resume.lua");
const DETACH: &str = include_str!("scripts/detach.lua");
const END: &str = include_str!("scripts/end.lua");
const PUBLISH: &str = include_str!("scripts/publish.lua");
const SUBSCRIBE: &str = include_str!("scripts/subscribe.lua");
const UNSUBSCRIBE: &str = include_str!("scripts/unsubscribe.lua");
const FETCH: &str = include_str!("scripts/fetch.lua");
const RECEIVED: &str = include_str!("scripts/received.lua");
const HEARTBEAT: &str = include_str!("scripts/heartbeat.lua");
const BROADCAST: &str = include_str!("scripts/broadcast.lua");
const SEND_TO: &str = include_str!("scripts/send_to.lua");

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
