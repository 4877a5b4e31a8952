//! HTTP/1.1 protocol upgrades (RFC 9110 §7.8), what WebSocket needs from a proxy: the
//! handshake is forwarded as a request, and once the upstream answers `101 Switching
//! Protocols` both connections become one opaque tunnel, bytes copied each way until both
//! sides are done.
//!
//! The server marks a request it can tunnel with [`UpgradeRequested`] (HTTP/1.1, `Connection:
//! upgrade`, an `Upgrade` other than `h2c`, no body); the handler forwards the handshake and,
//! when the upstream switched, puts the upstream connection in the `101` response as
//! [`Upgraded`]. `Upgrade: h2c` is never tunnelled: the proxy speaks HTTP/2 itself (prior
//! knowledge), so such a request is served as plain HTTP/1.1, as RFC 9113 §3.1 allows.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderMap;
use http::header;

use crate::io::CountingIo;

/// Request extension: the client asked to switch protocols and the connection can be handed
/// over if the upstream agrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeRequested;

/// Response extension of a `101`: the upstream connection, now speaking the new protocol.
/// (Extensions must be `Clone`; the connection is taken once, by the server.)
#[derive(Clone)]
pub struct Upgraded(Arc<Mutex<Option<Tunnel>>>);

/// The upstream side of a tunnel.
pub struct Tunnel {
    /// The upstream connection (its bytes still counted).
    pub io: CountingIo,
    /// Bytes the upstream sent right after its `101` head, for the client first.
    pub read_first: Bytes,
}

impl Upgraded {
    /// Wraps the upstream side of a switched connection.
    pub fn new(io: CountingIo, read_first: Bytes) -> Self {
        Upgraded(Arc::new(Mutex::new(Some(Tunnel { io, read_first }))))
    }

    /// Takes the upstream side (once).
    pub fn take(&self) -> Option<Tunnel> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Whether `headers` ask for a protocol the proxy may tunnel: an `Upgrade` field naming
/// anything but `h2c`.
pub fn tunnelable(headers: &HeaderMap) -> bool {
    let mut any = false;
    for v in headers.get_all(header::UPGRADE) {
        for p in v.as_bytes().split(|b| *b == b',') {
            let p = p.trim_ascii();
            if p.is_empty() {
                continue;
            }
            // `h2c` (any version suffix is not a thing, but be strict on the name).
            if p.eq_ignore_ascii_case(b"h2c") {
                return false;
            }
            any = true;
        }
    }
    any
}
