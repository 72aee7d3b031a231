//! The outbound queue of a session: many senders (the router, other sessions), one receiver
//! (the session's task), unbounded (the router checks `len` against `sessions::MAX_QUEUE`).
//!
//! Why not async-channel: every session has one, and an idle session's queue should cost
//! next to nothing. async-channel's is a cache-padded 640-byte channel plus a 31-slot block
//! that stays allocated once anything was sent, 1.5 KiB per session; this one is a mutex
//! around a `VecDeque` that is freed whenever it runs empty, about 100 bytes.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    items: VecDeque<T>,
    /// The receiver waiting in `recv`.
    waker: Option<Waker>,
    /// `close` was called or the receiver is gone: nothing more is accepted.
    closed: bool,
    senders: usize,
}

impl<T> State<T> {
    /// The next item; the buffer goes once the queue runs empty, so an idle one holds none.
    fn pop(&mut self) -> Option<T> {
        let item = self.items.pop_front();
        if self.items.is_empty() && self.items.capacity() > 0 {
            self.items = VecDeque::new();
        }
        item
    }
}

struct Shared<T>(Mutex<State<T>>);

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Each critical section is a few field updates: consistent even after a panic.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Sender<T>(Arc<Shared<T>>);
pub struct Receiver<T>(Arc<Shared<T>>);

/// The queue is closed and empty, or every sender is gone and it is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvError;

pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared(Mutex::new(State {
        items: VecDeque::new(),
        waker: None,
        closed: false,
        senders: 1,
    })));
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is closed (then it comes back).
    pub fn try_send(&self, item: T) -> Result<(), T> {
        let mut s = self.0.lock();
        if s.closed {
            return Err(item);
        }
        s.items.push_back(item);
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.0.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Accepts nothing more; the receiver still gets what is queued.
    pub fn close(&self) {
        let mut s = self.0.lock();
        s.closed = true;
        let waker = s.waker.take();
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.senders -= 1;
        let waker = if s.senders == 0 { s.waker.take() } else { None };
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sender(..)")
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receiver(..)")
    }
}

impl<T> Receiver<T> {
    pub fn try_recv(&self) -> Result<T, RecvError> {
        self.0.lock().pop().ok_or(RecvError)
    }

    /// The next item; `Err` once the queue is closed (or has no sender) and empty.
    pub fn recv(&self) -> Recv<'_, T> {
        Recv(self)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.lock().closed = true;
    }
}

pub struct Recv<'a, T>(&'a Receiver<T>);

impl<T> Future for Recv<'_, T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0 .0.lock();
        if let Some(item) = s.pop() {
            return Poll::Ready(Ok(item));
        }
        if s.closed || s.senders == 0 {
            return Poll::Ready(Err(RecvError));
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_arrive_in_order_and_close_ends_the_queue_after_them() {
        let (tx, rx) = unbounded();
        let tx2 = tx.clone();
        tx.try_send(1).unwrap();
        tx2.try_send(2).unwrap();
        assert_eq!(tx.len(), 2);
        tx.close();
        assert_eq!(tx2.try_send(3), Err(3));
        smol::block_on(async {
            assert_eq!(rx.recv().await, Ok(1));
            assert_eq!(rx.recv().await, Ok(2));
            assert_eq!(rx.recv().await, Err(RecvError));
        });
    }

    #[test]
    fn a_waiting_receiver_wakes_for_a_send_and_for_the_last_sender_leaving() {
        let (tx, rx) = unbounded::<u32>();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.try_send(7).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(tx);
        });
        smol::block_on(async {
            assert_eq!(rx.recv().await, Ok(7));
            assert_eq!(rx.recv().await, Err(RecvError));
        });
        t.join().unwrap();
    }

    #[test]
    fn a_dropped_receiver_refuses_sends_and_an_empty_queue_holds_no_buffer() {
        let (tx, rx) = unbounded();
        tx.try_send(1).unwrap();
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.0.lock().items.capacity(), 0);
        assert_eq!(rx.try_recv(), Err(RecvError));
        drop(rx);
        assert_eq!(tx.try_send(2), Err(2));
        assert!(tx.is_closed());
    }
}
