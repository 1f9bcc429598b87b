//! [`Outbox`]: one socket's send queue and the gateway's close requests for it (send-queue
//! overflow, drain), shared by the registry ([`super::Fanout`]) and the socket's connection task.

use std::{
    collections::VecDeque,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU16, Ordering},
    },
};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Utf8Bytes, protocol::frame::coding::CloseCode};

/// A send queue drained after a burst gives its buffer back when it holds more slots than this.
const KEPT_QUEUE_SLOTS: usize = 16;

/// What the registry and one connection task share: the socket's send queue and the gateway's
/// close requests (send-queue overflow, drain).
///
/// One `Arc` is held by the registry (inside the socket's handle; the drain reaches it through
/// [`Fanout::outboxes`]), the other by the connection task, which waits on [`Outbox::next`].
/// The queue is a plain deque rather than a channel: it allocates nothing until the first event
/// and gives its buffer back once drained after a burst, so an idle socket holds no queue memory
/// (a bounded tokio channel allocates a 32-slot block and a 512-byte header up front).
pub struct Outbox {
    /// Events not written yet, oldest first; at most `capacity` (`WS_SEND_QUEUE`).
    events: Mutex<VecDeque<Utf8Bytes>>,
    capacity: usize,
    /// The close code requested first; 0 while none is.
    close_code: AtomicU16,
    /// Wakes the connection task after an event was queued or a close requested.
    wake: Notify,
}

/// The send queue is full: the socket is asked to close with 1013.
#[derive(Debug)]
pub struct QueueFull;

impl Outbox {
    /// An empty outbox for at most `capacity` queued events.
    pub fn new(capacity: usize) -> Self {
        Self {
            events: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            close_code: AtomicU16::new(0),
            wake: Notify::new(),
        }
    }

    fn events(&self) -> MutexGuard<'_, VecDeque<Utf8Bytes>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `frame` for the socket, unless the queue is full.
    pub fn push(&self, frame: Utf8Bytes) -> Result<(), QueueFull> {
        {
            let mut events = self.events();
            if events.len() >= self.capacity {
                return Err(QueueFull);
            }
            events.push_back(frame);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The oldest queued event, if any.
    pub fn pop(&self) -> Option<Utf8Bytes> {
        let mut events = self.events();
        let frame = events.pop_front();
        if events.is_empty() && events.capacity() > KEPT_QUEUE_SLOTS {
            *events = VecDeque::new();
        }
        frame
    }

    /// Moves queued events, oldest first, into `into` until it holds `max_events` or the events
    /// moved reach `max_bytes` (at least one is moved when any is queued): what one frame carries.
    pub fn pop_batch(&self, into: &mut Vec<Utf8Bytes>, max_events: usize, max_bytes: usize) {
        let mut events = self.events();
        let mut bytes = 0;
        while into.len() < max_events && bytes < max_bytes {
            let Some(frame) = events.pop_front() else {
                break;
            };
            bytes += frame.len();
            into.push(frame);
        }
        if events.is_empty() && events.capacity() > KEPT_QUEUE_SLOTS {
            *events = VecDeque::new();
        }
    }

    /// The next queued event, waiting for one; `None` once a close has been requested.
    pub async fn next(&self) -> Option<Utf8Bytes> {
        loop {
            if self.requested().is_some() {
                return None;
            }
            if let Some(frame) = self.pop() {
                return Some(frame);
            }
            // `notify_one` keeps a permit when nobody waits, so a push between `pop` and here
            // is not missed.
            self.wake.notified().await;
        }
    }

    /// Asks the connection to close with `code`; returns whether this was the first request.
    pub fn request_close(&self, code: CloseCode) -> bool {
        let first = self
            .close_code
            .compare_exchange(0, code.into(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.wake.notify_one();
        }
        first
    }

    /// The close code requested so far, if any.
    pub fn requested(&self) -> Option<CloseCode> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(CloseCode::from(code)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize, len: usize) -> Utf8Bytes {
        Utf8Bytes::from(format!("{n:0len$}"))
    }

    #[test]
    fn a_batch_takes_the_oldest_events_up_to_its_count_or_byte_limit() {
        let outbox = Outbox::new(256);
        for n in 0..10 {
            outbox.push(event(n, 100)).unwrap();
        }
        // Count limit.
        let mut batch = vec![outbox.pop().unwrap()];
        outbox.pop_batch(&mut batch, 4, usize::MAX);
        let numbers: Vec<usize> = batch.iter().map(|e| e.as_str().parse().unwrap()).collect();
        assert_eq!(numbers, [0, 1, 2, 3]);
        // Byte limit: stops once 250 bytes are reached (the event crossing it is included).
        let mut batch = Vec::new();
        outbox.pop_batch(&mut batch, 64, 250);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0].as_str().parse::<usize>().unwrap(), 4);
        // The rest, then nothing.
        let mut batch = Vec::new();
        outbox.pop_batch(&mut batch, 64, usize::MAX);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[2].as_str().parse::<usize>().unwrap(), 9);
        let mut batch = Vec::new();
        outbox.pop_batch(&mut batch, 64, usize::MAX);
        assert!(batch.is_empty());
        assert!(outbox.pop().is_none());
    }

    #[test]
    fn a_drained_burst_gives_its_queue_buffer_back() {
        let outbox = Outbox::new(256);
        for n in 0..100 {
            outbox.push(event(n, 8)).unwrap();
        }
        let mut batch = Vec::new();
        outbox.pop_batch(&mut batch, 200, usize::MAX);
        assert_eq!(batch.len(), 100);
        assert_eq!(outbox.events().capacity(), 0);
    }
}
