//! The one loop every open WebSocket runs, route sessions and Channels sockets alike: it writes
//! the client's outbound queue in batches, reads its frames, keeps the connection alive, and
//! ends it with the right close frame, whoever asks (the client, the front door's handler, a
//! producer that found the queue full, a timer, or shutdown).
//!
//! What a frame *means* is the front door's business: the driver hands every text and binary
//! frame to a [`Handler`]. The driver is generic over the socket, so a handler can be driven
//! over in-memory channels in tests as well as over a real connection.

use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::{Error as WsError, Message};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::error::{Close, close_for_read_error};
use crate::metrics::CloseReason;
use crate::ws::queue::Control;

/// Most frames written before one flush.
const WRITE_BATCH: usize = 64;
/// How long to wait for the client's side of a close handshake.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A WebSocket as the driver needs it: frames in, frames out.
pub trait Socket:
    Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send
{
}

impl<T> Socket for T where
    T: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send
{
}

/// A data frame from the client.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// What a front door does with its clients. Returning `Some(close)` ends the connection with
/// that close frame.
pub trait Handler: Send {
    /// A text or binary frame from the client.
    fn on_data(&mut self, data: Data<'_>) -> impl Future<Output = Option<Close>> + Send;

    /// When [`Handler::on_deadline`] is next due (a token's expiry), if ever.
    fn deadline(&self) -> Option<Instant>;

    /// The deadline passed.
    fn on_deadline(&mut self) -> impl Future<Output = Option<Close>> + Send;
}

/// The timers of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long one write may take before the client is considered stuck.
    pub write_timeout: Duration,
    /// A client that sends nothing for this long is closed with 1001.
    pub idle_timeout: Duration,
    /// Ping this often; `None` where clients send heartbeats of their own (Channels).
    pub ping_interval: Option<Duration>,
}

/// Runs one connection until it ends; returns why it ended. `control` is the connection's
/// queue and kill switch; the caller closes it afterwards.
///
/// Every open connection holds this future, so what it keeps is kept small: the timing by
/// reference, one timer for idleness and pings, a deadline timer only when there is a deadline.
pub async fn drive<S: Socket, H: Handler>(
    ws: &mut S,
    control: &Control,
    shutdown: &CancellationToken,
    timing: &Timing,
    handler: &mut H,
) -> CloseReason {
    let mut last_seen = Instant::now();
    let mut next_ping = timing.ping_interval.map(|every| last_seen + every);
    // Made once and polled on every turn: making them anew each turn would register and
    // unregister a waiter each time. The one timer serves both idleness and pings; it is pushed
    // back when it fires early rather than reset on every frame.
    let mut shutdown = pin!(shutdown.cancelled());
    let mut killed = pin!(control.killed());
    let mut ready = pin!(control.ready());
    let mut timer = pin!(sleep_until(wake_at(
        last_seen,
        timing.idle_timeout,
        next_ping
    )));
    // Only connections with a deadline carry its timer, in a box of its own.
    let mut deadline: Option<Pin<Box<Sleep>>> = None;
    loop {
        if let Some(first) = control.pop() {
            // What was already written is flushed before the close frame says why.
            if let Some(why) = control.kill_reason() {
                return close(ws, Close::for_kill(why)).await;
            }
            match write(ws, control, first, &mut killed, timing.write_timeout).await {
                Written::Batch(Ok(false)) => continue,
                Written::Batch(Ok(true)) => {
                    // A service asked for the close; the close frame is on its way.
                    Box::pin(linger(ws)).await;
                    return CloseReason::DroppedByService;
                }
                Written::Batch(Err(_)) => return CloseReason::ConnectionLost,
                Written::TimedOut => return CloseReason::WriteTimeout,
                Written::Killed(why) => return close(ws, Close::for_kill(why)).await,
            }
        }
        follow(&mut deadline, handler.deadline());
        tokio::select! {
            biased;
            _ = &mut shutdown => return close(ws, Close::SHUTDOWN).await,
            why = &mut killed => return close(ws, Close::for_kill(why)).await,
            () = &mut ready => ready.set(control.ready()),
            () = until(&mut deadline) => {
                deadline = None;
                if let Some(c) = handler.on_deadline().await {
                    return close(ws, c).await;
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                if now >= last_seen + timing.idle_timeout {
                    return close(ws, Close::IDLE).await;
                }
                if let (Some(at), Some(every)) = (next_ping, timing.ping_interval)
                    && now >= at
                {
                    next_ping = Some(now + every);
                    let ping = ws.send(Message::Ping(Bytes::new()));
                    match tokio::time::timeout(timing.write_timeout, ping).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return CloseReason::ConnectionLost,
                        Err(_) => return CloseReason::WriteTimeout,
                    }
                }
                timer.as_mut().reset(wake_at(last_seen, timing.idle_timeout, next_ping));
            }
            frame = ws.next() => {
                last_seen = Instant::now();
                let data = match &frame {
                    Some(Ok(Message::Text(text))) => Some(Data::Text(text.as_str())),
                    Some(Ok(Message::Binary(bytes))) => Some(Data::Binary(bytes)),
                    _ => None,
                };
                if let Some(data) = data {
                    if let Some(c) = handler.on_data(data).await {
                        return close(ws, c).await;
                    }
                } else if let Some(why) = on_control_frame(frame, ws, timing.write_timeout).await {
                    return why;
                }
            }
        }
    }
}

/// When the one timer next has something to do: check idleness, or ping.
fn wake_at(last_seen: Instant, idle: Duration, next_ping: Option<Instant>) -> Instant {
    let idle_at = last_seen + idle;
    next_ping.map_or(idle_at, |p| p.min(idle_at))
}

/// Makes `timer` sleep until `want`, creating, moving or dropping it as needed.
fn follow(timer: &mut Option<Pin<Box<Sleep>>>, want: Option<Instant>) {
    match (timer.as_mut(), want) {
        (Some(sleep), Some(w)) if sleep.deadline() == w => {}
        (Some(sleep), Some(w)) => sleep.as_mut().reset(w),
        (None, Some(w)) => *timer = Some(Box::pin(sleep_until(w))),
        (_, None) => *timer = None,
    }
}

/// Sleeps until the timer fires, or forever when there is none.
async fn until(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}

/// Handles what a client sent that is not data: a close (answered), a ping (answered), a read
/// error (closed with the code it deserves) or the end of the stream. Returns why the connection
/// ended, or `None` to go on.
///
/// Boxed, like the other once-per-connection paths: a connection's future is as big as its
/// biggest state, and every connection holds one for as long as it is open.
fn on_control_frame<S: Socket>(
    frame: Option<Result<Message, WsError>>,
    ws: &mut S,
    write_timeout: Duration,
) -> BoxFuture<'_, Option<CloseReason>> {
    Box::pin(async move {
        match frame {
            Some(Ok(Message::Close(_))) => {
                // tungstenite queued the close reply; flushing sends it.
                let _ = tokio::time::timeout(CLOSE_LINGER, ws.flush()).await;
                Some(CloseReason::ClientClosed)
            }
            // Pings are answered by tungstenite on the next write or flush.
            Some(Ok(Message::Ping(_))) => {
                let _ = tokio::time::timeout(write_timeout, ws.flush()).await;
                None
            }
            Some(Ok(_)) => None,
            Some(Err(e)) => {
                let (reply, why) = close_for_read_error(&e);
                if let Some(reply) = reply {
                    close(ws, reply).await;
                }
                Some(why)
            }
            None => Some(CloseReason::ConnectionLost),
        }
    })
}

/// How a write under [`write`] ended.
enum Written {
    /// The batch went out (true: it ended with a close frame), or the socket failed.
    Batch(Result<bool, WsError>),
    TimedOut,
    Killed(CloseReason),
}

/// Writes a batch ([`write_batch`]) within `timeout`, unless the connection is killed first.
/// The timer is made only when the socket cannot take the batch at once: most writes finish
/// in their first poll, and a timer made and dropped per write costs more than the write.
async fn write<S: Socket, K: Future<Output = CloseReason>>(
    ws: &mut S,
    control: &Control,
    first: Message,
    killed: &mut Pin<&mut K>,
    timeout: Duration,
) -> Written {
    let mut batch = pin!(write_batch(ws, control, first));
    if let Poll::Ready(r) = futures_util::poll!(batch.as_mut()) {
        return Written::Batch(r);
    }
    // The rare path, boxed: every connection's future would otherwise hold room for the timer.
    Box::pin(async move {
        tokio::select! {
            biased;
            why = killed.as_mut() => Written::Killed(why),
            r = tokio::time::timeout(timeout, batch) => match r {
                Ok(r) => Written::Batch(r),
                Err(_) => Written::TimedOut,
            },
        }
    })
    .await
}

/// Writes `first` and whatever else is already queued, then flushes once. Returns true when a
/// close frame was written (nothing may follow it).
///
/// Written against the sink's poll functions rather than `feed().await`: a `Feed` future per
/// frame would make this future, and so every connection's, several hundred bytes bigger.
async fn write_batch<S: Socket>(
    ws: &mut S,
    control: &Control,
    first: Message,
) -> Result<bool, WsError> {
    let mut next = Some(first);
    let mut closing = false;
    let mut written = 0;
    std::future::poll_fn(|cx| {
        while let Some(message) = next.take() {
            if ws.poll_ready_unpin(cx)?.is_pending() {
                next = Some(message);
                return Poll::Pending;
            }
            closing = matches!(message, Message::Close(_));
            ws.start_send_unpin(message)?;
            written += 1;
            if !closing && written < WRITE_BATCH {
                next = control.pop();
            }
        }
        ws.poll_flush_unpin(cx).map_ok(|()| closing)
    })
    .await
}

/// Sends a close frame (bounded in time) and waits briefly for the client's answer, so the
/// frame is not lost to a reset. Returns the close's reason for counting.
fn close<S: Socket>(ws: &mut S, close: Close) -> BoxFuture<'_, CloseReason> {
    Box::pin(async move {
        let frame = Message::Close(Some(CloseFrame {
            code: CloseCode::from(close.code),
            reason: close.reason.into(),
        }));
        if let Ok(Ok(())) = tokio::time::timeout(CLOSE_LINGER, ws.send(frame)).await {
            linger(ws).await;
        }
        close.why
    })
}

/// Reads (and discards) until the client closes its side, for at most [`CLOSE_LINGER`].
async fn linger<S: Socket>(ws: &mut S) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// A WebSocket made of two channels, so a handler can be driven without a network: the test
/// holds the client's ends.
#[cfg(test)]
pub(crate) mod pipe {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_util::{Sink, Stream};
    use hyper_tungstenite::tungstenite::{Error as WsError, Message};
    use tokio::sync::mpsc;

    pub struct Pipe {
        from_client: mpsc::UnboundedReceiver<Result<Message, WsError>>,
        to_client: mpsc::UnboundedSender<Message>,
    }

    /// The client's ends: what it sends, and what the gateway wrote to it.
    pub struct Client {
        pub send: mpsc::UnboundedSender<Result<Message, WsError>>,
        pub recv: mpsc::UnboundedReceiver<Message>,
    }

    impl Client {
        /// The next frame written to the client, within five seconds.
        pub async fn next(&mut self) -> Message {
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), self.recv.recv());
            next.await
                .expect("a frame in time")
                .expect("the pipe is open")
        }

        pub fn text(&self, text: &str) {
            self.send.send(Ok(Message::text(text))).unwrap();
        }
    }

    pub fn new() -> (Pipe, Client) {
        let (send, from_client) = mpsc::unbounded_channel();
        let (to_client, recv) = mpsc::unbounded_channel();
        (
            Pipe {
                from_client,
                to_client,
            },
            Client { send, recv },
        )
    }

    impl Stream for Pipe {
        type Item = Result<Message, WsError>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.from_client.poll_recv(cx)
        }
    }

    impl Sink<Message> for Pipe {
        type Error = WsError;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
            self.to_client
                .send(message)
                .map_err(|_| WsError::ConnectionClosed)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    use super::*;

    /// Echoes text through the queue, as a front door's reply would arrive; "bye" closes.
    struct Echo {
        control: Arc<Control>,
        deadline: Option<Instant>,
    }

    impl Handler for Echo {
        async fn on_data(&mut self, data: Data<'_>) -> Option<Close> {
            match data {
                Data::Text("bye") => Some(Close::RATE_LIMIT),
                Data::Text(t) => {
                    self.control
                        .push(Message::text(format!("echo:{t}")))
                        .unwrap();
                    None
                }
                Data::Binary(b) => {
                    let n = b.len().to_string();
                    self.control.push(Message::text(n)).unwrap();
                    None
                }
            }
        }

        fn deadline(&self) -> Option<Instant> {
            self.deadline
        }

        async fn on_deadline(&mut self) -> Option<Close> {
            Some(Close::TOKEN_EXPIRED)
        }
    }

    const TIMING: Timing = Timing {
        write_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        ping_interval: Some(Duration::from_secs(30)),
    };

    /// Drives an [`Echo`] on its own task; the client's ends, the queue, and the driver's result.
    fn start(
        queue: usize,
        timing: Timing,
        deadline: Option<Instant>,
    ) -> (
        pipe::Client,
        Arc<Control>,
        CancellationToken,
        tokio::task::JoinHandle<CloseReason>,
    ) {
        let (mut ws, client) = pipe::new();
        let control = Arc::new(Control::new(queue, usize::MAX));
        let shutdown = CancellationToken::new();
        let mut echo = Echo {
            control: control.clone(),
            deadline,
        };
        let (c, s) = (control.clone(), shutdown.clone());
        let task = tokio::spawn(async move { drive(&mut ws, &c, &s, &timing, &mut echo).await });
        (client, control, shutdown, task)
    }

    fn close_code(m: &Message) -> u16 {
        match m {
            Message::Close(Some(f)) => u16::from(f.code),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn frames_reach_the_handler_and_its_queue_reaches_the_client() {
        let (mut client, _, _, task) = start(16, TIMING, None);
        client.text("a");
        assert_eq!(client.next().await, Message::text("echo:a"));
        client.send.send(Ok(Message::binary(vec![0u8; 3]))).unwrap();
        assert_eq!(client.next().await, Message::text("3"));
        client.send.send(Ok(Message::Close(None))).unwrap();
        assert_eq!(task.await.unwrap(), CloseReason::ClientClosed);
    }

    #[tokio::test]
    async fn a_close_asked_by_the_handler_goes_out_with_its_code() {
        let (mut client, _, _, task) = start(16, TIMING, None);
        client.text("bye");
        assert_eq!(close_code(&client.next().await), 1008);
        drop(client.send);
        assert_eq!(task.await.unwrap(), CloseReason::RateLimited);
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_client_as_slow() {
        let (mut client, control, _, task) = start(1, TIMING, None);
        control.push(Message::text("one")).unwrap();
        assert!(control.push(Message::text("two")).is_err());
        let m = client.next().await;
        assert_eq!(close_code(&m), u16::from(CloseCode::Again), "{m:?}");
        drop(client.send);
        assert_eq!(task.await.unwrap(), CloseReason::SlowClient);
    }

    #[tokio::test]
    async fn a_silent_client_is_pinged_then_closed_as_idle() {
        let timing = Timing {
            idle_timeout: Duration::from_millis(1500),
            ping_interval: Some(Duration::from_millis(50)),
            ..TIMING
        };
        let (mut client, _, _, task) = start(16, timing, None);
        assert!(matches!(client.next().await, Message::Ping(_)));
        let closed = loop {
            match client.next().await {
                Message::Ping(_) => continue,
                other => break other,
            }
        };
        assert_eq!(close_code(&closed), 1001);
        drop(client.send);
        assert_eq!(task.await.unwrap(), CloseReason::IdleTimeout);
    }

    #[tokio::test]
    async fn the_handler_hears_its_deadline() {
        let at = Instant::now() + Duration::from_millis(50);
        let (mut client, _, _, task) = start(16, TIMING, Some(at));
        assert_eq!(close_code(&client.next().await), 4001);
        drop(client.send);
        assert_eq!(task.await.unwrap(), CloseReason::TokenExpired);
    }

    #[tokio::test]
    async fn shutdown_closes_with_1001() {
        let (mut client, _, shutdown, task) = start(16, TIMING, None);
        shutdown.cancel();
        assert_eq!(close_code(&client.next().await), 1001);
        drop(client.send);
        assert_eq!(task.await.unwrap(), CloseReason::Shutdown);
    }
}
