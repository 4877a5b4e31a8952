//! HTTP/2 (h2c) upstream connections, on the `h2` crate directly.
//!
//! Why not hyper's HTTP/2 client: it hides the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`, so a
//! pool cannot tell when a connection is full (requests past the limit just queue behind the
//! open streams), and its default windows (5 MiB per connection, 2 MiB per stream) let three
//! stalled downloads take a whole connection's window. Here each connection reports its
//! in-flight streams and the peer's limit to the pool ([`crate::pool`]), every stream buffers at
//! most [`STREAM_WINDOW`] bytes the client has not taken yet, and the connection window is
//! large enough for every stream it may carry, so one slow reader never stalls another's stream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ReqBody};
use crate::io::CountingIo;

/// Most streams the proxy opens on one upstream connection, whatever the peer allows: past
/// it another connection is opened (and before the peer's SETTINGS arrive, the limit in force).
pub const MAX_STREAMS_PER_CONN: usize = 100;
/// Per-stream receive window: the most response data buffered for a client that does not
/// read. With the client side's 100 streams per connection, a client connection that reads
/// nothing holds about 100 × 128 KiB; at 256 KiB and hyper's 200 streams it held 62 MiB. A
/// stream still moves 128 KiB per round trip to its client (over 100 MB/s at 1 ms).
pub const STREAM_WINDOW: u32 = 128 * 1024;
/// Connection receive window: room for every stream of a full connection, so streams whose
/// clients stall cannot use up the window the others need.
pub const CONN_WINDOW: u32 = STREAM_WINDOW * MAX_STREAMS_PER_CONN as u32;

/// One upstream h2 connection.
pub struct H2Conn {
    send: h2::client::SendRequest<Bytes>,
    /// Streams opened through the pool and not finished.
    in_flight: AtomicUsize,
    /// The connection task ended (GOAWAY, error, the upstream closed).
    closed: Arc<AtomicBool>,
    /// Pool sweeps seen with no stream in flight.
    pub(crate) idle_sweeps: AtomicU32,
}

/// Why an h2 session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The preface exchange failed.
    #[error("{0}")]
    H2(#[from] h2::Error),
    /// The peer did not answer with its SETTINGS in time.
    #[error("no SETTINGS from the upstream in time")]
    NoSettings,
}

/// A stream slot on a connection, held from the request until its response body ends.
pub struct Slot(Arc<H2Conn>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl H2Conn {
    /// Opens the h2 session on a connected stream, spawns its connection task, and waits
    /// (up to `timeout`) until the peer's SETTINGS are known, so its stream limit is.
    pub async fn handshake(
        io: CountingIo,
        timeout: std::time::Duration,
    ) -> Result<Arc<H2Conn>, HandshakeError> {
        let (send, mut conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_concurrent_reset_streams(MAX_STREAMS_PER_CONN)
            // Nothing would ever take a pushed stream: each would hold its header block and
            // a window of data (and the connection's window) until the connection closed.
            // With push off, a PUSH_PROMISE is a protocol error.
            .enable_push(false)
            // An HTTP/1.1 upstream's response head is refused above this too (h2's default is
            // 16 MiB per stream, and a head that size would only break the client's
            // connection further on).
            .max_header_list_size(serin_http1::MAX_HEAD as u32)
            .handshake::<_, Bytes>(io)
            .await?;
        let ping = conn.ping_pong();
        let closed = Arc::new(AtomicBool::new(false));
        let done = closed.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended with an error");
            }
            done.store(true, Relaxed);
        });
        // A server sends its SETTINGS first, so once our PING is answered they have been
        // applied: the connection's stream limit is the peer's, not the default.
        if let Some(mut ping) = ping {
            match tokio::time::timeout(timeout, ping.ping(h2::Ping::opaque())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(HandshakeError::H2(e)),
                Err(_) => return Err(HandshakeError::NoSettings),
            }
        }
        Ok(Arc::new(H2Conn {
            send,
            in_flight: AtomicUsize::new(0),
            closed,
            idle_sweeps: AtomicU32::new(0),
        }))
    }

    /// The connection can no longer carry streams.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Streams in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// How many streams this connection may carry: the peer's limit, at most
    /// [`MAX_STREAMS_PER_CONN`].
    pub fn limit(&self) -> usize {
        self.send
            .current_max_send_streams()
            .min(MAX_STREAMS_PER_CONN)
    }

    /// Takes a stream slot when the connection is open and below its limit.
    pub fn try_slot(self: &Arc<Self>) -> Option<Slot> {
        if self.is_closed() {
            return None;
        }
        let limit = self.limit();
        self.in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .ok()?;
        self.idle_sweeps.store(0, Relaxed);
        Some(Slot(self.clone()))
    }
}

/// Why an h2 exchange failed.
pub enum H2Failure {
    /// Refused before the request was sent (connection going away): the request is returned
    /// so it can go out on another connection.
    NotSent(Box<Request<ReqBody>>, h2::Error),
    /// Failed after the request went out.
    Failed(h2::Error),
}

/// Sends `req` on `slot`'s connection; the response body keeps the slot until it ends.
pub async fn send(slot: Slot, req: Request<ReqBody>) -> Result<Response<H2Body>, H2Failure> {
    let mut tx = match slot.0.send.clone().ready().await {
        Ok(tx) => tx,
        Err(e) => return Err(H2Failure::NotSent(Box::new(req), e)),
    };
    let (parts, body) = req.into_parts();
    let end = body.is_end_stream();
    let head = Request::from_parts(parts, ());
    let (resp, stream) = tx.send_request(head, end).map_err(H2Failure::Failed)?;
    if !end {
        tokio::spawn(pump(body, stream));
    }
    let resp = resp.await.map_err(H2Failure::Failed)?;
    Ok(resp.map(|recv| H2Body {
        recv,
        data_done: false,
        ended: false,
        _slot: slot,
    }))
}

/// Streams a request body to the upstream as its flow-control window allows.
async fn pump(mut body: ReqBody, mut stream: h2::SendStream<Bytes>) {
    loop {
        let frame = match body.frame().await {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "request body failed; resetting the upstream stream");
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            Some(Ok(f)) => f,
        };
        let mut data = match frame.into_data() {
            Ok(d) => d,
            Err(f) => {
                if let Ok(t) = f.into_trailers() {
                    let _ = stream.send_trailers(t);
                    return;
                }
                continue;
            }
        };
        while !data.is_empty() {
            stream.reserve_capacity(data.len());
            let got = std::future::poll_fn(|cx| stream.poll_capacity(cx)).await;
            match got {
                Some(Ok(n)) if n > 0 => {
                    let piece = data.split_to(n.min(data.len()));
                    if stream.send_data(piece, false).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                // The stream was reset or the connection went away.
                _ => return,
            }
        }
    }
}

/// A response body read from an upstream h2 stream. Received data is released back to the
/// upstream's flow-control window only as the client takes it.
pub struct H2Body {
    recv: h2::RecvStream,
    data_done: bool,
    ended: bool,
    _slot: Slot,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => this.data_done = true,
            }
        }
        let trailers: Option<HeaderMap> = match ready!(this.recv.poll_trailers(cx)) {
            Ok(t) => t,
            Err(e) => {
                this.ended = true;
                return Poll::Ready(Some(Err(e.into())));
            }
        };
        this.ended = true;
        Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
