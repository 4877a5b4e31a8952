//! [`StopSignal`]: a `watch::Receiver<bool>` stop flag for a task that checks it on every poll.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use tokio::sync::watch;

/// Tells a task that `stop` was set, and wakes it when that happens.
///
/// A fresh `changed()` future per check registers the task with the channel and removes it
/// again, each under the channel's lock, and polling a registered one takes that lock too:
/// for a connection checking between requests (or on every poll), that cost more than
/// parsing a request head. Here the task registers once, at the first check, and later
/// checks only compare the channel's version (one atomic load). It relies on the task
/// polling it staying the same, which holds for a connection task and its own futures.
pub struct StopSignal {
    rx: watch::Receiver<bool>,
    /// Resolves once `stop` is set or its sender is gone; registered with the task at the
    /// first check.
    armed: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    fired: bool,
}

impl StopSignal {
    /// A signal on `rx` (not registered yet).
    pub fn new(rx: watch::Receiver<bool>) -> Self {
        StopSignal {
            rx,
            armed: None,
            fired: false,
        }
    }

    /// Whether stop was set (or its sender dropped). When not, the task of `cx` is woken when
    /// it is.
    pub fn poll_stopped(&mut self, cx: &mut Context<'_>) -> bool {
        if self.fired {
            return true;
        }
        if self.armed.is_some() && !self.rx.has_changed().unwrap_or(true) {
            // Registered, and nothing sent since: the wake-up is still in place.
            return false;
        }
        let rx = &self.rx;
        let armed = self.armed.get_or_insert_with(|| {
            let mut rx = rx.clone();
            Box::pin(async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
        });
        if armed.as_mut().poll(cx).is_ready() {
            self.fired = true;
            self.armed = None;
            return true;
        }
        // Something other than a stop was sent: seen, so the check above stays cheap.
        self.rx.borrow_and_update();
        false
    }

    /// Whether stop was set, without registering for a wake-up.
    pub fn is_stopped(&self) -> bool {
        self.fired || *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_task_is_woken_once_stop_is_set_and_sees_it() {
        let (tx, rx) = watch::channel(false);
        let mut s = StopSignal::new(rx);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(!s.poll_stopped(&mut cx));
        assert!(!s.poll_stopped(&mut cx), "a second check stays false");
        tx.send(true).expect("receiver alive");
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken by the stop");
        assert!(s.poll_stopped(&mut cx));
        assert!(s.poll_stopped(&mut cx), "and stays stopped");
        assert!(s.is_stopped());
    }

    #[tokio::test]
    async fn a_stop_set_before_the_first_check_or_a_dropped_sender_counts() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let (tx, rx) = watch::channel(false);
        tx.send(true).expect("receiver alive");
        let mut s = StopSignal::new(rx.clone());
        assert!(s.poll_stopped(&mut cx));
        let (tx, rx) = watch::channel(false);
        let mut s = StopSignal::new(rx);
        assert!(!s.poll_stopped(&mut cx));
        drop(tx);
        assert!(s.poll_stopped(&mut cx));
    }
}
