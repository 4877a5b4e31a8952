//! A whole served connection on arbitrary bytes: `serin_http1::serve_connection` on a real
//! loopback socket, as the proxy's listeners run it. The requests its handler gets (with their
//! complete bodies: what the proxy sends upstream) are the ones hyper's HTTP/1.1 server reads
//! from the same bytes, the client gets well-formed responses (a 200 per request handled, a
//! refusal only last), and the connection ends once the client has sent everything.
#![no_main]

#[path = "../../tests/oracle/mod.rs"]
mod oracle;

use libfuzzer_sys::fuzz_target;

thread_local! {
    static ORACLE: oracle::Oracle = oracle::Oracle::new();
}

fuzz_target!(|data: &[u8]| {
    ORACLE.with(|o| o.check_connection(data));
});
