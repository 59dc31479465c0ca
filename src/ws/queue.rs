//! One client's outbound queue and kill switch, shared by whoever produces frames for it (the
//! Redis reader, a legacy HTTP lane, the Channels hub) and the driver that writes them.
//!
//! Producers only ever push (never await). A queue at its limit means the client is not keeping
//! up: the push refuses the frame and asks the driver to close the client as slow, here and
//! nowhere else, so nobody else's frames wait for it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use hyper_tungstenite::tungstenite::Message;

use crate::metrics::CloseReason;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue is at its frame or byte limit: the client is not keeping up.
    Full,
    /// The session has ended.
    Closed,
}

/// Frames waiting to be written to one client. Nothing is allocated until the first frame, so
/// an idle connection costs no queue memory.
#[derive(Debug, Default)]
struct Outbox {
    frames: VecDeque<Message>,
    bytes: usize,
    closed: bool,
}

/// Wakes the one task that waits on it (the session's driver), keeping a wake-up given while
/// nobody waited. Cheaper to poll than a `Notify`: no list of waiters, one atomic to check.
#[derive(Debug, Default)]
struct Signal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once raised since the last time it was taken; takes it.
    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Raised between the check and the registration: its wake may have missed us.
        if self.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// A client's shared state: how anyone but the session itself ends it (set a reason, wake it),
/// and its bounded outbound queue. One task (the session's driver) waits on it.
#[derive(Debug)]
pub struct Control {
    /// Wakes the session when it is asked to close.
    kill: Signal,
    /// Wakes the session when its queue stops being empty.
    ready: Signal,
    /// `CloseReason as u8 + 1`; 0 while nobody asked.
    reason: AtomicU8,
    outbox: Mutex<Outbox>,
    max_frames: usize,
    max_bytes: usize,
}

impl Control {
    /// A queue holding at most `max_frames` frames and `max_bytes` bytes of payload.
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            kill: Signal::default(),
            ready: Signal::default(),
            reason: AtomicU8::new(0),
            outbox: Mutex::new(Outbox::default()),
            max_frames,
            max_bytes,
        }
    }

    /// Asks the session to close; the first reason wins.
    pub fn kill(&self, reason: CloseReason) {
        let _ =
            self.reason
                .compare_exchange(0, reason as u8 + 1, Ordering::AcqRel, Ordering::Acquire);
        self.kill.raise();
    }

    /// Queues a frame for the client, unless that would pass a limit or the session has ended.
    /// Never waits. A full queue also asks the driver to close the client as slow.
    pub fn push(&self, message: Message) -> Result<(), Refused> {
        let size = message.len();
        let mut outbox = self.lock();
        if outbox.closed {
            return Err(Refused::Closed);
        }
        if outbox.frames.len() >= self.max_frames || outbox.bytes + size > self.max_bytes {
            drop(outbox);
            self.kill(CloseReason::SlowClient);
            return Err(Refused::Full);
        }
        let was_empty = outbox.frames.is_empty();
        outbox.frames.push_back(message);
        outbox.bytes += size;
        drop(outbox);
        if was_empty {
            self.ready.raise();
        }
        Ok(())
    }

    /// The next queued frame, which no longer counts against the limits.
    pub fn pop(&self) -> Option<Message> {
        let mut outbox = self.lock();
        let message = outbox.frames.pop_front()?;
        outbox.bytes -= message.len();
        if outbox.frames.is_empty() && outbox.frames.capacity() > SHRINK_ABOVE {
            // A burst is over: give the memory back rather than hold it for an idle client.
            outbox.frames = VecDeque::new();
        }
        Some(message)
    }

    /// Ends the queue: what is queued is dropped and later pushes are refused.
    pub fn close(&self) {
        let mut outbox = self.lock();
        outbox.closed = true;
        outbox.frames = VecDeque::new();
        outbox.bytes = 0;
    }

    /// Resolves when the queue may have stopped being empty (check with [`Control::pop`]).
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| self.ready.poll_take(cx)).await
    }

    /// Resolves with the reason once the session is asked to close.
    pub async fn killed(&self) -> CloseReason {
        std::future::poll_fn(|cx| {
            loop {
                if let Some(r) = self.kill_reason() {
                    return Poll::Ready(r);
                }
                if self.kill.poll_take(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        })
        .await
    }

    /// Why the session was asked to close, if it was.
    pub fn kill_reason(&self) -> Option<CloseReason> {
        match self.reason.load(Ordering::Acquire) {
            0 => None,
            n => CloseReason::ALL.get(usize::from(n - 1)).copied(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // The lock guards plain data and no code under it can panic midway.
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Queue capacity (in frames) kept after the queue empties; more is freed.
const SHRINK_ABOVE: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::text(s)
    }

    #[test]
    fn push_refuses_past_the_frame_limit_and_pop_makes_room() {
        let c = Control::new(2, usize::MAX);
        assert_eq!(c.push(text("a")), Ok(()));
        assert_eq!(c.push(text("b")), Ok(()));
        assert_eq!(c.push(text("c")), Err(Refused::Full));
        assert_eq!(
            c.kill_reason(),
            Some(CloseReason::SlowClient),
            "a full queue kills as slow"
        );
        assert_eq!(c.pop(), Some(text("a")));
        assert_eq!(c.push(text("c")), Ok(()));
        assert_eq!(c.pop(), Some(text("b")));
        assert_eq!(c.pop(), Some(text("c")));
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn push_refuses_past_the_byte_limit_and_pop_releases_the_bytes() {
        let c = Control::new(100, 10);
        assert_eq!(c.push(text("123456")), Ok(()));
        assert_eq!(c.push(text("12345")), Err(Refused::Full));
        assert_eq!(c.push(text("1234")), Ok(()));
        assert_eq!(c.pop(), Some(text("123456")));
        assert_eq!(c.push(text("123456")), Ok(()));
        assert_eq!(c.push(text("1")), Err(Refused::Full));
    }

    #[test]
    fn a_closed_queue_drops_what_it_held_and_refuses_more() {
        let c = Control::new(10, usize::MAX);
        c.push(text("a")).unwrap();
        c.close();
        assert_eq!(c.pop(), None);
        assert_eq!(c.push(text("b")), Err(Refused::Closed));
    }

    #[test]
    fn an_emptied_queue_gives_back_a_burst_of_capacity() {
        let c = Control::new(1000, usize::MAX);
        for _ in 0..100 {
            c.push(text("x")).unwrap();
        }
        while c.pop().is_some() {}
        assert!(c.lock().frames.capacity() <= SHRINK_ABOVE);
    }

    #[tokio::test]
    async fn ready_fires_for_a_push_made_before_anyone_waits() {
        let c = Control::new(10, usize::MAX);
        c.push(text("a")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), c.ready())
            .await
            .expect("the push left a wake-up");
        assert_eq!(c.pop(), Some(text("a")));
    }

    #[tokio::test]
    async fn the_first_kill_reason_wins() {
        let c = Control::new(10, usize::MAX);
        c.kill(CloseReason::ALL[0]);
        c.kill(CloseReason::ALL[1]);
        assert_eq!(c.killed().await, CloseReason::ALL[0]);
    }
}
