//! A real Graphite for tests: Debian's `carbon-cache` (graphite-carbon) receiving datapoints on
//! a loopback plaintext port and writing whisper files into a scratch directory, and Debian's
//! graphite-web (`graphite-manage runserver`) serving the render API over them on another
//! loopback port, reading carbon's cache too so a datapoint is visible before it is flushed.
//!
//! Without the packages, [`start_graphite`] returns `None` after printing why, so a developer
//! machine without them still passes; with `CI` or `SERIN_REQUIRE_GRAPHITE` set it panics
//! instead, so CI (which installs both) cannot skip silently.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};

/// A running carbon-cache and graphite-web; both killed and the directory removed on drop.
pub struct Graphite {
    carbon: Child,
    web: Child,
    dir: PathBuf,
    /// The reservations of the servers' ports, held while they run (see [`reserve_port`]).
    _ports: Vec<TcpSocket>,
    /// carbon's plaintext (line) receiver: `127.0.0.1:<port>`.
    pub line_port: u16,
    /// graphite-web's base URL, `http://127.0.0.1:<port>` (not ready yet when returned).
    pub address: String,
}

impl Drop for Graphite {
    fn drop(&mut self) {
        let _ = self.carbon.start_kill();
        let _ = self.web.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Graphite {
    /// Sends datapoints `(metric path, value, unix seconds)` to carbon in its plaintext protocol.
    pub async fn write(&self, points: &[(&str, f64, u64)]) {
        // carbon-cache takes a moment to listen after it is started.
        let port = self.line_port;
        let mut s = super::eventually(
            "carbon-cache to accept on its line port",
            std::time::Duration::from_secs(30),
            || async move { TcpStream::connect(("127.0.0.1", port)).await.ok() },
        )
        .await;
        let mut text = String::new();
        for (path, value, at) in points {
            text.push_str(&format!("{path} {value} {at}\n"));
        }
        s.write_all(text.as_bytes()).await.expect("write to carbon");
        s.shutdown().await.expect("close the carbon connection");
    }

    /// graphite-web's and carbon's logs, for a failing test's message.
    pub fn logs(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_default();
        format!(
            "--- graphite-web ---\n{}\n--- carbon ---\n{}",
            read(self.dir.join("web.log")),
            read(self.dir.join("carbon.log"))
        )
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A loopback port bound on port 0 by the test and held, never listening, for as long as the
/// servers run, so that no one else is given it: carbon and graphite-web cannot be handed a
/// socket, so each binds the held port beside this one. Linux allows that because both sides
/// ask for it and this one does not listen: SO_REUSEPORT for carbon's line receiver (carbon
/// sets it), SO_REUSEADDR for carbon's cache query port (Twisted sets it) and graphite-web
/// (Django's server sets it). A port merely free a moment ago could be taken in between by any
/// process binding port 0, which the kernel never does with a port still bound.
fn reserve_port() -> (TcpSocket, u16) {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("bind 127.0.0.1:0");
    let port = socket.local_addr().expect("the bound address").port();
    (socket, port)
}

/// Starts carbon-cache and graphite-web on reserved loopback ports, or returns `None` (after saying
/// why on stderr) when the Debian packages are not installed and neither `CI` nor
/// `SERIN_REQUIRE_GRAPHITE` is set. Poll [`Graphite::address`] until it answers.
pub fn start_graphite() -> Option<Graphite> {
    let (Some(carbon), Some(manage)) = (on_path("carbon-cache"), on_path("graphite-manage")) else {
        let why = "carbon-cache or graphite-manage is not installed (Debian packages graphite-carbon and graphite-web, as .ci/run installs)";
        if std::env::var_os("CI").is_some() || std::env::var_os("SERIN_REQUIRE_GRAPHITE").is_some()
        {
            panic!("this test must run here (CI or SERIN_REQUIRE_GRAPHITE is set) but {why}");
        }
        eprintln!("SKIPPED: the real-Graphite test did not run: {why}");
        return None;
    };
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "serin-graphite-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    for sub in ["conf", "storage/whisper", "storage/lists", "log", "py"] {
        std::fs::create_dir_all(dir.join(sub)).expect("graphite scratch directory");
    }
    let (line, line_port) = reserve_port();
    let (query, query_port) = reserve_port();
    let (web, web_port) = reserve_port();
    let d = dir.display();
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).expect("write a graphite config file")
    };
    write(
        "conf/carbon.conf",
        format!(
            "[cache]\nSTORAGE_DIR = {d}/storage\nLOCAL_DATA_DIR = {d}/storage/whisper\n\
             WHITELISTS_DIR = {d}/storage/lists\nCONF_DIR = {d}/conf\nLOG_DIR = {d}/log\n\
             PID_DIR = {d}\nENABLE_LOGROTATION = False\nUSER =\nMAX_CACHE_SIZE = inf\n\
             MAX_UPDATES_PER_SECOND = 10000\nMAX_CREATES_PER_MINUTE = inf\n\
             LINE_RECEIVER_INTERFACE = 127.0.0.1\nLINE_RECEIVER_PORT = {line_port}\n\
             ENABLE_UDP_LISTENER = False\nPICKLE_RECEIVER_PORT = 0\n\
             CACHE_QUERY_INTERFACE = 127.0.0.1\n\
             CACHE_QUERY_PORT = {query_port}\nLOG_LISTENER_CONN_SUCCESS = False\n"
        ),
    );
    // One-second datapoints kept for an hour; no aggregation surprises (xFilesFactor 0).
    write(
        "conf/storage-schemas.conf",
        "[default]\npattern = .*\nretentions = 1s:1h\n".into(),
    );
    write(
        "conf/storage-aggregation.conf",
        "[default]\npattern = .*\nxFilesFactor = 0\naggregationMethod = average\n".into(),
    );
    // graphite-web reads its settings from this module instead of /etc/graphite.
    write(
        "py/serin_graphite_settings.py",
        format!(
            "SECRET_KEY = 'serin-test'\nGRAPHITE_ROOT = '/usr/share/graphite-web'\n\
             CONF_DIR = '{d}/conf'\nSTORAGE_DIR = '{d}/storage'\nWHISPER_DIR = '{d}/storage/whisper'\n\
             LOG_DIR = '{d}/log'\nINDEX_FILE = '{d}/storage/index'\n\
             CARBONLINK_HOSTS = ['127.0.0.1:{query_port}']\nFUNCTION_PLUGINS = []\n\
             DATABASES = {{'default': {{'NAME': '{d}/storage/graphite.db', 'ENGINE': 'django.db.backends.sqlite3'}}}}\n"
        ),
    );
    let log = |name: &str| -> Stdio {
        std::fs::File::create(dir.join(name))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    };
    let carbon = Command::new(carbon)
        .arg(format!(
            "--config={}",
            dir.join("conf/carbon.conf").display()
        ))
        .arg(format!("--pidfile={}", dir.join("carbon.pid").display()))
        .args(["--nodaemon", "start"])
        .stdin(Stdio::null())
        .stdout(log("carbon.log"))
        .stderr(log("carbon.err"))
        .kill_on_drop(true)
        .spawn()
        .expect("start carbon-cache");
    let web_server = Command::new(manage)
        .args(["runserver", "--noreload", &format!("127.0.0.1:{web_port}")])
        .env("PYTHONPATH", dir.join("py"))
        .env("GRAPHITE_SETTINGS_MODULE", "serin_graphite_settings")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log("web.out"))
        .stderr(log("web.log"))
        .kill_on_drop(true)
        .spawn()
        .expect("start graphite-web");
    Some(Graphite {
        carbon,
        web: web_server,
        dir,
        _ports: vec![line, query, web],
        line_port,
        address: format!("http://127.0.0.1:{web_port}"),
    })
}
