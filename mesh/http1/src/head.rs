//! Request heads (RFC 9112 §2-3, §6.3): the request line and header fields, parsed with
//! `httparse`, checked for the ambiguities requests are smuggled through, and reduced to what
//! the connection needs to know (body framing, keep-alive, `Expect`, `TE: trailers`).

use bytes::BytesMut;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};

use crate::codec::{ChunkState, Framing, connection_names_others};

/// Largest request head (request line and headers) accepted; larger ones get a 431. Peers
/// accept less (nginx 8 KiB per line and 32 KiB in all by default, HAProxy 16 KiB); 64 KiB
/// leaves room for large cookies and tokens and bounds what an idle connection can hold.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most request headers accepted (hyper's default too); more get a 431.
pub const MAX_HEADERS: usize = 100;
/// Header slots tried first; the full table is only built for heads that need it.
const FEW_HEADERS: usize = 24;

/// A parsed request head and what the connection needs to know about it.
#[derive(Debug)]
pub struct Head {
    /// The request without its body.
    pub req: Request<()>,
    /// How its body is framed.
    pub body: Framing,
    /// The connection may serve another request after this one.
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The client accepts trailers in a chunked response.
    pub te_trailers: bool,
    /// The client asked to switch to a protocol the proxy can tunnel (WebSocket): HTTP/1.1,
    /// `Connection: upgrade`, an `Upgrade` other than `h2c`, no body. The request carries
    /// [`crate::UpgradeRequested`].
    pub upgrade: bool,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Malformed (`400`), with a one-line reason.
    Bad(&'static str),
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers (`431`).
    TooLarge(&'static str),
    /// `CONNECT`: a tunnel, which this proxy does not make.
    Connect,
    /// A transfer coding other than chunked (`501`): the proxy cannot decode it, and passing
    /// it on as a plain body would change the message.
    NotImplemented(&'static str),
}

/// Parses a request head at the start of `buf`, consuming it; `None` when incomplete.
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Refused> {
    match parse_head_with::<FEW_HEADERS>(buf) {
        Err(Refused::TooLarge(_)) => parse_head_with::<MAX_HEADERS>(buf),
        r => r,
    }
}

fn parse_head_with<const N: usize>(buf: &mut BytesMut) -> Result<Option<Head>, Refused> {
    let mut slots = [httparse::EMPTY_HEADER; N];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err(Refused::TooLarge("request head"));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refused::TooLarge("request head")),
        Err(e) => {
            return Err(Refused::Bad(match e {
                httparse::Error::HeaderName => "invalid header name",
                httparse::Error::HeaderValue => "invalid header value",
                httparse::Error::NewLine | httparse::Error::Status => "invalid line ending",
                httparse::Error::Token => "invalid method",
                httparse::Error::Version => "invalid HTTP version",
                _ => "invalid request head",
            }));
        }
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| Refused::Bad("invalid method"))?;
    // Forwarded, a CONNECT would reach the upstream as an ordinary request and an upstream
    // `200` would make the client believe a tunnel is open.
    if method == Method::CONNECT {
        return Err(Refused::Connect);
    }
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Positions inside the head, so the URI and header values share its bytes.
    let base = buf.as_ptr() as usize;
    let path = req.path.unwrap_or("");
    let path_span = (path.as_ptr() as usize - base, path.len());
    let count = req.headers.len();
    let mut spans = [(0usize, 0usize, 0usize, 0usize); N];
    for (span, h) in spans.iter_mut().zip(req.headers.iter()) {
        let n = h.name.as_ptr() as usize - base;
        let v = h.value.as_ptr() as usize - base;
        *span = (n, n + h.name.len(), v, v + h.value.len());
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path_span.0..path_span.0 + path_span.1))
        .map_err(|_| Refused::Bad("invalid request target"))?;
    // RFC 9112 §3.2: origin form (`/path`), absolute form (`http://host/path`), or `*` for
    // OPTIONS; authority form (`host:port`) is only for CONNECT, refused above.
    let target = &head[path_span.0..path_span.0 + path_span.1];
    let origin = target.starts_with(b"/");
    let absolute = uri.scheme().is_some() && uri.authority().is_some();
    let asterisk = target == b"*" && method == Method::OPTIONS;
    if !(origin || absolute || asterisk) {
        return Err(Refused::Bad("invalid request target"));
    }
    let mut headers = HeaderMap::with_capacity(count);
    let mut length: Option<u64> = None;
    let mut te = false;
    let mut chunked = false;
    let mut other_coding = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut upgrade_token = false;
    let mut expect_continue = false;
    let mut te_trailers = false;
    let mut hosts = 0u32;
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[ns..ne])
            .map_err(|_| Refused::Bad("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| Refused::Bad("invalid header value"))?;
        if name == header::CONTENT_LENGTH {
            let v = value.as_bytes().trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(Refused::Bad("invalid content-length"));
            }
            let n: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(Refused::Bad("invalid content-length"))?;
            match length {
                Some(l) if l != n => return Err(Refused::Bad("conflicting content-length")),
                // The same length again: forwarded once (two would reach the upstream as
                // a list it may refuse or read differently).
                Some(_) => continue,
                None => length = Some(n),
            }
        } else if name == header::HOST {
            // RFC 9112 §3.2: more than one Host is refused, not routed by the first.
            if hosts > 0 {
                return Err(Refused::Bad("more than one host header"));
            }
            hosts += 1;
        } else if name == header::TRANSFER_ENCODING {
            te = true;
            // The codings of every transfer-encoding line form one list: chunked must be
            // last, and any other coding (gzip, deflate, ...) is one this proxy cannot undo.
            for coding in value.as_bytes().split(|b| *b == b',') {
                let c = coding.trim_ascii();
                if c.is_empty() {
                    continue;
                }
                if chunked {
                    // Something after chunked: the body cannot be framed.
                    chunked = false;
                    other_coding = true;
                }
                if c.eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else {
                    other_coding = true;
                }
            }
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|b| *b == b',') {
                let t = token.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    upgrade_token = true;
                }
            }
            if !connection_names_others(value.as_bytes()) {
                // Hop-by-hop and fully read: storing it only to strip it later costs more.
                continue;
            }
        } else if name == header::EXPECT {
            expect_continue = value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        } else if name == header::TE {
            te_trailers |= value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
        headers.append(name, value);
    }
    // RFC 9112 §3.2: an HTTP/1.1 request names its host; one in absolute form (a client that
    // takes this proxy for a forward proxy) names it in the request target instead.
    if hosts == 0 && version == Version::HTTP_11 && uri.authority().is_none() {
        return Err(Refused::Bad("missing host header"));
    }
    let mut keep_alive = if version == Version::HTTP_10 {
        keep_alive_token && !close
    } else {
        !close
    };
    let body = if te {
        // RFC 9112 §6.3: a request whose transfer coding is not chunked last cannot be
        // framed; HTTP/1.0 has no transfer codings.
        if !chunked || version == Version::HTTP_10 {
            return Err(Refused::Bad("unsupported transfer-encoding"));
        }
        if other_coding {
            return Err(Refused::NotImplemented(
                "transfer codings other than chunked are not supported",
            ));
        }
        if length.is_some() {
            // Both: chunked wins, the length goes, and the connection closes afterwards.
            headers.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        Framing::Chunked(ChunkState::Size)
    } else {
        match length {
            Some(n) if n > 0 => Framing::Length(n),
            _ => Framing::Done,
        }
    };
    // A request with a body is not tunnelled: where its body ends and the new protocol
    // starts would rest on the upstream's reading of it.
    let upgrade = upgrade_token
        && version == Version::HTTP_11
        && matches!(body, Framing::Done)
        && crate::upgrade::tunnelable(&headers);
    let mut r = Request::new(());
    *r.method_mut() = method;
    *r.uri_mut() = uri;
    *r.version_mut() = version;
    *r.headers_mut() = headers;
    if upgrade {
        r.extensions_mut().insert(crate::UpgradeRequested);
    }
    Ok(Some(Head {
        req: r,
        body,
        keep_alive,
        expect_continue,
        te_trailers,
        upgrade,
    }))
}

/// A request body read from a client connection. It holds the connection's buffer while it
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Head>, Refused> {
        let mut buf = BytesMut::from(raw);
        parse_head(&mut buf)
    }

    fn head(raw: &[u8]) -> Head {
        match parse(raw) {
            Ok(Some(h)) => h,
            Ok(None) => panic!("incomplete"),
            Err(Refused::Bad(w) | Refused::TooLarge(w)) => panic!("refused: {w}"),
            Err(Refused::Connect) => panic!("refused: CONNECT"),
            Err(Refused::NotImplemented(w)) => panic!("not implemented: {w}"),
        }
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        assert!(head(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        // Read and dropped at once, unless it names headers to strip before forwarding.
        let h = head(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: keep-alive\r\n\r\n");
        assert!(h.req.headers().get(header::CONNECTION).is_none());
        let h = head(
            b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close, x-secret\r\nx-secret: 1\r\n\r\n",
        );
        assert!(!h.keep_alive);
        assert!(h.req.headers().get(header::CONNECTION).is_some());
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunked_and_bad_framing_is_refused() {
        assert!(matches!(
            head(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello").body,
            Framing::Length(5)
        ));
        assert!(matches!(
            head(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n").body,
            Framing::Done
        ));
        let h = head(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n");
        assert!(matches!(h.body, Framing::Chunked(_)));
        assert!(!h.keep_alive);
        assert!(h.req.headers().get(header::CONTENT_LENGTH).is_none());
        // HTTP/1.0 may leave Host out, and so may an absolute-form target (it names the host).
        head(b"GET / HTTP/1.0\r\n\r\n");
        head(b"GET http://a/ HTTP/1.1\r\n\r\n");
        for bad in [
            &b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a\r\nbad header\r\n\r\n",
            b"GET\x01 / HTTP/1.1\r\nhost: a\r\n\r\n",
            // RFC 9112 §3.2: two hosts, or none in HTTP/1.1.
            b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(Refused::Bad(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_partial_head_waits_and_a_head_with_too_many_headers_is_too_large() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nhost: a\r\n"), Ok(None)));
        let mut raw = b"GET / HTTP/1.1\r\nhost: a\r\n".to_vec();
        for i in 0..60 {
            raw.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(head(&raw).req.headers().len(), 61);
        let mut raw = b"GET / HTTP/1.1\r\nhost: a\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            raw.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&raw), Err(Refused::TooLarge(_))));
    }

    #[test]
    fn only_a_bodiless_http_1_1_upgrade_to_a_protocol_other_than_h2c_is_tunnelled() {
        let ws = head(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: keep-alive, Upgrade\r\nupgrade: websocket\r\n\r\n");
        assert!(ws.upgrade);
        assert!(
            ws.req
                .extensions()
                .get::<crate::UpgradeRequested>()
                .is_some()
        );
        for not in [
            &b"GET / HTTP/1.1\r\nhost: a\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.0\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\ncontent-length: 1\r\n\r\nx",
        ] {
            let h = head(not);
            assert!(!h.upgrade, "{}", String::from_utf8_lossy(not));
            assert!(h.req.extensions().get::<crate::UpgradeRequested>().is_none());
        }
    }

    #[test]
    fn expect_continue_and_te_trailers_are_noticed_and_pipelined_bytes_stay() {
        let mut buf = BytesMut::from(
            &b"POST /a HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\nte: trailers\r\ncontent-length: 1\r\n\r\nxGET /b HTTP/1.1\r\nhost: a\r\n\r\n"[..],
        );
        let Ok(Some(h)) = parse_head(&mut buf) else {
            panic!("parses")
        };
        assert!(h.expect_continue && h.te_trailers);
        assert_eq!(h.req.uri().path(), "/a");
        assert_eq!(&buf[..], b"xGET /b HTTP/1.1\r\nhost: a\r\n\r\n");
    }

    #[test]
    fn transfer_codings_other_than_chunked_are_not_implemented() {
        for raw in [
            &b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw), Err(Refused::NotImplemented(_))),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked, gzip\r\n\r\n"),
            Err(Refused::Bad(_))
        ));
    }

    #[test]
    fn only_origin_absolute_and_asterisk_targets_are_accepted() {
        head(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n");
        head(b"GET http://a/x HTTP/1.1\r\n\r\n");
        head(b"OPTIONS * HTTP/1.1\r\nhost: a\r\n\r\n");
        for bad in [
            &b"GET podinfo:80 HTTP/1.1\r\nhost: a\r\n\r\n"[..],
            b"GET x HTTP/1.1\r\nhost: a\r\n\r\n",
            b"GET * HTTP/1.1\r\nhost: a\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(Refused::Bad(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
