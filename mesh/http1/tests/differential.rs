//! Differential fuzzing of the HTTP/1.1 request reader against hyper's server: the same bytes
//! go through `serin_http1`'s head parser and body framing and through hyper's HTTP/1.1
//! server; where both accept a request, they must agree on its method, target and body, and so
//! on where it ends (a disagreement there is how requests get smuggled past a proxy).
//!
//! Inputs: the committed corpus (`tests/corpus/*.http`, request smuggling shapes), then
//! generated requests (CL/TE combinations, chunk sizes and extensions, bare LF, obs-fold, NUL,
//! pipelining) with byte mutations, for `SERIN_FUZZ_SECS` seconds (default 3). The corpus and
//! every fourth generated input also go through a whole served connection
//! (`serin_http1::serve_connection` on a loopback socket), whose handler must see the same
//! requests and whose client must get well-formed responses. The oracle (`tests/oracle/`) is
//! shared with the coverage-guided `cargo fuzz` targets in `fuzz/` (nightly); this test runs
//! on the pinned stable toolchain, the generator aiming at the framing decisions by
//! construction. A failing input is printed escaped, to be added to the corpus.

mod oracle;

use std::time::{Duration, Instant};

use oracle::{Oracle, serin};

#[test]
fn the_committed_corpus_is_read_as_hyper_reads_it() {
    let oracle = Oracle::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "http") {
            let input = std::fs::read(&path).expect("read corpus file");
            oracle.check(&input);
            oracle.check_connection(&input);
            n += 1;
        }
    }
    assert!(n >= 10, "corpus has {n} files");
    // The oracle is not vacuous: hyper reads plain pipelined requests as serin does.
    let pipelined = std::fs::read(dir.join("pipelined.http")).expect("pipelined corpus file");
    assert_eq!(oracle.check(&pipelined), 3);
    assert_eq!(serin(&pipelined), oracle.hyper(&pipelined));
    // Nor is the whole-connection one: the handler saw all three, each got its 200.
    assert_eq!(oracle.check_connection(&pipelined), 3);
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
    let oracle = Oracle::new();
    let until = Instant::now() + Duration::from_secs(secs);
    let mut cases = 0usize;
    let mut compared = 0usize;
    let (mut served, mut compared_served) = (0usize, 0usize);
    while Instant::now() < until {
        let mut input = Vec::new();
        for _ in 0..rng.usize(1..=3) {
            request(&mut rng, &mut input);
        }
        if rng.bool() {
            mutate(&mut rng, &mut input);
        }
        compared += oracle.check(&input);
        // A served connection costs a loopback socket pair: one input in four.
        if cases.is_multiple_of(4) {
            compared_served += oracle.check_connection(&input);
            served += 1;
        }
        cases += 1;
    }
    eprintln!(
        "differential: {cases} inputs, {compared} requests both read, in {secs} s (seed {seed}); \
         {served} inputs served on a connection, {compared_served} requests both read"
    );
    assert!(compared * 4 > cases, "too few inputs both readers accepted");
    assert!(
        compared_served * 4 > served,
        "too few served inputs both readers accepted"
    );
}
