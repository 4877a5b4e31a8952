//! The chunked body decoder on arbitrary bytes after a chunked request head: hyper reads the
//! same body (and the same request after it), and decoding the bytes as they arrive in pieces
//! (cut where the input's first byte says) gives exactly what decoding them at once gives.
#![no_main]

#[path = "../../tests/oracle/mod.rs"]
mod oracle;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serin_http1::codec::{ChunkState, Framing, Progress};

thread_local! {
    static ORACLE: oracle::Oracle = oracle::Oracle::new();
}

const HEAD: &[u8] = b"POST /c HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n";

/// What decoding `pieces` (fed one after the other) gives: the data, the trailers' names, and
/// how it ended (`Ok(true)` at the body's end, `Ok(false)` waiting for more, `Err` refused;
/// which check refused may differ with the cut, the refusal may not).
fn decode<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> (Vec<u8>, Vec<String>, Result<bool, ()>) {
    let mut framing = Framing::Chunked(ChunkState::Size);
    let mut buf = BytesMut::new();
    let (mut data, mut trailers) = (Vec::new(), Vec::new());
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match framing.step(&mut buf) {
                Ok(Progress::Frame { frame, .. }) => match frame.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => {
                        if let Ok(t) = f.into_trailers() {
                            trailers.extend(t.keys().map(|k| k.to_string()));
                        }
                    }
                },
                Ok(Progress::End) => return (data, trailers, Ok(true)),
                Ok(Progress::More) => break,
                Err(_) => return (data, trailers, Err(())),
            }
        }
    }
    (data, trailers, Ok(false))
}

fuzz_target!(|input: &[u8]| {
    let Some((&cut, body)) = input.split_first() else {
        return;
    };
    let whole = decode(std::iter::once(body));
    let step = usize::from(cut % 16) + 1;
    let pieces = decode(body.chunks(step));
    assert_eq!(
        whole,
        pieces,
        "decoded differently in {step}-byte pieces: {:?}",
        String::from_utf8_lossy(body)
    );
    let mut request = HEAD.to_vec();
    request.extend_from_slice(body);
    ORACLE.with(|o| o.check(&request));
});
