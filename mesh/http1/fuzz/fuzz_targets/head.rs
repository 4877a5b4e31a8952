//! The request-head parser on arbitrary bytes: it never panics; a head it accepts, hyper's
//! HTTP/1.1 server reads the same way (with what follows it, up to where each request ends);
//! and every proper prefix of an accepted head is "incomplete", never a different answer, so
//! the connection can wait for the rest of a head sent in pieces.
#![no_main]

#[path = "../../tests/oracle/mod.rs"]
mod oracle;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serin_http1::head::parse_head;

thread_local! {
    static ORACLE: oracle::Oracle = oracle::Oracle::new();
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    if let Ok(Some(_)) = parse_head(&mut buf) {
        let used = data.len() - buf.len();
        // A few prefixes: all of them would make the target quadratic in the input.
        for cut in [used - 1, used / 2, used / 3] {
            let mut prefix = BytesMut::from(&data[..cut]);
            assert!(
                matches!(parse_head(&mut prefix), Ok(None)),
                "a prefix of {cut} of an accepted {used}-byte head was not incomplete: {:?}",
                String::from_utf8_lossy(&data[..used])
            );
        }
    }
    ORACLE.with(|o| o.check(data));
});
