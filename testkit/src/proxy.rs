//! A fault-injecting TCP proxy for loopback tests, in the spirit of toxiproxy.
//!
//! Put a [`Proxy`] between a client and a server, point the client at
//! [`ProxyHandle::addr`], and flip faults from any task while traffic flows:
//! cut every live connection ([`ProxyHandle::cut_all`]), turn the link into a
//! half-open black hole ([`ProxyHandle::blackhole`]), add latency
//! ([`ProxyHandle::set_latency`]), reset new connections
//! ([`ProxyHandle::refuse_new`]) or make the server deaf
//! ([`ProxyHandle::deaf`]). Faults are plain state changes; they never
//! block, so they can be called from synchronous code too.
//!
//! [`Proxy::start_many`] puts one listen address in front of several server
//! nodes: each new connection goes to the next node, round robin, skipping
//! nodes that refuse the dial, as a load balancer in front of a cluster would.
//!
//! The proxy drops no bytes but in deaf mode: TCP does not lose data
//! silently, so a black hole holds traffic (and stops reading, letting the
//! sender's window fill) rather than discarding it. When the hole is lifted
//! the held bytes flow in order, as after a link that recovered while TCP
//! retransmitted. Deaf mode models what TCP cannot explain, a server (or a
//! balancer in front of it) that takes requests and never acts on them: the
//! client's bytes are read and thrown away while the server's still flow.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Bytes read per chunk; small enough that latency applies per message.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction between reader and delayed writer. Bounded
/// so a slow or blackholed side pushes back on the sender, like a TCP window.
const IN_FLIGHT: usize = 256;
/// How long an orderly cut waits for each peer to answer the FIN before the
/// socket is dropped anyway.
const FIN_DRAIN: Duration = Duration::from_secs(2);

/// How [`ProxyHandle::cut_all`] ends live connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Abortive close on both sides (`SO_LINGER` 0): each peer gets an RST,
    /// so its next read or write fails with `ConnectionReset`.
    Reset,
    /// Orderly close on both sides: each peer reads EOF.
    Fin,
}

/// Snapshot of the proxy's connection counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    /// Connections currently being forwarded (or held by a black hole).
    pub live: usize,
    /// Every TCP connection the listener accepted, refused ones included.
    pub accepted: u64,
    /// Accepted connections that were reset at once because refusal was on.
    pub refused: u64,
    /// Client bytes read and thrown away in deaf mode.
    pub deaf_dropped: u64,
}

/// When new connections are refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Off,
    Until(Instant),
    Always,
}

/// The nodes behind the proxy and where the round robin stands.
struct Upstreams {
    addrs: Vec<SocketAddr>,
    /// Every try, successful or not, takes the next slot: a dead node's turn
    /// passes to the next node, and the live ones share the load evenly.
    next: AtomicUsize,
    /// Connections forwarded to each node.
    forwarded: Vec<AtomicU64>,
}

impl Upstreams {
    fn new(addrs: Vec<SocketAddr>) -> Self {
        let forwarded = addrs.iter().map(|_| AtomicU64::new(0)).collect();
        Upstreams {
            addrs,
            next: AtomicUsize::new(0),
            forwarded,
        }
    }

    /// A connection to the next node that accepts, trying each at most once.
    async fn connect(&self) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no upstream");
        for _ in 0..self.addrs.len() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.addrs.len();
            match TcpStream::connect(self.addrs[i]).await {
                Ok(stream) => {
                    self.forwarded[i].fetch_add(1, Ordering::Relaxed);
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

struct Shared {
    upstreams: Upstreams,
    blackhole: watch::Sender<bool>,
    deaf: AtomicBool,
    latency_nanos: AtomicU64,
    refusal: Mutex<Refusal>,
    cut: broadcast::Sender<Cut>,
    counters: watch::Sender<ProxyCounters>,
}

/// A cloneable handle that switches the proxy's faults and reads its counters.
///
/// Every method takes `&self` and returns at once; hand clones to whichever
/// tasks need to inject faults.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

/// A running proxy. Dropping it (or calling [`Proxy::shutdown`]) stops the
/// listener and resets every live connection.
///
/// Derefs to [`ProxyHandle`], so faults can be called on the proxy directly.
pub struct Proxy {
    handle: ProxyHandle,
    accept_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.handle.addr)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("addr", &self.addr)
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Starts a pass-through proxy on `127.0.0.1:0` forwarding to `upstream`.
    ///
    /// Must be called inside a tokio runtime; point clients at [`ProxyHandle::addr`].
    /// The upstream is dialled once per accepted connection, so it need not be
    /// up yet.
    pub async fn start(upstream: SocketAddr) -> io::Result<Proxy> {
        Self::start_many(vec![upstream]).await
    }

    /// Starts a proxy on `127.0.0.1:0` in front of several server nodes:
    /// each new connection is forwarded to the next node in `upstreams`,
    /// round robin, and a node that refuses the dial is skipped for the
    /// next one. A connection that no node accepts is reset, as one to a
    /// dead server would be. Faults apply to every connection, whichever
    /// node it went to.
    ///
    /// Must be called inside a tokio runtime. Fails with `InvalidInput` for
    /// an empty list.
    pub async fn start_many(upstreams: Vec<SocketAddr>) -> io::Result<Proxy> {
        if upstreams.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a proxy needs at least one upstream",
            ));
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (cut, _) = broadcast::channel(16);
        let shared = Arc::new(Shared {
            upstreams: Upstreams::new(upstreams),
            blackhole: watch::Sender::new(false),
            deaf: AtomicBool::new(false),
            latency_nanos: AtomicU64::new(0),
            refusal: Mutex::new(Refusal::Off),
            cut,
            counters: watch::Sender::new(ProxyCounters::default()),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Proxy {
            handle: ProxyHandle { shared, addr },
            accept_task: Some(accept_task),
        })
    }

    /// A handle that outlives borrows of the proxy; clone it into other tasks.
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// Stops accepting and resets every live connection. Idempotent; `Drop`
    /// does the same.
    pub fn shutdown(&mut self) {
        if let Some(task) = self.accept_task.take() {
            // Reset rather than merely drop: a dropped socket with unread
            // bytes would RST anyway, and tests want one predictable outcome.
            let _ = self.handle.shared.cut.send(Cut::Reset);
            task.abort();
        }
    }
}

impl std::ops::Deref for Proxy {
    type Target = ProxyHandle;

    fn deref(&self) -> &ProxyHandle {
        &self.handle
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl ProxyHandle {
    /// The address clients should connect to (always on 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends every connection live at this moment; connections accepted later
    /// are unaffected. Returns how many connections were told to cut.
    pub fn cut_all(&self, how: Cut) -> usize {
        self.shared.cut.send(how).unwrap_or(0)
    }

    /// Turns the half-open black hole on or off, for live and new connections.
    ///
    /// While on, nothing is forwarded either way and no socket is closed: each
    /// peer sees silence, as behind a dead link. New connections are accepted
    /// but the upstream is not dialled until the hole is lifted.
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.send_replace(on);
    }

    /// Whether the black hole is on.
    pub fn is_blackholed(&self) -> bool {
        *self.shared.blackhole.borrow()
    }

    /// Turns deaf mode on or off, for live and new connections.
    ///
    /// While on, bytes from the client are read and discarded, so its writes
    /// succeed and nothing reaches the server, while the server's bytes
    /// still reach the client: a node that keeps pushing notifications and
    /// answers no request. A connection that was deaf stays deaf until it
    /// closes (the bytes it lost would leave the server reading the middle
    /// of a message); turning the mode off heals new connections only. A new
    /// connection while on still dials the server, which then never hears
    /// from the client.
    pub fn deaf(&self, on: bool) {
        self.shared.deaf.store(on, Ordering::Relaxed);
    }

    /// Whether deaf mode is on.
    pub fn is_deaf(&self) -> bool {
        self.shared.deaf.load(Ordering::Relaxed)
    }

    /// Delays every chunk by `latency` in each direction, preserving order.
    ///
    /// Applies to bytes read after the call; bytes already queued keep the
    /// delay they were stamped with.
    pub fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.shared.latency_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The latency currently applied to new chunks.
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.shared.latency_nanos.load(Ordering::Relaxed))
    }

    /// Accepts and immediately resets new connections: `Some(d)` for `d` from
    /// now, `None` until [`ProxyHandle::set_refusing`]`(false)`.
    ///
    /// The client's connect succeeds (the kernel completes the handshake) and
    /// its first read or write fails with `ConnectionReset`. Live connections
    /// are unaffected.
    pub fn refuse_new(&self, duration: Option<Duration>) {
        let refusal = match duration {
            Some(d) => Refusal::Until(Instant::now() + d),
            None => Refusal::Always,
        };
        *lock(&self.shared.refusal) = refusal;
    }

    /// Refuses new connections until told otherwise (`true`), or stops
    /// refusing at once (`false`).
    pub fn set_refusing(&self, on: bool) {
        *lock(&self.shared.refusal) = if on { Refusal::Always } else { Refusal::Off };
    }

    /// Connections currently forwarded or held.
    pub fn live(&self) -> usize {
        self.shared.counters.borrow().live
    }

    /// TCP connections accepted so far, refused ones included.
    pub fn accepted(&self) -> u64 {
        self.shared.counters.borrow().accepted
    }

    /// Connections reset on arrival because refusal was on.
    pub fn refused(&self) -> u64 {
        self.shared.counters.borrow().refused
    }

    /// The server nodes behind the proxy, in round-robin order.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.shared.upstreams.addrs.clone()
    }

    /// Connections forwarded to each node so far, in the order of
    /// [`upstreams`](Self::upstreams).
    pub fn forwarded(&self) -> Vec<u64> {
        self.shared
            .upstreams
            .forwarded
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// All counters at once.
    pub fn counters(&self) -> ProxyCounters {
        *self.shared.counters.borrow()
    }

    /// Waits until `pred` holds for the counters, without polling.
    ///
    /// Wrap it in a timeout: it waits forever if the condition never holds.
    pub async fn wait_for(&self, mut pred: impl FnMut(&ProxyCounters) -> bool) -> ProxyCounters {
        let mut rx = self.shared.counters.subscribe();
        // The sender lives in `shared`, which `self` keeps alive, so the
        // channel cannot close while we wait.
        if let Ok(c) = rx.wait_for(|c| pred(c)).await {
            return *c;
        }
        let last = *rx.borrow();
        last
    }
}

impl Shared {
    fn refusing_now(&self) -> bool {
        let mut refusal = lock(&self.refusal);
        match *refusal {
            Refusal::Off => false,
            Refusal::Always => true,
            Refusal::Until(t) if Instant::now() < t => true,
            Refusal::Until(_) => {
                *refusal = Refusal::Off;
                false
            }
        }
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked (every
/// critical section here is a single assignment).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Owning the connection tasks here means aborting this loop (on
    // shutdown) drops them, and with them every socket.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = client.set_nodelay(true);
                let refuse = shared.refusing_now();
                shared.counters.send_modify(|c| {
                    c.accepted += 1;
                    if refuse {
                        c.refused += 1;
                    }
                });
                if refuse {
                    let _ = client.set_zero_linger();
                    drop(client);
                    continue;
                }
                // Subscribe before spawning so a cut issued right after this
                // accept reaches the new connection.
                let cut_rx = shared.cut.subscribe();
                shared.counters.send_modify(|c| c.live += 1);
                let guard = LiveGuard(shared.clone());
                conns.spawn(connection(client, shared.clone(), cut_rx, guard));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Decrements `live` however the connection task ends, aborts included.
struct LiveGuard(Arc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0
            .counters
            .send_modify(|c| c.live = c.live.saturating_sub(1));
    }
}

async fn connection(
    mut client: TcpStream,
    shared: Arc<Shared>,
    mut cut_rx: broadcast::Receiver<Cut>,
    _guard: LiveGuard,
) {
    let mut hole = shared.blackhole.subscribe();
    // A new connection behind a black hole must not reach the server either.
    let dialled = tokio::select! {
        cut = cut_rx.recv() => {
            finish(&mut client, None, cut.unwrap_or(Cut::Reset)).await;
            return;
        }
        dialled = async {
            let _ = hole.wait_for(|on| !*on).await;
            shared.upstreams.connect().await
        } => dialled,
    };
    let Ok(mut server) = dialled else {
        // Every upstream down: the client should see what it would see
        // dialling the server directly, a reset.
        let _ = client.set_zero_linger();
        return;
    };
    let _ = server.set_nodelay(true);

    let outcome = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let up = pump(cr, sw, &shared, Direction::Up);
        let down = pump(sr, cw, &shared, Direction::Down);
        tokio::select! {
            cut = cut_rx.recv() => Some(cut.unwrap_or(Cut::Reset)),
            done = async { tokio::try_join!(up, down) } => match done {
                Ok(_) => None,
                // One side failed (usually an RST): the link is dead, so the
                // other side learns it the same abrupt way.
                Err(_) => Some(Cut::Reset),
            },
        }
    };
    if let Some(how) = outcome {
        finish(&mut client, Some(&mut server), how).await;
    }
}

/// Ends a connection the way `how` says.
async fn finish(client: &mut TcpStream, server: Option<&mut TcpStream>, how: Cut) {
    match how {
        Cut::Reset => {
            let _ = client.set_zero_linger();
            if let Some(s) = server {
                let _ = s.set_zero_linger();
            }
            // Dropping the streams (by the caller) sends the RSTs.
        }
        Cut::Fin => {
            // Closing a socket with unread input sends RST instead of FIN, so
            // send our FIN and keep reading until each peer closes too.
            match server {
                Some(s) => {
                    let _ = tokio::join!(fin_and_drain(client), fin_and_drain(s));
                }
                None => fin_and_drain(client).await,
            }
        }
    }
}

async fn fin_and_drain(s: &mut TcpStream) {
    let _ = s.shutdown().await;
    let mut sink = [0u8; CHUNK];
    let _ = tokio::time::timeout(FIN_DRAIN, async {
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Which way a [`pump`] forwards: deaf mode drops only what goes up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

enum Chunk {
    Data(Instant, Vec<u8>),
    Eof,
}

/// Forwards one direction: the reader stamps each chunk with its due time,
/// the writer releases chunks in order once due and no black hole is on.
async fn pump<R, W>(mut from: R, mut to: W, shared: &Shared, dir: Direction) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Chunk>(IN_FLIGHT);
    let mut read_hole = shared.blackhole.subscribe();
    let mut write_hole = shared.blackhole.subscribe();

    let reader = async {
        let mut deaf = false;
        loop {
            // Not reading while blackholed lets the sender's socket buffers
            // fill, as they would with no ACKs coming back.
            let _ = read_hole.wait_for(|on| !*on).await;
            let mut buf = vec![0u8; CHUNK];
            let n = from.read(&mut buf).await?;
            if n == 0 {
                let _ = tx.send(Chunk::Eof).await;
                return Ok::<(), io::Error>(());
            }
            // Sticky: a stream with a hole in it must not reach the server.
            deaf = deaf || (dir == Direction::Up && shared.deaf.load(Ordering::Relaxed));
            if deaf {
                let n = n as u64;
                shared.counters.send_modify(|c| c.deaf_dropped += n);
                continue;
            }
            buf.truncate(n);
            let delay = Duration::from_nanos(shared.latency_nanos.load(Ordering::Relaxed));
            if tx
                .send(Chunk::Data(Instant::now() + delay, buf))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    };
    let writer = async {
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Chunk::Data(due, bytes) => {
                    tokio::time::sleep_until(due).await;
                    let _ = write_hole.wait_for(|on| !*on).await;
                    to.write_all(&bytes).await?;
                }
                Chunk::Eof => {
                    let _ = write_hole.wait_for(|on| !*on).await;
                    // Half-close: pass the FIN on, keep the other way open.
                    to.shutdown().await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long enough that a healthy loopback operation never hits it; only a
    /// safety net for a broken test.
    const NET: Duration = Duration::from_secs(5);

    async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        (addr, task)
    }

    async fn setup() -> (Proxy, JoinHandle<()>) {
        let (echo, task) = echo_server().await;
        (Proxy::start(echo).await.unwrap(), task)
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(NET, s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }

    async fn connected(proxy: &Proxy) -> TcpStream {
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut s, b"hello").await;
        s
    }

    #[tokio::test]
    async fn passes_through_and_counts() {
        let (proxy, _echo) = setup().await;
        let mut a = connected(&proxy).await;
        let _b = connected(&proxy).await;
        assert_eq!(proxy.live(), 2);
        assert_eq!(proxy.accepted(), 2);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        round_trip(&mut a, &big).await;
        drop(a);
        tokio::time::timeout(NET, proxy.wait_for(|c| c.live == 1))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn half_close_is_forwarded() {
        let (proxy, _echo) = setup().await;
        let mut s = connected(&proxy).await;
        s.write_all(b"last").await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(NET, s.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest, b"last");
    }

    #[tokio::test]
    async fn cut_reset_fails_the_clients_read() {
        let (proxy, _echo) = setup().await;
        let mut s = connected(&proxy).await;
        assert_eq!(proxy.cut_all(Cut::Reset), 1);
        let mut buf = [0u8; 8];
        let res = tokio::time::timeout(NET, s.read(&mut buf)).await.unwrap();
        let err = res.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        tokio::time::timeout(NET, proxy.wait_for(|c| c.live == 0))
            .await
            .unwrap();
        // Only live connections are cut: a new one works.
        let _again = connected(&proxy).await;
    }

    #[tokio::test]
    async fn cut_fin_gives_the_client_eof() {
        let (proxy, _echo) = setup().await;
        let mut s = connected(&proxy).await;
        proxy.cut_all(Cut::Fin);
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(NET, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
        drop(s);
        tokio::time::timeout(NET, proxy.wait_for(|c| c.live == 0))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn blackhole_is_silent_and_recovers() {
        let (proxy, _echo) = setup().await;
        let mut s = connected(&proxy).await;
        proxy.blackhole(true);
        s.write_all(b"into the void").await.unwrap();
        let mut buf = [0u8; 13];
        // Nothing comes back, and no FIN or RST either: the read just waits.
        let silent = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
        assert!(silent.is_err(), "blackholed read returned {silent:?}");
        assert_eq!(proxy.live(), 1);

        // A new connection is accepted but gets nothing while the hole lasts.
        let mut late = TcpStream::connect(proxy.addr()).await.unwrap();
        late.write_all(b"late").await.unwrap();
        let mut lbuf = [0u8; 4];
        let silent = tokio::time::timeout(Duration::from_millis(100), late.read(&mut lbuf)).await;
        assert!(silent.is_err());

        proxy.blackhole(false);
        tokio::time::timeout(NET, s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"into the void");
        tokio::time::timeout(NET, late.read_exact(&mut lbuf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&lbuf, b"late");
        round_trip(&mut s, b"still alive").await;
    }

    #[tokio::test]
    async fn latency_delays_each_way_in_order() {
        let (proxy, _echo) = setup().await;
        let mut s = connected(&proxy).await;
        let latency = Duration::from_millis(60);
        proxy.set_latency(latency);
        assert_eq!(proxy.latency(), latency);
        let start = std::time::Instant::now();
        for i in 0..5u8 {
            s.write_all(&[i; 3]).await.unwrap();
        }
        let mut got = [0u8; 15];
        tokio::time::timeout(NET, s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        let rtt = start.elapsed();
        // Once up and once down.
        assert!(rtt >= latency * 2, "rtt {rtt:?}");
        let expect: Vec<u8> = (0..5u8).flat_map(|i| [i; 3]).collect();
        assert_eq!(got.as_slice(), expect.as_slice());

        proxy.set_latency(Duration::ZERO);
        let start = std::time::Instant::now();
        round_trip(&mut s, b"fast").await;
        assert!(start.elapsed() < latency);
    }

    #[tokio::test]
    async fn deaf_passes_the_server_and_drops_the_client() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let proxy = Proxy::start(listener.local_addr().unwrap()).await.unwrap();
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut server, _) = tokio::time::timeout(NET, listener.accept())
            .await
            .unwrap()
            .unwrap();

        proxy.deaf(true);
        assert!(proxy.is_deaf());
        client.write_all(b"lost").await.unwrap();
        tokio::time::timeout(NET, proxy.wait_for(|c| c.deaf_dropped == 4))
            .await
            .unwrap();
        // The server's side still flows.
        server.write_all(b"news").await.unwrap();
        let mut got = [0u8; 4];
        tokio::time::timeout(NET, client.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"news");

        // Healing does not reach a connection that already lost bytes.
        proxy.deaf(false);
        client.write_all(b"more").await.unwrap();
        client.shutdown().await.unwrap();
        let mut heard = Vec::new();
        tokio::time::timeout(NET, server.read_to_end(&mut heard))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(heard, b"", "the server heard {heard:?}");
        assert_eq!(proxy.counters().deaf_dropped, 8);

        // A new connection is healthy.
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut server, _) = tokio::time::timeout(NET, listener.accept())
            .await
            .unwrap()
            .unwrap();
        fresh.write_all(b"heard").await.unwrap();
        let mut got = [0u8; 5];
        tokio::time::timeout(NET, server.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"heard");
    }

    async fn assert_reset_on_arrival(addr: SocketAddr) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let res = tokio::time::timeout(NET, s.read(&mut buf)).await.unwrap();
        match res {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            Ok(n) => panic!("expected reset, read {n} bytes"),
        }
    }

    #[tokio::test]
    async fn refuse_resets_new_connections_only() {
        let (proxy, _echo) = setup().await;
        let mut old = connected(&proxy).await;
        proxy.set_refusing(true);
        assert_reset_on_arrival(proxy.addr()).await;
        assert_reset_on_arrival(proxy.addr()).await;
        assert_eq!(proxy.refused(), 2);
        assert_eq!(proxy.accepted(), 3);
        round_trip(&mut old, b"unaffected").await;
        proxy.set_refusing(false);
        let _new = connected(&proxy).await;
    }

    #[tokio::test]
    async fn refuse_for_a_while_then_accept() {
        let (proxy, _echo) = setup().await;
        let window = Duration::from_millis(150);
        let start = std::time::Instant::now();
        proxy.refuse_new(Some(window));
        assert_reset_on_arrival(proxy.addr()).await;
        // The window is the thing under test, so waiting it out is the point.
        tokio::time::sleep_until(Instant::from_std(start + window)).await;
        let _s = connected(&proxy).await;
        assert_eq!(proxy.refused(), 1);
    }

    #[tokio::test]
    async fn shutdown_stops_everything() {
        let (mut proxy, _echo) = setup().await;
        let mut s = connected(&proxy).await;
        let handle = proxy.handle();
        proxy.shutdown();
        let mut buf = [0u8; 1];
        let res = tokio::time::timeout(NET, s.read(&mut buf)).await.unwrap();
        assert!(matches!(res, Ok(0) | Err(_)), "got {res:?}");
        tokio::time::timeout(NET, handle.wait_for(|c| c.live == 0))
            .await
            .unwrap();
        assert!(TcpStream::connect(handle.addr()).await.is_err());
    }

    #[tokio::test]
    async fn upstream_down_resets_the_client() {
        // Bind then drop to get a port nothing listens on.
        let dead = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let proxy = Proxy::start(dead).await.unwrap();
        assert_reset_on_arrival(proxy.addr()).await;
    }

    /// A node that greets every connection with its tag, then echoes.
    async fn tagged_server(tag: u8, port: u16) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    if s.write_all(&[tag]).await.is_err() {
                        return;
                    }
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        (addr, task)
    }

    /// Connects through the proxy; returns the tag of the node reached.
    async fn node_reached(proxy: &Proxy) -> (u8, TcpStream) {
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut tag = [0u8; 1];
        tokio::time::timeout(NET, s.read_exact(&mut tag))
            .await
            .unwrap()
            .unwrap();
        round_trip(&mut s, b"through").await;
        (tag[0], s)
    }

    async fn dead_addr() -> SocketAddr {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[tokio::test]
    async fn several_upstreams_take_turns() {
        let mut nodes = Vec::new();
        for tag in 0..3 {
            nodes.push(tagged_server(tag, 0).await);
        }
        let proxy = Proxy::start_many(nodes.iter().map(|(a, _)| *a).collect())
            .await
            .unwrap();
        let mut reached = Vec::new();
        let mut keep = Vec::new();
        for _ in 0..6 {
            let (tag, s) = node_reached(&proxy).await;
            reached.push(tag);
            keep.push(s);
        }
        assert_eq!(reached, [0, 1, 2, 0, 1, 2]);
        assert_eq!(proxy.forwarded(), [2, 2, 2]);
        assert_eq!(proxy.live(), 6);
        // One fault switch covers every node's connections.
        assert_eq!(proxy.cut_all(Cut::Reset), 6);
    }

    #[tokio::test]
    async fn a_dead_upstream_is_skipped_and_used_again_once_back() {
        let (a, _a) = tagged_server(0, 0).await;
        let dead = dead_addr().await;
        let (c, _c) = tagged_server(2, 0).await;
        let proxy = Proxy::start_many(vec![a, dead, c]).await.unwrap();
        let mut reached = Vec::new();
        for _ in 0..4 {
            reached.push(node_reached(&proxy).await.0);
        }
        assert_eq!(reached, [0, 2, 0, 2], "the live nodes share the load");
        assert_eq!(proxy.forwarded(), [2, 0, 2]);

        // The dead node comes back at its address and gets its turn again.
        let (_, _b) = tagged_server(1, dead.port()).await;
        let mut reached = Vec::new();
        for _ in 0..3 {
            reached.push(node_reached(&proxy).await.0);
        }
        reached.sort_unstable();
        assert_eq!(reached, [0, 1, 2]);
    }

    #[tokio::test]
    async fn a_node_that_dies_is_skipped() {
        let (a, a_task) = tagged_server(0, 0).await;
        let (b, _b) = tagged_server(1, 0).await;
        let proxy = Proxy::start_many(vec![a, b]).await.unwrap();
        assert_eq!(node_reached(&proxy).await.0, 0);
        a_task.abort();
        let _ = a_task.await;
        for _ in 0..3 {
            assert_eq!(node_reached(&proxy).await.0, 1);
        }
    }

    #[tokio::test]
    async fn every_upstream_dead_resets_the_client() {
        let proxy = Proxy::start_many(vec![dead_addr().await, dead_addr().await])
            .await
            .unwrap();
        assert_reset_on_arrival(proxy.addr()).await;
        assert_eq!(proxy.forwarded(), [0, 0]);
    }

    #[tokio::test]
    async fn no_upstream_is_an_error() {
        let e = Proxy::start_many(Vec::new()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
