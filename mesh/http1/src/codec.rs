//! How an HTTP/1.1 message body is delimited (RFC 9112 §6.3) and read: one state machine for
//! the request bodies the server side reads and the response bodies the proxy's upstream
//! client reads.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use hyper::body::{Frame, SizeHint};

/// Longest chunk-size line accepted.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Largest trailer section accepted.
pub const MAX_TRAILERS: usize = 64 * 1024;
/// Most trailer fields accepted.
pub const MAX_TRAILER_FIELDS: usize = 100;

/// Why a body's framing cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// The bytes break the framing rules (chunk size, CRLF after data, ...).
    #[error("invalid body framing: {0}")]
    Invalid(&'static str),
    /// The trailer section does not parse.
    #[error("invalid trailers: {0}")]
    Trailers(#[from] httparse::Error),
    /// The trailer section is larger than [`MAX_TRAILERS`].
    #[error("trailers larger than {MAX_TRAILERS} bytes")]
    TrailersTooLarge,
}

/// Where chunked framing is.
#[derive(Debug, Clone, Copy)]
pub enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailers up to an empty line.
    Trailers,
}

/// How a message body is delimited (RFC 9112 §6.3), and how far it has been read. One state
/// machine for the request bodies the server side reads ([`crate::body`]) and the response
/// bodies the proxy's upstream client reads; only a response can run to the connection's close.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    /// `content-length`: bytes left.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked(ChunkState),
    /// Until the connection closes (responses only).
    Close,
    /// Read to the end.
    Done,
}

/// What the buffered bytes gave a body, from [`Framing::step`].
pub enum Progress {
    /// A data or trailers frame; `last` when the body ends with it.
    Frame { frame: Frame<Bytes>, last: bool },
    /// The body has ended.
    End,
    /// More bytes are needed (for `Close`, the connection's end is the body's end).
    More,
}

impl Framing {
    /// Takes the next frame out of `buf`, if the bytes there make one.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Progress, FramingError> {
        Ok(match self {
            Framing::Done | Framing::Length(0) => Progress::End,
            Framing::Length(left) => match take_length(buf, left) {
                Some(data) => Progress::Frame {
                    frame: Frame::data(data),
                    last: *left == 0,
                },
                None => Progress::More,
            },
            Framing::Close if buf.is_empty() => Progress::More,
            Framing::Close => Progress::Frame {
                frame: Frame::data(buf.split().freeze()),
                last: false,
            },
            Framing::Chunked(state) => match step_chunked(buf, state)? {
                Some(Some(frame)) => Progress::Frame {
                    last: frame.is_trailers(),
                    frame,
                },
                Some(None) => Progress::End,
                None => Progress::More,
            },
        })
    }

    /// Nothing is left to read.
    pub fn is_end(&self) -> bool {
        matches!(self, Framing::Length(0) | Framing::Done)
    }

    /// The body's size, when the framing tells it.
    pub fn size_hint(&self) -> SizeHint {
        match *self {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Makes progress on chunked framing (RFC 9112 §7.1) with what is buffered in `buf`:
/// `Ok(Some(Some(frame)))` a data or trailers frame, `Ok(Some(None))` the end without trailers,
/// `Ok(None)` more bytes are needed.
pub fn step_chunked(
    buf: &mut BytesMut,
    state: &mut ChunkState,
) -> Result<Option<Option<Frame<Bytes>>>, FramingError> {
    loop {
        match *state {
            ChunkState::Size => {
                let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(FramingError::Invalid("chunk-size line too long"));
                    }
                    return Ok(None);
                };
                let line = &buf[..eol];
                // A bare CR or LF inside the line (in an extension, say) is read as a line end
                // by some parsers and not by others.
                if line.iter().any(|b| *b == b'\n' || *b == b'\r') {
                    return Err(FramingError::Invalid("bare CR or LF in a chunk-size line"));
                }
                let size = line.split(|b| *b == b';').next().unwrap_or_default();
                // RFC 9112 §7.1: 1*HEXDIG, then optional whitespace before an extension. Signs
                // and leading blanks are refused, as other parsers refuse them: two parsers
                // reading one body differently is how requests get smuggled.
                let digits = size.trim_ascii_end();
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
                    return Err(FramingError::Invalid("invalid chunk size"));
                }
                // At most 2^63 - 1, as nginx and HAProxy (an off_t): a larger size is either an
                // attack or two parsers disagreeing about where the body ends.
                let size = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .filter(|n| *n <= i64::MAX as u64)
                    .ok_or(FramingError::Invalid("invalid chunk size"))?;
                buf.advance(eol + 2);
                *state = if size == 0 {
                    ChunkState::Trailers
                } else {
                    ChunkState::Data(size)
                };
            }
            ChunkState::Data(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (buf.len() as u64).min(left) as usize;
                let data = buf.split_to(n).freeze();
                let left = left - n as u64;
                *state = if left == 0 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left)
                };
                return Ok(Some(Some(Frame::data(data))));
            }
            ChunkState::DataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(FramingError::Invalid("missing CRLF after chunk data"));
                }
                buf.advance(2);
                *state = ChunkState::Size;
            }
            ChunkState::Trailers => {
                // httparse ends a line at a bare LF; hyper (and nginx) do not, and read on to
                // the next CRLF CRLF. After the last chunk that would make the two disagree on
                // where the message ends (`0\r\n\n` then a second request: one reads that
                // request, the other swallows it as trailers), so a bare LF here is refused.
                let section = if buf.starts_with(b"\r\n") {
                    2
                } else {
                    buf.windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(buf.len(), |at| at + 4)
                };
                let bare_lf =
                    (0..section).any(|i| buf[i] == b'\n' && (i == 0 || buf[i - 1] != b'\r'));
                if bare_lf {
                    return Err(FramingError::Invalid("bare LF in the trailer section"));
                }
                let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                match httparse::parse_headers(buf, &mut slots)? {
                    httparse::Status::Partial => {
                        if buf.len() > MAX_TRAILERS {
                            return Err(FramingError::TrailersTooLarge);
                        }
                        return Ok(None);
                    }
                    httparse::Status::Complete((len, parsed)) => {
                        let mut trailers = HeaderMap::new();
                        for h in parsed {
                            if let (Ok(n), Ok(v)) = (
                                HeaderName::from_bytes(h.name.as_bytes()),
                                HeaderValue::from_bytes(h.value),
                            ) && trailer_allowed(&n)
                            {
                                trailers.append(n, v);
                            }
                        }
                        buf.advance(len);
                        return Ok(Some(if trailers.is_empty() {
                            None
                        } else {
                            Some(Frame::trailers(trailers))
                        }));
                    }
                }
            }
        }
    }
}

/// Whether a field may travel as a trailer. RFC 9110 §6.5.1: framing, routing, hop-by-hop and
/// content-processing fields sent as trailers would change a message whose head was already
/// acted on, so they are dropped, never forwarded.
pub fn trailer_allowed(n: &HeaderName) -> bool {
    use http::header;
    ![
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::HOST,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::CONTENT_ENCODING,
        header::CONTENT_TYPE,
        header::CONTENT_RANGE,
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::WWW_AUTHENTICATE,
        header::SET_COOKIE,
        header::COOKIE,
        header::EXPECT,
        header::RANGE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::MAX_FORWARDS,
        header::CACHE_CONTROL,
    ]
    .contains(n)
        && n.as_str() != "keep-alive"
        && n.as_str() != "proxy-connection"
}

/// Whether a `Connection` value names headers beyond `close` and `keep-alive`: those have to
/// be stripped before forwarding, so the header must stay in the map until then. Without
/// them the header is hop-by-hop and fully read at parse time, and is not stored at all.
pub fn connection_names_others(v: &[u8]) -> bool {
    v.split(|b| *b == b',').map(<[u8]>::trim_ascii).any(|t| {
        !t.is_empty() && !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive")
    })
}

/// Takes up to `left` buffered bytes of a length-framed body (`None` when nothing is
/// buffered), counting them off `left`.
fn take_length(buf: &mut BytesMut, left: &mut u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = (buf.len() as u64).min(*left) as usize;
    *left -= n as u64;
    Some(buf.split_to(n).freeze())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_routing_and_hop_by_hop_fields_are_dropped_from_trailers() {
        let mut buf = BytesMut::from(
            &b"0\r\ncontent-length: 5\r\nhost: evil\r\ntransfer-encoding: chunked\r\nconnection: close\r\ngrpc-status: 0\r\n\r\n"[..],
        );
        let mut state = ChunkState::Size;
        let frame = step_chunked(&mut buf, &mut state)
            .expect("parses")
            .expect("complete")
            .expect("trailers");
        let t = frame.into_trailers().expect("trailers frame");
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t["grpc-status"], "0");
    }

    #[test]
    fn a_bare_lf_in_the_trailer_section_is_refused() {
        // Found by the differential fuzz run: httparse ended the message at `0\r\n\n`, hyper
        // read the next request's head as trailers.
        for bad in [
            &b"0\r\n\nPOST / HTTP/1.1\r\nhost: h\r\n\r\n"[..],
            &b"0\r\nx-t: 1\n\r\n"[..],
            &b"0\r\nx-t: 1\r\n\n"[..],
        ] {
            let mut buf = BytesMut::from(bad);
            let mut state = ChunkState::Size;
            let mut result = Ok(None);
            for _ in 0..4 {
                result = step_chunked(&mut buf, &mut state);
                if !matches!(result, Ok(None)) {
                    break;
                }
            }
            assert!(
                matches!(result, Err(FramingError::Invalid(_))),
                "{:?}: {result:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut buf = BytesMut::from(&b"0\r\nx-t: 1\r\n\r\nGET / HTTP/1.1\r\n"[..]);
        let mut state = ChunkState::Size;
        let frame = step_chunked(&mut buf, &mut state)
            .expect("parses")
            .expect("complete")
            .expect("trailers");
        assert!(frame.is_trailers());
        assert_eq!(
            &buf[..],
            b"GET / HTTP/1.1\r\n",
            "the next request is left unread"
        );
    }

    #[test]
    fn chunk_sizes_are_hex_digits_only() {
        let size = |line: &str| {
            let mut buf = BytesMut::from(format!("{line}\r\n").as_bytes());
            let mut state = ChunkState::Size;
            step_chunked(&mut buf, &mut state).map(|_| ())
        };
        for ok in ["5", "a", "0005", "5 ;ext=1", "5;ext"] {
            assert!(size(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "+5",
            " 5",
            "-5",
            "0x5",
            "",
            "5g",
            "1ffffffffffffffff",
            "ffffffffffffffff",
            "8000000000000000",
            "5;ext=a\nb",
        ] {
            assert!(
                matches!(size(bad), Err(FramingError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
