//! Helpers shared by this crate's unit tests and its integration tests (behind the
//! `test-support` feature; an integration test cannot see the library's `cfg(test)` code).

use std::io::Write as _;
use std::path::Path;

/// Writes an executable script at `path`. Written by a `sh` child, never opened for writing by
/// this process: a test thread that forks while this process holds the file open passes that
/// descriptor to its child, and running the script then fails with ETXTBSY ("text file busy")
/// until that child has exec'd (a flaky failure seen when the tests ran in parallel).
pub fn write_executable(path: &Path, text: &str) {
    let mut child = std::process::Command::new("sh")
        .args(["-c", "cat > \"$0\" && chmod 755 \"$0\""])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sh writes the fake");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write fake");
    assert!(
        child.wait().expect("sh").success(),
        "writing {}",
        path.display()
    );
}
