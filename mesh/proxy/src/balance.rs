//! Endpoint balancing: power of two choices over a peak-EWMA latency cost weighted by the number
//! of requests in flight.
//!
//! Each endpoint keeps an exponentially weighted moving average of its time to response
//! headers. A pick draws two distinct endpoints at random and takes the one whose
//! `ewma * (in_flight + 1)` is lower: a slow or overloaded endpoint gets less traffic without
//! one global lock or a sorted structure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::pool::EndpointPool;

/// Starting latency estimate for an endpoint with no history (so new endpoints are tried, but
/// not flooded).
const INITIAL_EWMA_US: u64 = 1_000;

/// Balancer state of one endpoint. Shared across route-table swaps (see
/// `router::EndpointStates`).
#[derive(Debug)]
pub struct Endpoint {
    /// The endpoint address.
    pub addr: SocketAddr,
    /// `http://addr` parsed once (the key of the upstream connection pools).
    pub base_uri: http::uri::Authority,
    in_flight: AtomicU32,
    /// Mirror copies in flight to this endpoint (not part of its balancing cost).
    mirrors: AtomicU32,
    ewma_us: AtomicU64,
    /// Upstream connections to this endpoint.
    pub pool: EndpointPool,
}

impl Endpoint {
    /// A fresh endpoint.
    pub fn new(addr: SocketAddr) -> Self {
        let base_uri = http::uri::Authority::try_from(addr.to_string().as_str())
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"));
        Endpoint {
            addr,
            base_uri,
            in_flight: AtomicU32::new(0),
            mirrors: AtomicU32::new(0),
            ewma_us: AtomicU64::new(INITIAL_EWMA_US),
            pool: EndpointPool::default(),
        }
    }

    fn cost(&self) -> u64 {
        self.ewma_us
            .load(Relaxed)
            .saturating_mul(u64::from(self.in_flight.load(Relaxed)) + 1)
    }

    /// Marks a request in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight { ep: self.clone() }
    }

    /// Takes one of the endpoint's [`MAX_MIRRORS_IN_FLIGHT`] mirror slots until the guard is
    /// dropped; `None` when all are taken (the copy is then not sent).
    pub fn try_mirror(self: &Arc<Self>) -> Option<MirrorSlot> {
        self.mirrors
            .fetch_update(Relaxed, Relaxed, |n| {
                (n < MAX_MIRRORS_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| MirrorSlot { ep: self.clone() })
    }

    /// Folds a latency sample into the average. Peaks count at once (a sample above the
    /// average replaces it), improvements decay in, like Linkerd's peak-EWMA.
    pub fn observe(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self.ewma_us.fetch_update(Relaxed, Relaxed, |old| {
            Some(if sample > old {
                sample
            } else {
                // old * 0.75 + sample * 0.25, in integers.
                (old * 3 + sample) / 4
            })
        });
    }
}

/// Most mirror copies in flight to one endpoint. A mirror that stops answering would
/// otherwise hold one upstream connection and one task per mirrored request for the copy's
/// whole timeout (30 s: 30,000 sockets at 1,000 requests a second), until the sidecar runs out
/// of file descriptors or memory and the real traffic suffers. Copies beyond it are dropped and
/// counted (`serin_proxy_mirror_total{result="dropped"}`). Envoy's default circuit breaker
/// allows 1,024 requests per cluster; a shadow is a best-effort copy, so fewer.
pub const MAX_MIRRORS_IN_FLIGHT: u32 = 256;

/// Holds one mirror slot of an endpoint.
pub struct MirrorSlot {
    ep: Arc<Endpoint>,
}

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        self.ep.mirrors.fetch_sub(1, Relaxed);
    }
}

/// Keeps a request counted as in flight on its endpoint.
pub struct InFlight {
    ep: Arc<Endpoint>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ep.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Picks an endpoint by power of two choices; `None` when there are none.
pub fn pick(endpoints: &[Arc<Endpoint>]) -> Option<&Arc<Endpoint>> {
    pick_index(endpoints).map(|i| &endpoints[i])
}

/// [`pick`], as an index into `endpoints` (for what is kept beside each endpoint).
pub fn pick_index(endpoints: &[Arc<Endpoint>]) -> Option<usize> {
    match endpoints.len() {
        0 => None,
        1 => Some(0),
        n => {
            let a = fastrand::usize(..n);
            // A second index distinct from the first.
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            Some(if endpoints[b].cost() < endpoints[a].cost() {
                b
            } else {
                a
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> Arc<Endpoint> {
        Arc::new(Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port))))
    }

    #[test]
    fn a_slow_endpoint_gets_less_traffic() {
        let eps = vec![ep(1), ep(2)];
        eps[1].observe(Duration::from_millis(50));
        let fast = (0..1000)
            .filter(|_| pick(&eps).expect("some").addr.port() == 1)
            .count();
        // With two endpoints p2c always compares both, so the fast one always wins.
        assert_eq!(fast, 1000);
    }

    #[test]
    fn requests_in_flight_shift_load_away() {
        let eps = vec![ep(1), ep(2)];
        let _busy: Vec<InFlight> = (0..3).map(|_| eps[0].start()).collect();
        assert_eq!(pick(&eps).expect("some").addr.port(), 2);
    }

    #[test]
    fn improvements_decay_in_and_peaks_count_at_once() {
        let e = ep(1);
        e.observe(Duration::from_micros(8000));
        assert_eq!(e.ewma_us.load(Relaxed), 8000);
        e.observe(Duration::from_micros(0));
        assert_eq!(e.ewma_us.load(Relaxed), 6000);
    }

    #[test]
    fn no_endpoints_means_no_pick() {
        assert!(pick(&[]).is_none());
    }
}
