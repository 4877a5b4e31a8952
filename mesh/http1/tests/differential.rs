//! Differential fuzzing of the HTTP/1.1 request reader against hyper's server: the same bytes
//! go through `serin_http1`'s head parser and body framing and through hyper's HTTP/1.1
//! server; where both accept a request, they must agree on its method, target and body, and so
//! on where it ends (a disagreement there is how requests get smuggled past a proxy).
//!
//! Inputs: the committed corpus (`tests/corpus/*.http`, request smuggling shapes), then
//! generated requests (CL/TE combinations, chunk sizes and extensions, bare LF, obs-fold, NUL,
//! pipelining) with byte mutations, for `SERIN_FUZZ_SECS` seconds (default 3; CI runs it
//! longer). Not coverage-guided: cargo-fuzz needs a nightly toolchain and this one is pinned
//! stable; the generator instead aims at the framing decisions by construction. A failing
//! input is printed escaped, to be added to the corpus.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use serin_http1::codec::Progress;
use serin_http1::head::parse_head;

/// One request as a reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    body: Vec<u8>,
}

/// What serin_http1 reads from `input`: complete requests, in order, until one is refused,
/// incomplete, or ends the connection.
fn serin(input: &[u8]) -> Vec<Seen> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let Ok(Some(head)) = parse_head(&mut buf) else {
            break;
        };
        let mut framing = head.body;
        let mut body = Vec::new();
        loop {
            match framing.step(&mut buf) {
                Ok(Progress::Frame { frame, .. }) => {
                    if let Ok(d) = frame.into_data() {
                        body.extend_from_slice(&d);
                    }
                }
                Ok(Progress::End) => break,
                Ok(Progress::More) | Err(_) => return out,
            }
        }
        out.push(Seen {
            method: head.req.method().to_string(),
            target: head.req.uri().to_string(),
            body,
        });
        if !head.keep_alive {
            break;
        }
    }
    out
}

/// What hyper's HTTP/1.1 server reads from `input` (requests whose body it read completely).
fn hyper(rt: &tokio::runtime::Runtime, input: &[u8]) -> Vec<Seen> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let input = Bytes::copy_from_slice(input);
    let record = seen.clone();
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let record = record.clone();
            async move {
                let method = req.method().to_string();
                let target = req.uri().to_string();
                if let Ok(body) = req.into_body().collect().await {
                    record.lock().expect("lock").push(Seen {
                        method,
                        target,
                        body: body.to_bytes().to_vec(),
                    });
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(
                    http_body_util::Empty::<Bytes>::new(),
                ))
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc);
        let feed = async move {
            let _ = client.write_all(&input).await;
            let _ = client.shutdown().await;
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        };
        let _ =
            tokio::time::timeout(Duration::from_secs(2), async { tokio::join!(conn, feed) }).await;
    });
    seen.lock().expect("lock").clone()
}

/// Where both readers accepted a request, they must have read the same one. Returns how many
/// requests were compared.
fn check(rt: &tokio::runtime::Runtime, input: &[u8]) -> usize {
    let ours = serin(input);
    let theirs = hyper(rt, input);
    for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
        assert_eq!(
            a,
            b,
            "request {i} read differently; input: {:?}\nserin: {ours:?}\nhyper: {theirs:?}",
            String::from_utf8_lossy(input)
        );
    }
    ours.len().min(theirs.len())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn the_committed_corpus_is_read_as_hyper_reads_it() {
    let rt = runtime();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "http") {
            check(&rt, &std::fs::read(&path).expect("read corpus file"));
            n += 1;
        }
    }
    assert!(n >= 10, "corpus has {n} files");
    // The oracle is not vacuous: hyper reads plain pipelined requests as serin does.
    let pipelined = std::fs::read(dir.join("pipelined.http")).expect("pipelined corpus file");
    assert_eq!(check(&rt, &pipelined), 3);
    assert_eq!(serin(&pipelined), hyper(&rt, &pipelined));
}

/// A generated request: the pieces where framing is decided, each drawn from forms readers
/// have disagreed on.
fn request(rng: &mut fastrand::Rng, out: &mut Vec<u8>) {
    let eol: &[u8] = if rng.u8(..10) == 0 { b"\n" } else { b"\r\n" };
    let method = ["GET", "POST", "PUT", "OPTIONS"][rng.usize(..4)];
    let target = ["/", "/a?b=c", "http://h/x", "*", "h:80"][rng.usize(..5)];
    let version = if rng.u8(..8) == 0 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    out.extend_from_slice(format!("{method} {target} {version}").as_bytes());
    out.extend_from_slice(eol);
    if rng.u8(..10) > 0 {
        out.extend_from_slice(b"host: h");
        out.extend_from_slice(eol);
    }
    let body: Vec<u8> = (0..rng.usize(..40))
        .map(|_| rng.alphanumeric() as u8)
        .collect();
    let chunked = rng.bool();
    if chunked {
        let te = [
            "chunked",
            "Chunked",
            " chunked",
            "chunked ",
            "gzip, chunked",
            "chunked, gzip",
            "chunked\x0b",
            "identity, chunked",
        ][rng.usize(..8)];
        out.extend_from_slice(format!("transfer-encoding: {te}").as_bytes());
        out.extend_from_slice(eol);
    }
    if !chunked || rng.u8(..4) == 0 {
        let n = body.len();
        let cl = [
            format!("{n}"),
            format!("+{n}"),
            format!(" {n} "),
            format!("{n}, {n}"),
            format!("{}", n + 1),
            format!("0{n}"),
        ][if rng.u8(..4) == 0 { rng.usize(..6) } else { 0 }]
        .clone();
        out.extend_from_slice(format!("content-length: {cl}").as_bytes());
        out.extend_from_slice(eol);
        if rng.u8(..10) == 0 {
            out.extend_from_slice(format!("content-length: {}", n + 2).as_bytes());
            out.extend_from_slice(eol);
        }
    }
    if rng.u8(..10) == 0 {
        out.extend_from_slice(b"x-fold: a");
        out.extend_from_slice(eol);
        out.extend_from_slice(b" b");
        out.extend_from_slice(eol);
    }
    if rng.u8(..8) == 0 {
        out.extend_from_slice(b"connection: close");
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(eol);
    if chunked {
        let mut rest = &body[..];
        while !rest.is_empty() {
            let n = rng.usize(1..=rest.len());
            let size = match rng.u8(..12) {
                0 => format!("{n:X}"),
                1 => format!("{n:x};ext=v"),
                2 => format!("{n:x} ;e"),
                3 => format!("{n:x};a\nb"),
                4 => format!("0{n:x}"),
                _ => format!("{n:x}"),
            };
            out.extend_from_slice(size.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(if rng.u8(..20) == 0 { b"\n" } else { b"\r\n" });
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n");
        if rng.u8(..4) == 0 {
            out.extend_from_slice(b"content-length: 9\r\nx-t: 1\r\n");
        }
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(&body);
    }
}

/// Flips, inserts or deletes a few bytes, preferring the bytes framing turns on.
fn mutate(rng: &mut fastrand::Rng, input: &mut Vec<u8>) {
    const INTERESTING: &[u8] = b"\r\n\0 \t:;,0f-+";
    for _ in 0..rng.usize(..4) {
        if input.is_empty() {
            return;
        }
        let at = rng.usize(..input.len());
        match rng.u8(..3) {
            0 => input[at] = INTERESTING[rng.usize(..INTERESTING.len())],
            1 => input.insert(at, INTERESTING[rng.usize(..INTERESTING.len())]),
            _ => {
                input.remove(at);
            }
        }
    }
}

#[test]
fn generated_requests_are_read_as_hyper_reads_them() {
    let secs: u64 = std::env::var("SERIN_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("SERIN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5e21);
    let mut rng = fastrand::Rng::with_seed(seed);
    let rt = runtime();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut cases = 0usize;
    let mut compared = 0usize;
    while Instant::now() < until {
        let mut input = Vec::new();
        for _ in 0..rng.usize(1..=3) {
            request(&mut rng, &mut input);
        }
        if rng.bool() {
            mutate(&mut rng, &mut input);
        }
        compared += check(&rt, &input);
        cases += 1;
    }
    eprintln!(
        "differential: {cases} inputs, {compared} requests both read, in {secs} s (seed {seed})"
    );
    assert!(compared * 4 > cases, "too few inputs both readers accepted");
}
