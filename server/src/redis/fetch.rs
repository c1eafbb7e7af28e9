//! [`Store::fetch`](crate::store::Store::fetch) on Redis, batched per
//! node. On a cluster it takes two steps, so that every script touches one
//! hash slot:
//!
//! 1. Read: each session's cursors (one `HGETALL` per session, skipped
//!    when this node remembers them from the session's last commit), then
//!    each channel log once, after the oldest cursor among the batch's
//!    sessions (one `XRANGE` per channel; each session takes its tail).
//! 2. Commit: one script per slot, for each of its sessions in turn, that
//!    fences the owner, checks that its subscriptions and cursors are
//!    still the ones read (else the session goes round again, at most
//!    [`MAX_ROUNDS`] times), numbers what was read together with the
//!    session's direct messages, stores the references and the new
//!    cursors, and returns the MESSAGEs above `after`.
//!
//! On one Redis server every key is on that server, so the whole batch is
//! one call of the same script, which reads each session's cursors and
//! logs itself (each log once per cursor) before the same commit, and
//! returns the payloads of every entry its replies reference.
//!
//! Payloads come from the channel logs, whose entries never change: those
//! read in step 1 are reused, older ones (a replay) are read by ID. An
//! entry trimmed before it was delivered is dropped from the inbox and
//! counted: the client sees a gap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::future::join_all;
use redial_core::payload::{Payload, Text};
use redis::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::conn::Conn;
use super::keys::Keys;
use super::{array, bytes, int, int_signed, malformed, status, unavailable, utf8, Scripts};
use crate::store::{Owner, SessionId, StoreError, StoredMessage};
use redis::cluster_routing::Route;

/// Fetches gathered into one batch at most.
pub const FETCH_BATCH: usize = 256;
/// Fetches that may wait for a batch; a caller beyond it waits to queue
/// (its own deadline still applies).
pub(super) const FETCH_QUEUE: usize = 4096;
/// Batches in flight to Redis at once per store.
const FETCH_BATCHES_IN_FLIGHT: usize = 4;
/// Read-and-commit rounds a fetch gets when another fetch of the same
/// session keeps moving its cursors first.
const MAX_ROUNDS: usize = 4;
/// Sessions whose cursors a node remembers; beyond it, it forgets them all
/// (they are read again on each session's next fetch).
const KNOWN_CURSORS: usize = 65_536;
/// Offsets are Lua numbers in the scripts; below this they are exact and
/// print without an exponent.
pub(super) const MAX_OFFSET: u64 = 10_000_000_000_000;

/// One [`Store::fetch`](crate::store::Store::fetch) waiting for its batch.
pub(super) struct FetchCall {
    pub(super) owner: Owner,
    pub(super) after: u64,
    pub(super) max: usize,
    pub(super) reply: oneshot::Sender<Result<Vec<StoredMessage>, StoreError>>,
}

/// Runs every fetch the node's connections ask for, a batch at a time:
/// whatever queued while earlier batches were in flight goes in the next
/// one, so a notice that wakes every local subscriber of a channel reads
/// its new entries once and their commits share the link.
pub(super) struct Batcher {
    pub(super) conn: Conn,
    pub(super) scripts: Arc<Scripts>,
    pub(super) keys: Keys,
    pub(super) backlog: String,
    /// Replicas each commit waits for (`WAIT`), 0 for none.
    pub(super) replicas: usize,
    /// Each session's cursors as this node's last commit left them, so a
    /// fetch need not read them first; a stale entry costs one more round
    /// (the commit checks them). At most [`KNOWN_CURSORS`] sessions.
    pub(super) known: Mutex<HashMap<SessionId, Vec<(String, String)>>>,
}

/// Entries read from one channel log after one cursor.
#[derive(Default)]
struct Read {
    /// The channel seq of the first entry (0 when none).
    first_seq: u64,
    /// Their stream IDs, in order.
    ids: Vec<String>,
}

/// Where a fetch's result goes, and the result.
type Answer = (
    oneshot::Sender<Result<Vec<StoredMessage>, StoreError>>,
    Result<Vec<StoredMessage>, StoreError>,
);

/// A stream ID, `<time>-<sequence>`, as numbers: what orders a log.
type StreamId = (u64, u64);

/// One entry of a channel log, as read.
struct Entry {
    at: StreamId,
    id: String,
    seq: u64,
    payload: Payload,
}

fn stream_id(id: &str) -> Result<StreamId, StoreError> {
    id.split_once('-')
        .and_then(|(t, n)| Some((t.parse().ok()?, n.parse().ok()?)))
        .ok_or_else(|| malformed("a malformed stream ID"))
}

/// The stream ID a cursor (`<id>:<seq>`) points after.
fn cursor_id(cursor: &str) -> Result<StreamId, StoreError> {
    let (id, _) = cursor
        .rsplit_once(':')
        .ok_or_else(|| malformed("a cursor without a seq"))?;
    stream_id(id)
}

/// A channel entry's payload by channel and stream ID.
type Loaded = HashMap<(String, String), Payload>;

/// A MESSAGE the commit returned: the payload, or where to find it.
enum Item {
    Direct(Payload),
    Channel(String, String),
}

impl Batcher {
    pub(super) async fn run(self, mut calls: mpsc::Receiver<FetchCall>) {
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
        let mut pending = batch;
        let mut dropped = 0;
        let mut answers = Vec::new();
        for _ in 0..MAX_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let (again, lost) = self.round(pending, &mut answers).await;
            pending = again;
            dropped += lost;
        }
        for call in pending {
            answers.push((
                call.reply,
                Err(malformed(
                    "the fetch kept racing another fetch of the same session",
                )),
            ));
        }
        // The count is up to date before anyone hears of what it counts.
        if dropped > 0 {
            // Only a statistic: a failure here loses nothing.
            let _: Result<(), _> = redis::cmd("HINCRBY")
                .arg(self.keys.stats())
                .arg("dropped")
                .arg(dropped)
                .query_async(&mut self.conn.clone())
                .await;
        }
        for (reply, result) in answers {
            // A caller that gave up (its deadline passed) is gone.
            let _ = reply.send(result);
        }
    }

    /// One read-and-commit round for every call: adds the answers of those
    /// that committed or failed to `answers`, returns those whose cursors
    /// moved meanwhile and how many messages were found dropped.
    async fn round(
        &self,
        calls: Vec<FetchCall>,
        answers: &mut Vec<Answer>,
    ) -> (Vec<FetchCall>, u64) {
        let (commits, mut loaded, cursors) = if self.conn.is_single() {
            self.read_and_commit(&calls).await
        } else {
            self.read_then_commit(&calls).await
        };
        let mut again = Vec::new();
        let mut done = Vec::new();
        let mut lost = 0;
        for ((call, commit), cursors) in calls.into_iter().zip(commits).zip(cursors) {
            match commit {
                Ok(Some((dropped, items))) => {
                    if let Some(cursors) = cursors {
                        self.remember(&call.owner.session, cursors);
                    }
                    lost += dropped;
                    done.push((call, items));
                }
                Ok(None) => {
                    self.remember(&call.owner.session, Vec::new());
                    again.push(call);
                }
                Err(e) => {
                    self.remember(&call.owner.session, Vec::new());
                    answers.push((call.reply, Err(e)));
                }
            }
        }
        // Payloads of references not read in this round (a replay).
        let mut missing: Vec<(String, String)> = Vec::new();
        for (_, items) in &done {
            for (_, item) in items {
                if let Item::Channel(ch, id) = item {
                    let key = (ch.clone(), id.clone());
                    if !loaded.contains_key(&key) && !missing.contains(&key) {
                        missing.push(key);
                    }
                }
            }
        }
        let found = join_all(missing.iter().map(|(ch, id)| self.entry(ch, id))).await;
        let mut unreadable = None;
        for (key, result) in missing.into_iter().zip(found) {
            match result {
                Ok(Some(payload)) => {
                    loaded.insert(key, payload);
                }
                Ok(None) => {}
                Err(e) => unreadable = Some(e.to_string()),
            }
        }
        for (call, items) in done {
            if let Some(why) = &unreadable {
                answers.push((call.reply, Err(malformed_owned(why.clone()))));
                continue;
            }
            let mut messages = Vec::with_capacity(items.len());
            let mut gone = Vec::new();
            for (offset, item) in items {
                match item {
                    Item::Direct(payload) => messages.push(StoredMessage {
                        offset,
                        channel: None,
                        payload,
                    }),
                    Item::Channel(ch, id) => {
                        let key = (ch, id);
                        match loaded.get(&key) {
                            Some(payload) => messages.push(StoredMessage {
                                offset,
                                channel: Some(key.0),
                                payload: payload.clone(),
                            }),
                            None => gone.push(offset),
                        }
                    }
                }
            }
            lost += self.forget(&call.owner, &gone).await;
            answers.push((call.reply, Ok(messages)));
        }
        (again, lost)
    }

    /// Step 1 then step 2 of the module doc, for a cluster (or any link
    /// whose logs may live elsewhere than the sessions): per call, its
    /// commit, the payloads read, and its cursors after the commit.
    async fn read_then_commit(&self, calls: &[FetchCall]) -> Staged {
        let subs = join_all(calls.iter().map(|c| async {
            match self.remembered(&c.owner.session) {
                Some(known) => Ok(known),
                None => self.cursors(&c.owner).await,
            }
        }))
        .await;
        let mut reads: HashMap<(String, String), Option<Read>> = HashMap::new();
        for list in subs.iter().flatten() {
            for (channel, cursor) in list {
                reads.insert((channel.clone(), cursor.clone()), None);
            }
        }
        // Each channel is read once, after the oldest cursor in the batch;
        // every session at a later cursor takes the tail it has not seen.
        let mut oldest: HashMap<String, (StreamId, String)> = HashMap::new();
        let mut failed: Option<String> = None;
        for (channel, cursor) in reads.keys() {
            match cursor_id(cursor) {
                Ok(id) => {
                    let entry = oldest
                        .entry(channel.clone())
                        .or_insert_with(|| (id, cursor.clone()));
                    if id < entry.0 {
                        *entry = (id, cursor.clone());
                    }
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        let channels: Vec<(String, String)> = oldest
            .into_iter()
            .map(|(channel, (_, cursor))| (channel, cursor))
            .collect();
        let results = join_all(channels.iter().map(|(ch, cur)| self.read(ch, cur))).await;
        let mut logs: HashMap<String, Vec<Entry>> = HashMap::new();
        for ((channel, _), result) in channels.into_iter().zip(results) {
            match result {
                Ok(entries) => {
                    logs.insert(channel, entries);
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        let mut loaded = Loaded::new();
        for ((channel, cursor), read) in &mut reads {
            let (Some(entries), Ok(after)) = (logs.get(channel), cursor_id(cursor)) else {
                continue;
            };
            let tail = &entries[entries.partition_point(|e| e.at <= after)..];
            *read = Some(Read {
                first_seq: tail.first().map_or(0, |e| e.seq),
                ids: tail.iter().map(|e| e.id.clone()).collect(),
            });
        }
        for (channel, entries) in logs {
            for e in entries {
                loaded.insert((channel.clone(), e.id), e.payload);
            }
        }
        // Sessions of one slot commit in one script call: on one Redis
        // server that is the whole batch, on a cluster mostly one each.
        let mut commits: Vec<Option<Commit>> = calls.iter().map(|_| None).collect();
        let mut groups: HashMap<Option<Route>, Vec<usize>> = HashMap::new();
        for (i, (call, list)) in calls.iter().zip(&subs).enumerate() {
            match (list, &failed) {
                (Err(e), _) => commits[i] = Some(Err(malformed_owned(e.to_string()))),
                (_, Some(why)) => commits[i] = Some(Err(malformed_owned(why.clone()))),
                (Ok(_), None) => {
                    let key = self.keys.session(call.owner.session.as_str());
                    groups.entry(self.conn.slot_of(&key)).or_default().push(i);
                }
            }
        }
        let groups: Vec<Vec<usize>> = groups.into_values().collect();
        let results = join_all(groups.iter().map(|members| {
            let group: Vec<(&FetchCall, &[(String, String)])> = members
                .iter()
                .filter_map(|&i| Some((&calls[i], subs[i].as_ref().ok()?.as_slice())))
                .collect();
            let reads = Some(&reads);
            async move { self.commit(&group, reads).await.0 }
        }))
        .await;
        for (members, results) in groups.iter().zip(results) {
            for (&i, result) in members.iter().zip(results) {
                commits[i] = Some(result);
            }
        }
        let commits: Vec<Commit> = commits
            .into_iter()
            .map(|c| c.unwrap_or_else(|| Err(malformed("a fetch was not committed"))))
            .collect();
        // What each session's cursors become if its commit holds.
        let cursors = subs
            .into_iter()
            .map(|list| list.ok().map(|list| advanced(list, &reads)))
            .collect();
        (commits, loaded, cursors)
    }

    /// On one Redis server every key is on it, so the commit script reads
    /// the logs itself: the whole batch in one call, with the same
    /// numbering and checks as [`Batcher::read_then_commit`].
    async fn read_and_commit(&self, calls: &[FetchCall]) -> Staged {
        let group: Vec<(&FetchCall, &[(String, String)])> =
            calls.iter().map(|call| (call, &[][..])).collect();
        let (commits, loaded) = self.commit(&group, None).await;
        let cursors = calls.iter().map(|_| None).collect();
        (commits, loaded, cursors)
    }

    fn remembered(&self, session: &SessionId) -> Option<Vec<(String, String)>> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(session).cloned()
    }

    /// Remembers a session's cursors after its commit; an empty list
    /// forgets them (a session without subscriptions has nothing to skip).
    fn remember(&self, session: &SessionId, cursors: Vec<(String, String)>) {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if cursors.is_empty() {
            known.remove(session);
            return;
        }
        if known.len() >= KNOWN_CURSORS && !known.contains_key(session) {
            known.clear();
        }
        known.insert(session.clone(), cursors);
    }

    /// The session's subscriptions and its cursor in each.
    async fn cursors(&self, owner: &Owner) -> Result<Vec<(String, String)>, StoreError> {
        let raw: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(self.keys.subs(owner.session.as_str()))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        raw.into_iter()
            .map(|(c, cur)| Ok((utf8(c)?, utf8(cur)?)))
            .collect()
    }

    /// The entries of `channel`'s log after `cursor`.
    async fn read(&self, channel: &str, cursor: &str) -> Result<Vec<Entry>, StoreError> {
        let (after, _) = cursor
            .rsplit_once(':')
            .ok_or_else(|| malformed("a cursor without a seq"))?;
        let reply: Value = redis::cmd("XRANGE")
            .arg(self.keys.log(channel))
            .arg(format!("({after}"))
            .arg("+")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        array(&reply)?
            .iter()
            .map(|entry| {
                let (id, fields) = stream_entry(entry)?;
                Ok(Entry {
                    at: stream_id(&id)?,
                    seq: int(field(&fields, b"s"))?,
                    payload: payload(&fields)?,
                    id,
                })
            })
            .collect()
    }

    /// One channel entry's payload; `None` when the log no longer has it.
    async fn entry(&self, channel: &str, id: &str) -> Result<Option<Payload>, StoreError> {
        let reply: Value = redis::cmd("XRANGE")
            .arg(self.keys.log(channel))
            .arg(id)
            .arg(id)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        match array(&reply)?.first() {
            Some(entry) => Ok(Some(payload(&stream_entry(entry)?.1)?)),
            None => Ok(None),
        }
    }

    /// Drops references whose channel entry was trimmed before it was
    /// delivered; returns how many this call removed.
    async fn forget(&self, owner: &Owner, offsets: &[u64]) -> u64 {
        if offsets.is_empty() {
            return 0;
        }
        let mut cmd = redis::cmd("XDEL");
        cmd.arg(self.keys.inbox(owner.session.as_str()));
        for offset in offsets {
            cmd.arg(format!("{offset}-0"));
        }
        // A failure leaves them to be found again by the next fetch.
        cmd.query_async(&mut self.conn.clone()).await.unwrap_or(0)
    }

    /// One commit script for the sessions of one slot (on one Redis
    /// server, for all of them), given what was read (`None`: the script
    /// reads each session's logs itself, one Redis server only); per
    /// session `None` when its cursors moved since (go round again), else
    /// how many messages it dropped and the MESSAGEs above `after`; and
    /// the payloads the script read.
    async fn commit(
        &self,
        group: &[(&FetchCall, &[(String, String)])],
        reads: Option<&HashMap<(String, String), Option<Read>>>,
    ) -> (Vec<Commit>, Loaded) {
        let Some((first, _)) = group.first() else {
            return (Vec::new(), Loaded::new());
        };
        let key = self.keys.session(first.owner.session.as_str());
        let mut invocation = self.scripts.fetch.prepare_invoke();
        invocation
            .arg(self.backlog.as_str())
            .arg(self.keys.prefix());
        for (call, subs) in group {
            invocation
                .key(self.keys.session(call.owner.session.as_str()))
                .arg(call.owner.epoch)
                .arg(call.after.min(MAX_OFFSET))
                .arg(call.max.min(1 << 30));
            let Some(reads) = reads else {
                invocation.arg(-1);
                continue;
            };
            invocation.arg(subs.len());
            for (channel, cursor) in *subs {
                let read = reads
                    .get(&(channel.clone(), cursor.clone()))
                    .and_then(Option::as_ref)
                    .map_or((0, &[][..]), |r| (r.first_seq, r.ids.as_slice()));
                invocation
                    .arg(channel.as_str())
                    .arg(cursor.as_str())
                    .arg(read.0)
                    .arg(read.1.len());
                for id in read.1 {
                    invocation.arg(id.as_str());
                }
            }
        }
        let mut conn = self.conn.clone();
        let reply = async {
            let reply: Value = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            // Offsets about to be sent must survive a failover.
            conn.replicated(&key, self.replicas)
                .await
                .map_err(unavailable)?;
            Ok::<_, StoreError>(reply)
        }
        .await;
        let parsed = reply.and_then(|reply| {
            let [replies, entries] = array(&reply)? else {
                return Err(malformed("fetch reply is not a pair"));
            };
            let replies = array(replies)?;
            if replies.len() != group.len() {
                return Err(malformed("fetch reply does not match the batch"));
            }
            let commits: Vec<Commit> = group
                .iter()
                .zip(replies)
                .map(|((call, _), reply)| one_commit(&call.owner, reply))
                .collect();
            Ok((commits, loaded_entries(array(entries)?)?))
        });
        parsed.unwrap_or_else(|e| {
            let why = e.to_string();
            let commits = group
                .iter()
                .map(|_| Err(malformed_owned(why.clone())))
                .collect();
            (commits, Loaded::new())
        })
    }
}

/// Per call of a round: its commit; the payloads read; its cursors once
/// its commit holds (`None`: nothing to remember).
type Staged = (Vec<Commit>, Loaded, Vec<Option<Vec<(String, String)>>>);

/// The entries a commit script read itself: flat quads (channel, entry ID,
/// payload, text).
fn loaded_entries(flat: &[Value]) -> Result<Loaded, StoreError> {
    flat.chunks(4)
        .map(|four| {
            let [channel, id, data, text] = four else {
                return Err(malformed("fetch entries are not in fours"));
            };
            let key = (utf8(bytes(channel)?.to_vec())?, utf8(bytes(id)?.to_vec())?);
            Ok((key, to_payload(bytes(data)?, bytes(text)?)?))
        })
        .collect()
}

/// What one session's commit gave: see [`Batcher::commit`].
type Commit = Result<Option<(u64, Vec<(u64, Item)>)>, StoreError>;

/// One session's part of a commit reply.
fn one_commit(owner: &Owner, reply: &Value) -> Commit {
    let items = array(reply)?;
    let code = int_signed(
        items
            .first()
            .ok_or_else(|| malformed("empty fetch reply"))?,
    )?;
    if code == 3 {
        return Ok(None);
    }
    status(owner, code)?;
    let dropped = int(items.get(1))?;
    let messages = items
        .get(2..)
        .unwrap_or_default()
        .chunks(4)
        .map(|four| {
            let [offset, kind, a, b] = four else {
                return Err(malformed("fetch reply is not in fours"));
            };
            let offset = int(Some(offset))?;
            let item = if bytes(kind)? == b"c" {
                Item::Channel(utf8(bytes(a)?.to_vec())?, utf8(bytes(b)?.to_vec())?)
            } else {
                Item::Direct(to_payload(bytes(a)?, bytes(b)?)?)
            };
            Ok((offset, item))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((dropped, messages)))
}

/// The cursors after a commit of what `reads` found after `cursors`.
fn advanced(
    cursors: Vec<(String, String)>,
    reads: &HashMap<(String, String), Option<Read>>,
) -> Vec<(String, String)> {
    cursors
        .into_iter()
        .map(|(channel, cursor)| {
            let read = reads
                .get(&(channel.clone(), cursor.clone()))
                .and_then(Option::as_ref);
            match read.and_then(|r| Some((r.ids.last()?, r))) {
                Some((last, r)) => {
                    let seq = r.first_seq + r.ids.len() as u64 - 1;
                    let next = format!("{last}:{seq}");
                    (channel, next)
                }
                None => (channel, cursor),
            }
        })
        .collect()
}

/// A stream entry's fields, by name.
type Fields<'v> = Vec<(&'v [u8], &'v Value)>;

/// A stream entry as Redis replies it: its ID and its fields.
fn stream_entry(entry: &Value) -> Result<(String, Fields<'_>), StoreError> {
    let [id, fields] = array(entry)? else {
        return Err(malformed("a stream entry is not a pair"));
    };
    let fields = array(fields)?
        .chunks(2)
        .map(|pair| match pair {
            [name, value] => Ok((bytes(name)?, value)),
            _ => Err(malformed("stream entry fields are not in pairs")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((utf8(bytes(id)?.to_vec())?, fields))
}

fn field<'v>(fields: &[(&[u8], &'v Value)], name: &[u8]) -> Option<&'v Value> {
    fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// The payload of a channel entry (fields `p` and `t`).
fn payload(fields: &[(&[u8], &Value)]) -> Result<Payload, StoreError> {
    let missing = || malformed("a channel entry without its payload");
    let data = bytes(field(fields, b"p").ok_or_else(missing)?)?;
    let text = bytes(field(fields, b"t").ok_or_else(missing)?)?;
    to_payload(data, text)
}

/// A payload as stored: its bytes and `1` when it is text.
pub(super) fn to_payload(data: &[u8], text: &[u8]) -> Result<Payload, StoreError> {
    let data = Bytes::copy_from_slice(data);
    if text == b"1" {
        Ok(Payload::text(
            Text::from_utf8(data).map_err(|_| malformed("text payload not UTF-8"))?,
        ))
    } else {
        Ok(Payload::binary(data))
    }
}

fn malformed_owned(why: String) -> StoreError {
    StoreError::Unavailable(why.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_advance_past_what_was_read() {
        let cursors = vec![
            ("x".to_owned(), "5-0:3".to_owned()),
            ("y".to_owned(), "0-0:0".to_owned()),
        ];
        let mut reads = HashMap::new();
        reads.insert(
            ("x".to_owned(), "5-0:3".to_owned()),
            Some(Read {
                first_seq: 7,
                ids: vec!["9-0".into(), "9-1".into()],
            }),
        );
        reads.insert(("y".to_owned(), "0-0:0".to_owned()), Some(Read::default()));
        assert_eq!(
            advanced(cursors, &reads),
            [
                ("x".to_owned(), "9-1:8".to_owned()),
                ("y".to_owned(), "0-0:0".to_owned())
            ]
        );
    }

    #[test]
    fn entries_a_script_read_parse_in_fours() {
        let b = |v: &[u8]| Value::BulkString(v.to_vec());
        let flat = [b(b"news"), b(b"9-1"), b(b"hi"), b(b"1")];
        let loaded = loaded_entries(&flat).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            loaded.get(&("news".to_owned(), "9-1".to_owned())),
            Some(&Payload::text("hi"))
        );
        assert!(loaded_entries(&flat[..3]).is_err(), "a quad cut short");
    }

    #[test]
    fn stream_entries_parse_as_redis_replies_them() {
        let entry = Value::Array(vec![
            Value::BulkString(b"12-0".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"s".to_vec()),
                Value::BulkString(b"4".to_vec()),
                Value::BulkString(b"p".to_vec()),
                Value::BulkString(b"hi".to_vec()),
                Value::BulkString(b"t".to_vec()),
                Value::BulkString(b"1".to_vec()),
            ]),
        ]);
        let (id, fields) = stream_entry(&entry).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id, "12-0");
        assert_eq!(int(field(&fields, b"s")).ok(), Some(4));
        assert_eq!(
            payload(&fields).ok(),
            Some(Payload::text("hi")),
            "text flag 1 gives a text payload"
        );
        assert!(stream_entry(&Value::Array(vec![Value::Nil])).is_err());
        assert!(to_payload(b"\xff", b"1").is_err(), "text must be UTF-8");
    }
}
