//! Response encoding (RFC 9112 §4-7): the framing a response gets on the wire, its head, chunk
//! size lines and the last chunk with trailers. Numbers and dates without formatting
//! machinery (`itoa`, `httpdate`, the date cached per second and thread).

use http::header::{self, HeaderMap};
use http::{StatusCode, Version};

/// How a response body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// `content-length`: bytes left to send.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, length unknown).
    Close,
}

/// What decides a response's framing besides its headers.
#[derive(Debug, Clone, Copy)]
pub struct Framed {
    /// HEAD request, 1xx, 204 or 304: no body whatever the headers say.
    pub no_body: bool,
    /// The body's exact size when known.
    pub exact: Option<u64>,
    /// The request's version (HTTP/1.0 clients get no chunked encoding).
    pub req_version: Version,
}

/// Whether a response to a request with this method has no body.
pub fn has_no_body(head_method: bool, status: StatusCode) -> bool {
    head_method
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Chooses the framing of a response and encodes its head into `out` (cleared first). A
/// length the headers state wins, else the body's exact size, else chunked for HTTP/1.1
/// clients and the connection's end for HTTP/1.0 ones (which clears `keep_alive`). The
/// upstream's `transfer-encoding` and `connection` are never copied: the proxy decides the
/// framing and the connection's fate itself.
pub fn response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framed: Framed,
    keep_alive: &mut bool,
) -> Out {
    let declared = content_length(headers);
    let framing = if framed.no_body {
        Out::Length(0)
    } else if let Some(n) = declared {
        Out::Length(n)
    } else if let Some(n) = framed.exact {
        Out::Length(n)
    } else if framed.req_version == Version::HTTP_11 {
        Out::Chunked
    } else {
        *keep_alive = false;
        Out::Close
    };
    out.clear();
    // Grown once, not doubled from a few bytes on the way (a connection's buffer is new after
    // it was released while idle): the status line, the fields the proxy adds, and a
    // typical field per header.
    out.reserve(128 + 64 * headers.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    for (name, value) in headers {
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        has_date |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !framed.no_body && declared.is_none() {
        match framing {
            Out::Length(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Out::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Out::Close => {}
        }
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&date_now());
        out.extend_from_slice(b"\r\n");
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // Only sent for an upgrade the client asked for; the connection is a tunnel now.
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if !*keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if framed.req_version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// The `content-length` a header map states, if it is a plain number.
pub fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `{len:x}\r\n` without formatting machinery.
pub fn chunk_size_line(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len() - 2;
    buf[i] = b'\r';
    buf[i + 1] = b'\n';
    loop {
        i -= 1;
        buf[i] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Appends the last chunk and, when the client accepts them, the trailers.
pub fn last_chunk(out: &mut Vec<u8>, trailers: &HeaderMap, send_trailers: bool) {
    out.extend_from_slice(b"0\r\n");
    if send_trailers {
        for (n, v) in trailers {
            out.extend_from_slice(n.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The `Date` header value (IMF-fixdate) now, formatted once per second per thread.
pub fn date_now() -> [u8; 29] {
    use std::cell::Cell;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let (at, v) = c.get();
        if at == secs {
            return v;
        }
        let mut v = [b' '; 29];
        // IMF-fixdate is always 29 bytes for the years httpdate formats.
        let s = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
        let n = s.len().min(v.len());
        v[..n].copy_from_slice(&s.as_bytes()[..n]);
        c.set((secs, v));
        v
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines_are_lower_hex() {
        assert_eq!(chunk_size_line(255, &mut [0; 20]), b"ff\r\n");
        assert_eq!(chunk_size_line(1, &mut [0; 20]), b"1\r\n");
        assert_eq!(chunk_size_line(0, &mut [0; 20]), b"0\r\n");
    }

    #[test]
    fn dates_are_imf_fixdate() {
        let d = date_now();
        let s = std::str::from_utf8(&d).expect("ascii");
        assert!(httpdate::parse_http_date(s).is_ok(), "{s:?}");
        assert!(s.ends_with(" GMT"));
    }

    #[test]
    fn unknown_lengths_are_chunked_for_http11_and_closed_for_http10() {
        let mut out = Vec::new();
        let framed = |v| Framed {
            no_body: false,
            exact: None,
            req_version: v,
        };
        let mut keep = true;
        let f = response_head(
            &mut out,
            StatusCode::OK,
            &HeaderMap::new(),
            framed(Version::HTTP_11),
            &mut keep,
        );
        assert_eq!(f, Out::Chunked);
        assert!(keep);
        let f = response_head(
            &mut out,
            StatusCode::OK,
            &HeaderMap::new(),
            framed(Version::HTTP_10),
            &mut keep,
        );
        assert_eq!(f, Out::Close);
        assert!(!keep);
        assert!(out.windows(19).any(|w| w == b"connection: close\r\n"));
    }
}
