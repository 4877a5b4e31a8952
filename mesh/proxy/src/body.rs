//! Request and response bodies the proxy passes through.
//!
//! - [`ClientBody`] is a client's request body: read by the proxy's own HTTP/1.1 server
//!   (`serin_http1`) or an h2c stream of hyper's HTTP/2 server.
//! - [`ReqBody`] is what goes upstream: the client's body as is, a tee that copies it to a
//!   mirror without ever waiting for the mirror, or the mirror's copy.
//! - [`ResBody`] is what goes back to the client: the upstream body, observed so the response is
//!   counted (with its gRPC status from trailers) when it ends, fails or is dropped; or a short
//!   body the proxy wrote itself.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::balance::InFlight;
use crate::h1::H1Body;
use crate::h2::H2Body;
use crate::metrics::{ErrorKind, Outcome, StatusSeriesPair};

pub use serin_http1::{BoxError, ClientBody, IdleWatch};

/// How many frames a mirror may lag behind the real request before its copy is abandoned.
const MIRROR_BUFFER_FRAMES: usize = 16;

/// A body sent upstream.
pub enum ReqBody {
    /// The client's body, unchanged.
    Incoming(ClientBody),
    /// The client's body, copied frame by frame to a mirror.
    Tee {
        /// The client's body.
        inner: ClientBody,
        /// Where copies go; dropped as soon as the mirror falls behind or goes away.
        tx: Option<mpsc::Sender<Frame<Bytes>>>,
        /// Set when the copy is given up before the real body ended.
        abandoned: Arc<AtomicBool>,
    },
    /// A mirror's copy of a client body. When the copy was abandoned it ends with an error, so
    /// the mirror's upstream sees a broken request, never a complete but truncated one.
    Mirror {
        /// Copies of the client's frames.
        rx: mpsc::Receiver<Frame<Bytes>>,
        /// Shared with the [`ReqBody::Tee`].
        abandoned: Arc<AtomicBool>,
    },
    /// No body.
    Empty,
    /// A body that says when the client has sent all of it (the route timeout starts then),
    /// and since when the upstream side has not asked for more.
    Watched {
        /// The body.
        inner: Box<ReqBody>,
        /// Fired (or dropped) once the body has ended, failed or is no longer read.
        done: Option<tokio::sync::oneshot::Sender<()>>,
        /// Since when the upstream sender has not asked for more.
        handed: Handed,
    },
}

/// The watch on a request body going upstream (see [`ReqBody::watched`]).
pub struct BodyWatch {
    /// Resolves once the client's body has been read to its end (or failed, or was dropped).
    pub sent: tokio::sync::oneshot::Receiver<()>,
    /// Whether the upstream side keeps taking the body.
    pub handed: Handed,
}

/// When the last piece of a request body was handed to the upstream sender, while the sender
/// has not asked for the next one.
#[derive(Clone, Default)]
pub struct Handed(Arc<Mutex<Option<Instant>>>);

impl Handed {
    fn set(&self, at: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    /// Resolves once the upstream side has taken no piece of the body for `idle`: the sender
    /// asks for the next piece as soon as the last one is written (or, over h2, fits the
    /// stream's flow-control window), so a piece handed over and not followed by a request
    /// for the next means an upstream that stopped reading. Time the client takes to send
    /// does not count (the sender is asking then); the client's pauses have their own idle
    /// timeout in `serin_http1`.
    pub async fn upstream_stalled(&self, idle: Duration) {
        loop {
            let handed = *self.0.lock().unwrap_or_else(|p| p.into_inner());
            let wake = match handed {
                Some(at) if at.elapsed() >= idle => return,
                Some(at) => at + idle,
                None => Instant::now() + idle,
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

impl ReqBody {
    /// Wraps `self` so that the returned [`BodyWatch`] tells when the body has been read to its
    /// end and whether the upstream stopped taking it; None for a body that is already
    /// complete.
    pub fn watched(self) -> (ReqBody, Option<BodyWatch>) {
        if self.is_end_stream() {
            return (self, None);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handed = Handed::default();
        let body = ReqBody::Watched {
            inner: Box::new(self),
            done: Some(tx),
            handed: handed.clone(),
        };
        (body, Some(BodyWatch { sent: rx, handed }))
    }

    /// Splits a client body into one for the real request and a copy for a mirror. An empty
    /// body is not teed at all.
    pub fn tee(inner: ClientBody) -> (ReqBody, ReqBody) {
        if inner.is_end_stream() {
            return (ReqBody::Incoming(inner), ReqBody::Empty);
        }
        let (tx, rx) = mpsc::channel(MIRROR_BUFFER_FRAMES);
        let abandoned = Arc::new(AtomicBool::new(false));
        (
            ReqBody::Tee {
                inner,
                tx: Some(tx),
                abandoned: abandoned.clone(),
            },
            ReqBody::Mirror { rx, abandoned },
        )
    }
}

/// The error a mirror copy ends with when it was abandoned (the mirror fell behind, or the
/// real request's body broke).
#[derive(Debug, thiserror::Error)]
#[error("mirror copy abandoned: the mirror fell behind or the real request's body broke")]
pub struct MirrorAbandoned;

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Tee {
                inner,
                tx,
                abandoned,
            } => {
                let frame = ready!(Pin::new(inner).poll_frame(cx));
                if let Some(Ok(f)) = &frame
                    && let Some(sender) = tx
                {
                    let copy = if let Some(d) = f.data_ref() {
                        Some(Frame::data(d.clone()))
                    } else {
                        f.trailers_ref().map(|t| Frame::trailers(t.clone()))
                    };
                    // Never wait for the mirror: if it cannot take the frame now, stop copying
                    // (its request then ends with an error and is discarded).
                    if let Some(c) = copy
                        && sender.try_send(c).is_err()
                    {
                        abandoned.store(true, Ordering::Release);
                        *tx = None;
                    }
                }
                match &frame {
                    Some(Ok(_)) => {}
                    // The real body broke: so does the copy.
                    Some(Err(_)) => {
                        if tx.take().is_some() {
                            abandoned.store(true, Ordering::Release);
                        }
                    }
                    // The real body ended: the copy ends cleanly after its last frame.
                    None => *tx = None,
                }
                Poll::Ready(frame)
            }
            ReqBody::Mirror { rx, abandoned } => Poll::Ready(match ready!(rx.poll_recv(cx)) {
                Some(f) => Some(Ok(f)),
                None if abandoned.load(Ordering::Acquire) => Some(Err(Box::new(MirrorAbandoned))),
                None => None,
            }),
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Watched {
                inner,
                done,
                handed,
            } => {
                // Asked for the next piece: the upstream took the last one.
                handed.set(None);
                let frame = ready!(Pin::new(&mut **inner).poll_frame(cx));
                if matches!(frame, Some(Ok(_))) {
                    handed.set(Some(Instant::now()));
                }
                let ended = match &frame {
                    Some(Ok(f)) => f.is_trailers() || inner.is_end_stream(),
                    _ => true,
                };
                if ended && let Some(tx) = done.take() {
                    let _ = tx.send(());
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Incoming(b) => b.is_end_stream(),
            ReqBody::Tee { inner, .. } => inner.is_end_stream(),
            ReqBody::Mirror { .. } => false,
            ReqBody::Empty => true,
            ReqBody::Watched { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Incoming(b) => b.size_hint(),
            ReqBody::Tee { inner, .. } => inner.size_hint(),
            ReqBody::Mirror { .. } => SizeHint::default(),
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Watched { inner, .. } => inner.size_hint(),
        }
    }
}

/// Counts one response in `response_total` exactly once: at end of stream, on a stream error, or
/// when the body is dropped unfinished (client gone, or a body nobody polls like HEAD's).
pub struct Recorder {
    series: StatusSeriesPair,
    /// When the request's headers were received, until the response's latency is recorded:
    /// at its first data frame, or at its end when it has none (Linkerd's time to first byte,
    /// so a server that answers its headers at once and its body slowly reads as slow).
    started: Option<Instant>,
    status: u16,
    /// gRPC status from the response headers (trailers-only responses).
    grpc_status: Option<u32>,
    is_grpc: bool,
    done: bool,
    // Held so the endpoint counts the request in flight until its response body is finished.
    _in_flight: Option<InFlight>,
}

impl Recorder {
    /// A recorder for a response with `status` and `headers` from upstream to a request whose
    /// headers were received at `started` (`None`: its latency is already recorded), counted
    /// in `series` (the status code's series of its route).
    pub fn new(
        series: StatusSeriesPair,
        started: Option<Instant>,
        status: u16,
        headers: &HeaderMap,
        in_flight: Option<InFlight>,
    ) -> Self {
        let is_grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        Recorder {
            series,
            started,
            status,
            // Only gRPC responses carry one that counts; skip the lookup for the others.
            grpc_status: if is_grpc { grpc_status(headers) } else { None },
            is_grpc,
            done: false,
            _in_flight: in_flight,
        }
    }

    /// Records the latency, once: called at the first data frame and at the end.
    fn first_byte(&mut self) {
        if let Some(started) = self.started.take() {
            self.series.observe(started.elapsed());
        }
    }

    fn finish(&mut self, grpc_status: Option<u32>, error: Option<ErrorKind>) {
        if self.done {
            return;
        }
        self.done = true;
        self.first_byte();
        let grpc_status = grpc_status.or(self.grpc_status);
        self.series.response(Outcome {
            status: self.status,
            grpc_status: if self.is_grpc { grpc_status } else { None },
            error,
        });
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish(None, None);
    }
}

fn grpc_status(h: &HeaderMap) -> Option<u32> {
    Some(crate::metrics::grpc_status_code(
        h.get("grpc-status")?.as_bytes(),
    ))
}

/// A response body from an upstream.
pub enum UpstreamBody {
    /// From an HTTP/1.1 connection of the proxy's own client.
    H1(H1Body),
    /// From an h2c stream.
    H2(H2Body),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::H2(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H1(b) => b.is_end_stream(),
            UpstreamBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H1(b) => b.size_hint(),
            UpstreamBody::H2(b) => b.size_hint(),
        }
    }
}

/// An upstream body sent nothing for the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?}")]
pub struct BodyIdle(pub Duration);

/// A body sent back to the client.
// Nearly every response is the large variant; boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum ResBody {
    /// An upstream body, observed.
    Upstream {
        /// The upstream body.
        inner: UpstreamBody,
        /// Counts the response when it ends.
        rec: Recorder,
        /// Fails the body when the upstream sends nothing for too long.
        idle: IdleWatch,
    },
    /// A body the proxy wrote (errors, admin pages); already counted if it needed to be.
    Full(Option<Bytes>),
}

impl ResBody {
    /// A complete body from bytes.
    pub fn full(b: impl Into<Bytes>) -> Self {
        ResBody::Full(Some(b.into()))
    }
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResBody::Upstream { inner, rec, idle } => {
                let frame = match Pin::new(inner).poll_frame(cx) {
                    Poll::Ready(f) => {
                        idle.progress();
                        f
                    }
                    Poll::Pending => {
                        if idle.expired(cx) {
                            rec.finish(None, Some(ErrorKind::IdleTimeout));
                            return Poll::Ready(Some(Err(Box::new(BodyIdle(idle.timeout())))));
                        }
                        return Poll::Pending;
                    }
                };
                match &frame {
                    None => rec.finish(None, None),
                    Some(Ok(f)) => {
                        if f.is_data() {
                            rec.first_byte();
                        } else if let Some(t) = f.trailers_ref() {
                            rec.finish(grpc_status(t), None);
                        }
                    }
                    Some(Err(_)) => rec.finish(None, Some(ErrorKind::Stream)),
                }
                Poll::Ready(frame)
            }
            ResBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResBody::Upstream { inner, .. } => inner.is_end_stream(),
            ResBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResBody::Upstream { inner, .. } => inner.size_hint(),
            ResBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}
