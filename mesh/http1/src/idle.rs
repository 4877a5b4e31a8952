//! Idle timeouts for bodies: the time since a body last made progress, measured only while
//! it is waited for.

use std::future::Future as _;
use std::pin::Pin;
use std::task::Context;
use std::time::{Duration, Instant};

/// Watches a body being read for the time since it last made progress. Only runs while the
/// body is polled, so a client that reads slowly never makes the upstream look idle.
pub struct IdleWatch {
    timeout: Duration,
    last: Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleWatch {
    /// A watch starting now.
    pub fn new(timeout: Duration) -> Self {
        IdleWatch {
            timeout,
            last: Instant::now(),
            timer: None,
        }
    }

    /// The timeout watched for.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The body made progress.
    pub fn progress(&mut self) {
        self.last = Instant::now();
    }

    /// Whether the body has been waiting for longer than the timeout; otherwise arms the
    /// timer to wake `cx` when it would be. One timer per body, moved only when it fires early.
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.last + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= self.last + self.timeout {
                return true;
            }
            timer.as_mut().reset((self.last + self.timeout).into());
        }
        false
    }
}
