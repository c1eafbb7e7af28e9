//! The driver task: one per connection, carrying out the session's actions.
//!
//! This module is its run loop; the outbox and its batched flush are in
//! `writer`, the close linger in `linger`.

mod linger;
#[cfg(test)]
mod memory;
mod writer;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::future::poll_fn;
use futures_util::StreamExt;
use redial_core::{
    Action, AuthToken, DialFailure, Event, SendKind, SizeLimit, State, TokenFailure,
};
use tracing::{debug, info, warn, Instrument, Span};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

use crate::convert::{
    close_frame_from_ws, close_frame_to_ws, dial_failure, frame_to_message, message_to_frame,
};
use crate::handle::{Core, Shared};
use crate::observe::Watch;
use crate::request::RequestTemplate;
use crate::token::TokenProvider;
use crate::trust::TlsTrust;
use crate::{BoxFuture, Runtime};
use linger::Linger;
use writer::{Writer, Wrote};

/// Socket messages handled in a row before the other inputs are looked at
/// first, so a flooding server cannot starve the handles or the timers.
const MAX_SOCKET_STREAK: u32 = 32;
/// Pokes (a handle called into the session) taken one after the other,
/// before anything is written, when they are already waiting: their frames
/// go out with one flush.
const MAX_POKE_BATCH: u32 = 32;
/// Pokes handled in a row before the dial, the token fetch and the timer
/// are looked at first, so a flood of sends cannot starve them.
const MAX_POKE_STREAK: u32 = 64;

/// One connection's task. [`Builder::connect`](crate::Builder::connect)
/// spawns it; [`Builder::start`](crate::Builder::start) hands it over to be
/// run on an executor of the caller's choosing.
pub struct Driver<R: Runtime> {
    inner: Inner<R>,
    span: Span,
}

impl<R: Runtime> fmt::Debug for Driver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("state", &self.inner.shared.state())
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Driver<R> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        runtime: R,
        templates: Vec<RequestTemplate>,
        provider: Option<Arc<dyn TokenProvider>>,
        events: async_channel::Sender<Event>,
        shared: Arc<Shared>,
        close_timeout: Duration,
        websocket: WebSocketConfig,
        trust: TlsTrust,
        span: Span,
        protocol: &'static str,
        label: Option<&str>,
    ) -> Self {
        let watch = Watch::new(Arc::clone(&shared), span.clone(), protocol, label);
        Driver {
            inner: Inner {
                watch,
                rt: runtime,
                templates,
                provider,
                events,
                events_open: true,
                shared,
                close_timeout,
                websocket,
                trust,
                token_fut: None,
                dial_fut: None,
                socket: None,
                read_wake: None,
                writer: Writer::default(),
                actions: VecDeque::new(),
                pending_events: VecDeque::new(),
                inbox: Vec::new(),
                published: None,
                socket_full: false,
                linger: None,
                timer: None,
                socket_streak: 0,
                poke_streak: 0,
                poke_batch: 0,
            },
            span,
        }
    }

    /// Runs the connection until the session is closed and the last event
    /// is delivered.
    pub fn run(self) -> impl Future<Output = ()> + Send + 'static {
        let Driver { mut inner, span } = self;
        async move { inner.run().await }.instrument(span)
    }
}

struct Inner<R: Runtime> {
    rt: R,
    /// Spans, counters and metrics.
    watch: Watch,
    /// One per endpoint, in the builder's order (never empty).
    templates: Vec<RequestTemplate>,
    provider: Option<Arc<dyn TokenProvider>>,
    events: async_channel::Sender<Event>,
    events_open: bool,
    shared: Arc<Shared>,
    close_timeout: Duration,
    websocket: WebSocketConfig,
    trust: TlsTrust,

    token_fut: Option<BoxFuture<Result<AuthToken, TokenFailure>>>,
    dial_fut: Option<BoxFuture<Result<R::Socket, tungstenite::Error>>>,
    socket: Option<R::Socket>,
    /// The waker the socket's read side holds since it last answered
    /// `Pending` (see [`Inner::poll_socket`]), kept with the `Waker` made
    /// from it so a poll does not make one.
    read_wake: Option<(Arc<ReadWake>, Waker)>,
    /// Frames the session asked for that the socket has not taken yet.
    writer: Writer,
    /// Actions and events taken from the session under one lock, carried
    /// out and delivered after it.
    actions: VecDeque<Action>,
    pending_events: VecDeque<Event>,
    /// Messages the socket already held, taken one after the other and
    /// handed to the session under one lock (see [`Inner::take_buffered`]);
    /// empty between turns, at most [`MAX_SOCKET_STREAK`].
    inbox: Vec<Message>,
    /// The state last told to the handles.
    published: Option<State>,
    /// The socket answered `Pending` with frames still in the outbox: it
    /// is not taking frames, so new messages wait in the handles.
    socket_full: bool,
    /// A socket being closed: its close frame going out, bounded in time.
    linger: Option<Linger<R::Socket, R::Sleep>>,
    /// The session's single timer: its deadline and the sleep for it.
    timer: Option<(Instant, Pin<Box<R::Sleep>>)>,
    socket_streak: u32,
    /// Pokes handled since the dial, token fetch and timer were polled.
    poke_streak: u32,
    /// Pokes taken in the current batch (0: not in a batch).
    poke_batch: u32,
}

/// The waker handed to the socket's read side: it records that the socket
/// woke the task, then wakes the task.
///
/// tungstenite zero-fills its whole read buffer (16 KiB by redial's
/// default, 128 KiB by tungstenite's) on every read attempt, including the ones that end in `WouldBlock`, so a
/// poll of an idle socket is not free. With this flag the driver polls the
/// socket only when it may have something: after it woke the task, after a
/// message (more may be buffered), or when the task's waker changed.
struct ReadWake {
    woken: AtomicBool,
    task: Waker,
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

enum Input<S> {
    Message(Message),
    SocketEnded,
    SocketFailed(tungstenite::Error),
    /// The outbox emptied.
    Drained,
    /// A handle called into the session (see `Core::take_poke`).
    Poked,
    Dialed(Result<S, tungstenite::Error>),
    Token(Result<AuthToken, TokenFailure>),
    Timeout,
}

impl<R: Runtime> Drop for Inner<R> {
    fn drop(&mut self) {
        // However the task ends (even dropped with its runtime), handles
        // waiting in `close` or `send` must not wait forever, and later
        // sends are answered `Closed`.
        let mut core = self.shared.core();
        core.driver_gone = true;
        core.abandon_calls();
        drop(core);
        self.shared.set_state(State::Closed);
    }
}

impl<R: Runtime> Inner<R> {
    async fn run(&mut self) {
        loop {
            self.drain().await;
            let (state, deadline) = self.publish();
            if state == State::Closed {
                if self.actions.is_empty() && self.pending_events.is_empty() {
                    break;
                }
                // A handle closed the session after `drain` last looked:
                // its last words (`Event::Closed`) still go out.
                continue;
            }
            self.arm_timer(deadline);
            let input = poll_fn(|cx| self.poll_input(cx)).await;
            match input {
                Input::Message(message) if !matches!(message, Message::Close(_)) => {
                    self.inbox.push(message);
                    let next = poll_fn(|cx| Poll::Ready(self.take_buffered(cx))).await;
                    if let Some(input) = next {
                        self.handle(input);
                    }
                }
                input => self.handle(input),
            }
        }
        if let Some(socket) = self.socket.take() {
            let close = redial_core::CloseFrame::new(1000, "closed");
            self.close_socket(socket, Message::Close(Some(close_frame_to_ws(&close))));
        }
        // Let a closing socket say goodbye (bounded by `close_timeout`).
        poll_fn(|cx| {
            self.poll_linger(cx);
            match self.linger {
                None => Poll::Ready(()),
                Some(_) => Poll::Pending,
            }
        })
        .await;
        debug!("driver finished");
    }

    /// Carries out every action and delivers every event, until the
    /// session has nothing more to say.
    async fn drain(&mut self) {
        loop {
            // Taken under one lock, never held while carrying out or across
            // the `await`.
            let state = {
                let mut core = self.shared.core();
                take_output(&mut core, &mut self.actions, &mut self.pending_events);
                core.session.state()
            };
            if self.actions.is_empty() && self.pending_events.is_empty() {
                return;
            }
            // Only a frame to write leaves the session as it was; anything
            // else may have made it say more.
            let mut again = false;
            while let Some(action) = self.actions.pop_front() {
                again |= !matches!(action, Action::Send(_, _));
                self.carry_out(action);
            }
            // Published before the events go out, so `state()` never lags
            // what the consumer has seen.
            self.set_state(state);
            let now = self.rt.now();
            while let Some(event) = self.pending_events.pop_front() {
                if !matches!(event, Event::Message { .. }) {
                    self.watch.span().in_scope(|| trace_event(&event));
                }
                self.watch.event(now, &event);
                again |= self.deliver(event).await;
            }
            if !again {
                return;
            }
        }
    }

    /// Puts `event` in the events channel, waiting for room. True when
    /// a handle called into the session meanwhile (it may then have more
    /// to say).
    ///
    /// While it waits the driver still takes the handles' pokes, so a
    /// `close` (or the last handle dropped) from an application that
    /// stopped reading events is seen: the session's state is published, and the events wait for a consumer that reads on or
    /// drops the stream. Nothing else (socket, timers) is looked at: a
    /// consumer that does not keep up holds inbound traffic back.
    async fn deliver(&mut self, event: Event) -> bool {
        if !self.events_open {
            return false;
        }
        let event = match self.events.try_send(event) {
            Ok(()) => return false,
            Err(async_channel::TrySendError::Closed(_)) => {
                // Nobody reads events any more; the connection goes on.
                self.events_open = false;
                return false;
            }
            Err(async_channel::TrySendError::Full(event)) => event,
        };
        let events = self.events.clone();
        let mut send = std::pin::pin!(events.send(event));
        let mut poked = false;
        loop {
            let step = poll_fn(|cx| match send.as_mut().poll(cx) {
                Poll::Ready(sent) => Poll::Ready(Err(sent.is_ok())),
                Poll::Pending => self.poll_poke(cx).map(Ok),
            })
            .await;
            match step {
                Ok(input) => {
                    poked = true;
                    self.handle(input);
                    let state = self.shared.core().session.state();
                    self.set_state(state);
                }
                Err(sent) => {
                    self.events_open = sent;
                    return poked;
                }
            }
        }
    }

    /// Tells the handles the state; the lock only when it changed.
    fn set_state(&mut self, state: State) {
        if self.published != Some(state) {
            self.published = Some(state);
            self.shared.set_state(state);
        }
    }

    /// Tells the handles the state, and wakes refused senders when room
    /// may have appeared.
    /// Also answers the session's state and its timer's deadline.
    fn publish(&mut self) -> (State, Option<Instant>) {
        let mut core = self.shared.core();
        // `drain` took every action: what was handed over is in the outbox.
        let handed = std::mem::take(&mut core.handed);
        if std::mem::take(&mut core.subscriptions_changed) {
            self.watch.subscriptions_changed();
        }
        let state = core.session.state();
        if state == State::Closed {
            // Handles call into the session without the driver: what it said
            // since `drain` looked is taken under the same lock as the state,
            // so the run loop cannot end before saying it.
            take_output(&mut core, &mut self.actions, &mut self.pending_events);
        }
        let deadline = core.session.poll_timeout();
        let queued = core.session.queued();
        let replayed = core.session.replayed();
        self.watch.turn(handed, queued, replayed, || {
            core.session.subscriptions().count()
        });
        let mut room = false;
        if let Some((backlog, before)) = core.refused {
            room = self.writer.is_empty() && (backlog || queued < before);
            if room || state == State::Closed {
                core.refused = None;
                room = true;
            }
        }
        drop(core);
        self.set_state(state);
        if room {
            self.shared.space.notify(usize::MAX);
        }
        (state, deadline)
    }

    fn arm_timer(&mut self, deadline: Option<Instant>) {
        match deadline {
            None => self.timer = None,
            Some(deadline) => {
                if self.timer.as_ref().map(|(d, _)| *d) != Some(deadline) {
                    self.timer = Some((deadline, Box::pin(self.rt.sleep_until(deadline))));
                }
            }
        }
    }

    fn carry_out(&mut self, action: Action) {
        // The clock is read only where the session is told something: not
        // for a frame to write.
        match action {
            Action::FetchToken => {
                // Cannot happen without a provider: `Builder::start` turns
                // token fetching on exactly when it has one, and refuses a
                // config that asks for tokens without one. Nothing to decide
                // here; were it to happen, the connect timeout would end
                // the attempt.
                debug_assert!(self.provider.is_some(), "FetchToken without a provider");
                if let Some(provider) = &self.provider {
                    debug!("fetching token");
                    // A fetch still running from an earlier attempt is
                    // abandoned: only the newest answer counts.
                    self.token_fut = Some(provider.token());
                }
            }
            Action::Dial {
                attempt,
                endpoint,
                token,
            } => {
                self.token_fut = None;
                let request = match self.templates.get(endpoint) {
                    Some(t) => t.request(token.as_ref()).map(|r| (r, t.endpoint())),
                    None => Err(format!("no endpoint {endpoint}")),
                };
                match request {
                    Ok((request, url)) => {
                        self.watch.dialing(self.rt.now(), attempt, endpoint);
                        let _in = self.watch.span().enter();
                        info!(attempt, endpoint, %url, token = token.is_some(), "dialing");
                        self.dial_fut =
                            Some(self.rt.dial(request, self.websocket, self.trust.clone()));
                    }
                    Err(why) => {
                        warn!(attempt, %why, "cannot build the upgrade request");
                        self.shared
                            .core()
                            .session
                            .handle_dial_failed(self.rt.now(), DialFailure::Io(why));
                    }
                }
            }
            Action::Send(frame, kind) => match (frame_to_message(frame), &self.socket) {
                (Some(message), Some(_)) => self.writer.push(message, kind),
                _ => debug!("frame not sent: no open socket"),
            },
            Action::Close(frame) => {
                if self.dial_fut.take().is_some() {
                    debug!("dial abandoned");
                }
                let state = self.shared.core().session.state();
                if !matches!(state, State::Closing | State::Closed) {
                    // The session gave up on this socket and reconnects:
                    // what it has not taken yet goes out on the next one.
                    self.hand_back_unsent(self.rt.now());
                }
                if let Some(socket) = self.socket.take() {
                    info!(code = frame.code, reason = %frame.reason, "closing the socket");
                    let close = Message::Close(Some(close_frame_to_ws(&frame)));
                    self.close_socket(socket, close);
                }
            }
            other => debug!(?other, "unknown action ignored"),
        }
    }

    fn handle(&mut self, input: Input<R::Socket>) {
        let now = self.rt.now();
        match input {
            Input::Message(Message::Close(frame)) => {
                let close = close_frame_from_ws(frame);
                info!(
                    code = close.as_ref().map(|c| c.code),
                    reason = close.as_ref().map(|c| c.reason.as_str()),
                    "server closed the connection"
                );
                if let Some(socket) = self.socket.take() {
                    // tungstenite has queued the close reply; flush it.
                    self.start_linger(socket, VecDeque::new());
                }
                self.hand_back_unsent(now);
                self.shared
                    .core()
                    .session
                    .handle_transport_closed(now, close);
            }
            Input::Message(message) => {
                self.inbox.push(message);
                self.hand_over_inbox(now);
            }
            Input::SocketEnded => {
                info!("connection lost");
                self.drop_socket(now);
                self.shared
                    .core()
                    .session
                    .handle_transport_closed(now, None);
            }
            Input::SocketFailed(tungstenite::Error::Capacity(
                tungstenite::error::CapacityError::MessageTooLong { size, max_size },
            )) => {
                // Which limit: tungstenite reports both the same way.
                let limit = if Some(max_size) == self.websocket.max_message_size {
                    SizeLimit::Message
                } else {
                    SizeLimit::Frame
                };
                warn!(
                    limit = limit.name(),
                    size, max_size, "inbound message over the size limit"
                );
                // The session asks to close with 1009; that takes the socket.
                self.shared.core().session.handle_message_too_large(
                    now,
                    limit,
                    u64::try_from(size).unwrap_or(u64::MAX),
                    u64::try_from(max_size).unwrap_or(u64::MAX),
                );
            }
            Input::SocketFailed(error) => {
                info!(%error, "connection failed");
                self.drop_socket(now);
                self.shared
                    .core()
                    .session
                    .handle_transport_closed(now, None);
            }
            Input::Drained => {}
            Input::Poked => {}
            Input::Dialed(Ok(socket)) => {
                info!("connected");
                self.socket = Some(socket);
                self.read_wake = None;
                // Nothing is left from an earlier socket: every way one ends
                // takes its outbox.
                drop(self.take_unsent());
                self.shared.core().session.handle_dial_ok(now);
            }
            Input::Dialed(Err(error)) => {
                let failure = dial_failure(&error);
                warn!(reason = %failure.describe(), "dial failed");
                self.shared.core().session.handle_dial_failed(now, failure);
            }
            Input::Token(Ok(token)) => {
                debug!("token fetched");
                self.shared.core().session.handle_token(now, token);
            }
            Input::Token(Err(failure)) => {
                warn!(
                    unauthorized = failure.unauthorized,
                    message = %failure.message,
                    "token provider failed"
                );
                self.shared.core().session.handle_token_failed(now, failure);
            }
            Input::Timeout => self.shared.core().session.handle_timeout(now),
        }
    }

    /// Hands the message in the inbox and those the socket already holds
    /// after it
    /// (up to the socket streak, [`MAX_SOCKET_STREAK`]) to the session under
    /// one lock, so a burst of notifications costs one lock, one drain of
    /// the session's output and one wake of the events' reader, not one
    /// each. Returns what ended the run when it was not a message (a close
    /// frame, the socket's end or failure), to be handled next, in order.
    fn take_buffered(&mut self, cx: &mut Context<'_>) -> Option<Input<R::Socket>> {
        let mut next = None;
        while self.socket_streak < MAX_SOCKET_STREAK {
            match self.poll_socket(cx) {
                Poll::Ready(Input::Message(message)) if !matches!(message, Message::Close(_)) => {
                    self.socket_streak += 1;
                    self.inbox.push(message);
                }
                Poll::Ready(input) => {
                    next = Some(input);
                    break;
                }
                Poll::Pending => break,
            }
        }
        self.hand_over_inbox(self.rt.now());
        next
    }

    /// Gives the session the messages in the inbox, in order, under one
    /// lock.
    fn hand_over_inbox(&mut self, now: Instant) {
        if self.inbox.iter().any(|m| matches!(m, Message::Ping(_))) {
            // tungstenite queued the pongs; the next write flushes them.
            self.writer.flush_needed();
        }
        let mut core = self.shared.core();
        for message in self.inbox.drain(..) {
            if let Some(frame) = message_to_frame(message) {
                core.session.handle_frame(now, frame);
            }
        }
    }

    fn drop_socket(&mut self, now: Instant) {
        self.socket = None;
        self.hand_back_unsent(now);
    }

    /// Gives the frames the socket never took back to the session, which
    /// decides what becomes of them (Raw messages are queued again, in
    /// order). The driver decides no loss.
    fn hand_back_unsent(&mut self, now: Instant) {
        let unsent = self.take_unsent();
        if unsent.is_empty() {
            return;
        }
        let frames = unsent.len();
        let requeued = self.shared.core().session.handle_unsent(
            now,
            unsent
                .into_iter()
                .filter_map(|(message, kind)| Some((message_to_frame(message)?, kind))),
        );
        debug!(
            frames,
            requeued, "frames not written handed back to the session"
        );
    }

    /// Empties the outbox: the frames the socket never took, each with
    /// its kind.
    fn take_unsent(&mut self) -> VecDeque<(Message, SendKind)> {
        self.set_socket_full(false);
        self.writer.take_unsent()
    }

    /// Tells the handles whether the socket takes frames (locks only when
    /// that changed).
    fn set_socket_full(&mut self, full: bool) {
        if self.socket_full != full {
            self.socket_full = full;
            self.shared.core().socket_full = full;
        }
    }

    /// Closes the socket we chose to close: the frames the session already
    /// handed over (for Raw they have left its queue; a batch of sends
    /// followed by a close leaves some here) go out first, then `close`.
    fn close_socket(&mut self, socket: R::Socket, close: Message) {
        let mut out: VecDeque<Message> = self
            .take_unsent()
            .into_iter()
            .map(|(message, _)| message)
            .collect();
        out.push_back(close);
        self.start_linger(socket, out);
    }

    fn start_linger(&mut self, socket: R::Socket, out: VecDeque<Message>) {
        let deadline = self.rt.now() + self.close_timeout;
        self.linger = Some(Linger::new(socket, out, self.rt.sleep_until(deadline)));
    }

    /// Waits for the first input, in this order: the socket's messages
    /// (proof of life before any deadline is judged), the handles'
    /// pokes, the dial, the token fetch, the timer.
    ///
    /// Pokes that follow a poke and are already waiting are taken
    /// first (up to [`MAX_POKE_BATCH`]), before anything is written, so
    /// a burst of sends goes out with one flush.
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<Input<R::Socket>> {
        let mut input = self.poll_inputs(cx);
        if input.is_pending() && self.writer.stop_reading() {
            // Nothing more to read: the answers to what was read go out
            // now, with one flush (see `Writer::poll_write`).
            if let Some(written) = self.poll_write(cx) {
                input = Poll::Ready(written);
            }
        }
        if input.is_pending() {
            // The task yields: the other tasks run, then the self-wake of
            // a held flush (`Writer::poll_write`) brings it back to flush
            // what they did not add to.
            self.writer.poll_ended();
        }
        input
    }

    fn poll_inputs(&mut self, cx: &mut Context<'_>) -> Poll<Input<R::Socket>> {
        if self.poke_batch > 0 {
            if self.poke_batch < MAX_POKE_BATCH {
                if let Poll::Ready(input) = self.poll_poke(cx) {
                    if matches!(input, Input::Poked) {
                        self.poke_batch += 1;
                        self.poke_streak += 1;
                        self.writer.took_poke();
                    }
                    return Poll::Ready(input);
                }
            }
            self.poke_batch = 0;
        }
        if let Some(input) = self.poll_write(cx) {
            return Poll::Ready(input);
        }
        self.poll_linger(cx);
        let socket_first = self.socket_streak < MAX_SOCKET_STREAK;
        if socket_first {
            if let Poll::Ready(input) = self.poll_socket(cx) {
                self.socket_streak += 1;
                return Poll::Ready(input);
            }
        }
        self.socket_streak = 0;
        // A streak ends the hold on answers too (`Writer::took_message`):
        // under a stream that never runs dry they still go out once per
        // streak, so a pong or a send is not held behind the stream.
        if self.writer.stop_reading() {
            if let Some(input) = self.poll_write(cx) {
                return Poll::Ready(input);
            }
        }
        if let Poll::Ready(input) = self.poll_others(cx) {
            return Poll::Ready(input);
        }
        if !socket_first {
            return self.poll_socket(cx);
        }
        Poll::Pending
    }

    /// Moves frames from the outbox into the socket and flushes (see
    /// [`Writer::poll_write`]). Returns an input when the socket failed or
    /// the outbox just emptied.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Option<Input<R::Socket>> {
        let socket = self.socket.as_mut()?;
        match self.writer.poll_write(socket, cx) {
            Wrote::Failed(e) => Some(Input::SocketFailed(e)),
            Wrote::Done {
                drained,
                full,
                batch,
            } => {
                self.set_socket_full(full);
                if batch {
                    self.poke_batch = 1;
                }
                drained.then_some(Input::Drained)
            }
        }
    }

    fn poll_socket(&mut self, cx: &mut Context<'_>) -> Poll<Input<R::Socket>> {
        let Some(socket) = self.socket.as_mut() else {
            return Poll::Pending;
        };
        match &self.read_wake {
            Some((wake, _)) if wake.task.will_wake(cx.waker()) => {
                // Still registered with the socket from its last `Pending`,
                // and the socket has not woken us since: nothing to read.
                if !wake.woken.swap(false, Ordering::AcqRel) {
                    return Poll::Pending;
                }
            }
            _ => {
                let wake = Arc::new(ReadWake {
                    woken: AtomicBool::new(false),
                    task: cx.waker().clone(),
                });
                let waker = Waker::from(Arc::clone(&wake));
                self.read_wake = Some((wake, waker));
            }
        }
        let Some((wake, waker)) = &self.read_wake else {
            return Poll::Pending;
        };
        let polled = socket.poll_next_unpin(&mut Context::from_waker(waker));
        if polled.is_ready() {
            // More may be buffered: poll again next time.
            wake.woken.store(true, Ordering::Release);
            self.writer.took_message();
        }
        polled.map(|next| match next {
            Some(Ok(message)) => Input::Message(message),
            Some(Err(e)) => Input::SocketFailed(e),
            None => Input::SocketEnded,
        })
    }

    /// A handle's poke: it called into the session, which may have
    /// something to say.
    fn poll_poke(&mut self, cx: &mut Context<'_>) -> Poll<Input<R::Socket>> {
        if self.shared.core().take_poke(cx.waker()) {
            return Poll::Ready(Input::Poked);
        }
        Poll::Pending
    }

    /// The handles' pokes first, unless they have had
    /// [`MAX_POKE_STREAK`] turns in a row; then the close flag, the
    /// dial, the token fetch and the timer.
    fn poll_others(&mut self, cx: &mut Context<'_>) -> Poll<Input<R::Socket>> {
        let pokes_first = self.poke_streak < MAX_POKE_STREAK;
        if pokes_first {
            if let Poll::Ready(input) = self.poll_poke(cx) {
                self.took(&input);
                return Poll::Ready(input);
            }
        }
        self.poke_streak = 0;
        if let Some(dial) = self.dial_fut.as_mut() {
            if let Poll::Ready(result) = dial.as_mut().poll(cx) {
                self.dial_fut = None;
                return Poll::Ready(Input::Dialed(result));
            }
        }
        if let Some(fetch) = self.token_fut.as_mut() {
            if let Poll::Ready(result) = fetch.as_mut().poll(cx) {
                self.token_fut = None;
                return Poll::Ready(Input::Token(result));
            }
        }
        if let Some((_, sleep)) = self.timer.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                // Always re-armed from the session afterwards, so a sleep
                // that completed is never polled again.
                self.timer = None;
                return Poll::Ready(Input::Timeout);
            }
        }
        if !pokes_first {
            if let Poll::Ready(input) = self.poll_poke(cx) {
                self.took(&input);
                return Poll::Ready(input);
            }
        }
        Poll::Pending
    }

    /// Counts a poke taken by `poll_others`; it starts a batch.
    fn took(&mut self, input: &Input<R::Socket>) {
        if matches!(input, Input::Poked) {
            self.poke_streak += 1;
            self.poke_batch = 1;
            self.writer.took_poke();
        }
    }

    /// Drives a closing socket (see [`Linger`]); dropped when done.
    fn poll_linger(&mut self, cx: &mut Context<'_>) {
        if let Some(linger) = self.linger.as_mut() {
            if linger.poll(cx).is_ready() {
                self.linger = None;
            }
        }
    }
}

/// Logs the session's decisions. Never payloads, never tokens.
/// Moves what the session has to say (its actions, and its events as
/// routed: a call's end goes to its caller) into the driver's queues.
fn take_output(core: &mut Core, actions: &mut VecDeque<Action>, events: &mut VecDeque<Event>) {
    while let Some(action) = core.session.poll_action() {
        actions.push_back(action);
    }
    while let Some(event) = core.session.poll_event() {
        if let Some(event) = core.route(event) {
            events.push_back(event);
        }
    }
}

fn trace_event(event: &Event) {
    match event {
        Event::StateChanged { from, to } => debug!(%from, %to, "state changed"),
        Event::ReconnectScheduled { attempt, delay } => info!(
            attempt,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "reconnect scheduled"
        ),
        Event::DialFailed {
            attempt,
            endpoint,
            status,
            ..
        } => debug!(attempt, endpoint, status, "dial failure reported"),
        Event::Disconnected {
            code,
            reason,
            will_reconnect,
        } => info!(code, %reason, will_reconnect, "disconnected"),
        Event::Connected {
            reconnect,
            resumed,
            endpoint,
            ..
        } => info!(reconnect, resumed, endpoint, "session connected"),
        Event::Stuck { for_, attempts } => warn!(
            for_ms = u64::try_from(for_.as_millis()).unwrap_or(u64::MAX),
            attempts, "still reconnecting"
        ),
        Event::TokenProviderFailing { consecutive, .. } => {
            warn!(consecutive, "token provider keeps failing")
        }
        Event::GoingAway {
            retry_after,
            window,
        } => info!(
            retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            "server going away"
        ),
        Event::ProtocolError { error } => warn!(%error, "protocol error"),
        Event::Closed {
            reason,
            code,
            undelivered,
            ..
        } => info!(reason = reason.name(), code, undelivered, "session closed"),
        _ => {}
    }
}
