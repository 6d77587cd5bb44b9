//! Bounded hand-over between two pipeline threads. `KeepLatest` holds one item and replaces it
//! when the receiver is busy (the replaced item is counted as dropped): a slow stage never
//! builds a backlog, which is what keeps live latency low. `Block(n)` queues up to n items and
//! makes the sender wait: offline work must not lose frames. Either side going away (dropped)
//! closes the hand-over, which is how a stage learns that it should stop.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Capacity 1; a new item replaces an unreceived one.
    KeepLatest,
    /// Capacity n; the sender waits for room.
    Block(usize),
}

struct State<T> {
    queue: VecDeque<T>,
    sender_alive: bool,
    receiver_alive: bool,
    dropped: u64,
}

struct Shared<T> {
    policy: Policy,
    state: Mutex<State<T>>,
    /// Signalled when an item arrives or the sender leaves.
    filled: Condvar,
    /// Signalled when room frees up or the receiver leaves.
    emptied: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panicking stage must not take the others down with a poisoned lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`Receiver::recv_timeout`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<T> {
    Item(T),
    /// The sender has gone and every item was received.
    Closed,
    /// Nothing arrived in time; the sender is still there.
    TimedOut,
}

pub struct Sender<T>(Arc<Shared<T>>);
pub struct Receiver<T>(Arc<Shared<T>>);

/// A connected sender/receiver pair.
pub fn handoff<T>(policy: Policy) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        policy,
        state: Mutex::new(State {
            queue: VecDeque::new(),
            sender_alive: true,
            receiver_alive: true,
            dropped: 0,
        }),
        filled: Condvar::new(),
        emptied: Condvar::new(),
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Hands `item` over; gives it back if the receiver has gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        let shared = &self.0;
        let mut state = shared.lock();
        match shared.policy {
            Policy::KeepLatest => {
                if state.queue.pop_front().is_some() {
                    state.dropped += 1;
                }
            }
            Policy::Block(capacity) => {
                while state.receiver_alive && state.queue.len() >= capacity.max(1) {
                    state = shared
                        .emptied
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
        }
        if !state.receiver_alive {
            return Err(item);
        }
        state.queue.push_back(item);
        shared.filled.notify_one();
        Ok(())
    }
}

impl<T> Receiver<T> {
    /// The next item; `None` once the sender has gone and everything was received.
    pub fn recv(&self) -> Option<T> {
        let shared = &self.0;
        let mut state = shared.lock();
        loop {
            if let Some(item) = state.queue.pop_front() {
                shared.emptied.notify_one();
                return Some(item);
            }
            if !state.sender_alive {
                return None;
            }
            state = shared.filled.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`Receiver::recv`], but gives up after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Received<T> {
        let shared = &self.0;
        let state = shared.lock();
        let (mut state, _) = shared
            .filled
            .wait_timeout_while(state, timeout, |s| s.queue.is_empty() && s.sender_alive)
            .unwrap_or_else(|e| e.into_inner());
        match state.queue.pop_front() {
            Some(item) => {
                shared.emptied.notify_one();
                Received::Item(item)
            }
            None if !state.sender_alive => Received::Closed,
            None => Received::TimedOut,
        }
    }

    /// Items replaced before this receiver took them.
    pub fn dropped(&self) -> u64 {
        self.0.lock().dropped
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().sender_alive = false;
        self.0.filled.notify_all();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_alive = false;
        state.queue.clear();
        drop(state);
        self.0.emptied.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn keep_latest_replaces_and_counts() {
        let (tx, rx) = handoff(Policy::KeepLatest);
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        assert_eq!(rx.recv(), Some(4));
        assert_eq!(rx.dropped(), 4);
        drop(tx);
        assert_eq!(rx.recv(), None);
    }

    #[test]
    fn block_loses_nothing_and_ends_after_the_last_item() {
        let (tx, rx) = handoff(Policy::Block(2));
        let producer = thread::spawn(move || {
            for i in 0..1000 {
                tx.send(i).unwrap();
            }
        });
        let received: Vec<i32> = std::iter::from_fn(|| rx.recv()).collect();
        producer.join().unwrap();
        assert_eq!(received, (0..1000).collect::<Vec<_>>());
        assert_eq!(rx.dropped(), 0);
    }

    #[test]
    fn a_departed_receiver_releases_a_waiting_sender() {
        let (tx, rx) = handoff(Policy::Block(1));
        tx.send(1).unwrap();
        let producer = thread::spawn(move || tx.send(2));
        thread::sleep(Duration::from_millis(20));
        drop(rx);
        assert_eq!(producer.join().unwrap(), Err(2));
    }

    #[test]
    fn recv_timeout_tells_waiting_from_finished() {
        let (tx, rx) = handoff::<u8>(Policy::KeepLatest);
        let wait = Duration::from_millis(5);
        assert_eq!(rx.recv_timeout(wait), Received::TimedOut);
        tx.send(3).unwrap();
        assert_eq!(rx.recv_timeout(wait), Received::Item(3));
        drop(tx);
        assert_eq!(rx.recv_timeout(wait), Received::Closed);
    }
}
