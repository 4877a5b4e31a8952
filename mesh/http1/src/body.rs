//! Request bodies as the listeners hand them to the [`crate::Handler`]: read from an HTTP/1.1
//! connection by this crate ([`H1RequestBody`]), or an h2c stream of hyper's HTTP/2 server.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;

use crate::BoxError;
use crate::codec::{Framing, Progress};
use crate::conn::Shared;
use crate::idle::IdleWatch;

/// A request body as a client sends it to the proxy.
pub enum ClientBody {
    /// No body (most requests).
    Empty,
    /// Read from an HTTP/1.1 client connection by the proxy's own server.
    H1(H1RequestBody),
    /// An h2c stream's body.
    H2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(b) => Pin::new(b).poll_frame(cx),
            ClientBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::H2(b) => b.size_hint(),
        }
    }
}

/// is read and hands it back when it ends; dropped before the end, the connection is closed
/// after the response (the rest of the body is still on the wire).
pub struct H1RequestBody {
    pub(crate) shared: Arc<Shared>,
    pub(crate) buf: BytesMut,
    pub(crate) state: Framing,
    /// `100 Continue` is owed before the first read.
    pub(crate) cont: bool,
    pub(crate) back: Option<oneshot::Sender<BytesMut>>,
    /// Fails the body when the client pauses for longer than the body idle timeout.
    pub(crate) idle: IdleWatch,
}

impl H1RequestBody {
    fn finish(&mut self) {
        self.state = Framing::Done;
        if let Some(tx) = self.back.take() {
            let _ = tx.send(std::mem::take(&mut self.buf));
        }
    }

    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = Framing::Done;
        self.back = None;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl Body for H1RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.cont {
            if let Err(e) = ready!(this.shared.poll_continue(cx)) {
                return this.fail(e);
            }
            this.cont = false;
        }
        loop {
            match this.state.step(&mut this.buf) {
                Err(e) => return this.fail(e),
                Ok(Progress::Frame { frame, last }) => {
                    if last {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Progress::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Progress::More) => {}
            }
            let read = match this.shared.poll_read(cx, &mut this.buf) {
                Poll::Ready(r) => {
                    this.idle.progress();
                    r
                }
                Poll::Pending => {
                    if this.idle.expired(cx) {
                        return this.fail(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client sent no request body bytes for the body idle timeout",
                        ));
                    }
                    return Poll::Pending;
                }
            };
            match read {
                Ok(0) => {
                    return this.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "client closed the connection in the middle of the request body",
                    ));
                }
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state.is_end()
    }

    fn size_hint(&self) -> SizeHint {
        self.state.size_hint()
    }
}
