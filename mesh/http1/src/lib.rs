//! `serin-http1`: serin-proxy's own HTTP/1.1 codec and client-connection code.
//!
//! It is the wire side of the proxy's outbound and inbound listeners: one task per accepted
//! connection reads into one buffer, parses request heads ([`head`]), lends the socket to the
//! request body ([`body`]), hands each request to a [`Handler`], and writes the response
//! ([`encode`]), pipelined requests in order ([`conn`]), and turns a connection whose upstream
//! switched protocols (WebSocket) into a tunnel ([`upgrade`]). A connection that opens with the
//! HTTP/2 preface goes to hyper's HTTP/2 server instead ([`h2`]). The body framing state
//! machine ([`codec`]) also serves the proxy's upstream HTTP/1.1 client.
//!
//! It is not a proxy: no routing, no upstream connections, no metrics registry (connections
//! and bytes are reported through [`io::TcpObserver`]). Kept apart so it can be fuzzed and
//! tested on its own: `tests/differential.rs` feeds the same bytes (a committed corpus of
//! request-smuggling shapes, then generated and mutated requests for `SERIN_FUZZ_SECS`) to this
//! reader, to a whole served connection and to hyper's HTTP/1.1 server, and fails when they
//! accept a request but disagree on its method, target or body, that is, on where it ends. The
//! same oracle drives the coverage-guided `cargo fuzz` targets in `fuzz/` (head parser, chunked
//! decoder, whole connection; nightly).

pub mod body;
pub mod codec;
pub mod conn;
pub mod encode;
pub mod h2;
pub mod head;
pub mod idle;
pub mod io;
pub mod stop;
pub mod upgrade;

pub use body::{ClientBody, H1RequestBody};
pub use conn::{HEAD_TIMEOUT, Handler, serve_connection};
pub use h2::{H2Options, H2Server};
pub use head::{MAX_HEAD, MAX_HEADERS};
pub use idle::IdleWatch;
pub use io::{CountingIo, Opened, TcpObserver};
pub use stop::StopSignal;
pub use upgrade::{Tunnel, UpgradeRequested, Upgraded};

/// Errors a body may yield.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
