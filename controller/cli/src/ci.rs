//! `serin status | wait | promote | abort | pause | resume | gate`: watch and steer rollouts from
//! a terminal or a CI pipeline, against a controller's API (`--server`, the local controller) or
//! Kubernetes (`--kubernetes`: reads Canary status, writes the `serin.dev/command` annotation).
//!
//! The decisions live in `serin-dashboard` (`wait::assess`, the API client); this file maps
//! flags to them and prints.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serin_dashboard::client::{ActionRequest, Client, ClientError};
use serin_dashboard::model::{Action, CanaryKey, CanarySummary, Phase, RunResult};
use serin_dashboard::wait::{Assessment, assess, exit};

/// Exit codes of `serin wait`, printed in its `--help`.
const WAIT_EXIT_CODES: &str = "Exit codes:
  0  promoted: the target's current revision (or --revision) serves as primary
  1  rolled back, aborted, or replaced by another revision before promotion
  2  waiting for a person (paused, or a confirm gate), only with --until-paused
  3  timed out (--timeout)
  4  error: canary not found or being deleted, controller or API server unreachable, invalid flags
  5  rolled back by onInconclusive: the judge reached no decision within its budget
  130  interrupted (SIGINT or SIGTERM): only the wait stopped, the rollout goes on";

/// Whether `serin <arg>` is one of this file's commands (their flag errors exit 4, not 2).
pub fn is_ci_command(arg: Option<&str>) -> bool {
    matches!(
        arg,
        Some("status" | "wait" | "promote" | "abort" | "pause" | "resume" | "gate")
    )
}

/// How to reach Serin: a controller's API or Kubernetes.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// URL of the controller's API (the local controller's dashboard address).
    #[arg(long, env = "SERIN_SERVER", default_value = serin_dashboard::DEFAULT_SERVER_URL)]
    server: String,
    /// Use Kubernetes (kubeconfig, or in-cluster config) instead of --server: read Canary
    /// status, write manual commands as the `serin.dev/command` annotation.
    #[arg(long)]
    kubernetes: bool,
    /// Namespace of the Canary.
    #[arg(short = 'n', long, env = "SERIN_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Bearer token for actions (the controller's --dashboard-token).
    #[arg(long, env = "SERIN_DASHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Output format of `serin status`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The API's JSON (`{"items":[...]}`, or one canary object with NAME).
    Json,
}

/// `serin status [NAME]`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Canary name; all canaries of the namespace when omitted.
    name: Option<String>,
    #[command(flatten)]
    conn: Conn,
    /// List canaries of every namespace.
    #[arg(short = 'A', long, conflicts_with = "name")]
    all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// `serin wait NAME`.
#[derive(Args, Debug)]
#[command(after_help = WAIT_EXIT_CODES)]
pub struct WaitArgs {
    /// Canary name.
    name: String,
    #[command(flatten)]
    conn: Conn,
    /// Give up after this long (e.g. 90s, 15m, 1h).
    #[arg(long, default_value = "15m", value_parser = serin_core::duration::parse_flag)]
    timeout: Duration,
    /// Also return (exit 2) when the run waits for a person: paused, or held by a confirm gate.
    #[arg(long)]
    until_paused: bool,
    /// Wait for this revision instead of the one the target declares now (use what the deploy
    /// step shipped, so a wait started before the controller noticed the change is exact).
    #[arg(long)]
    revision: Option<String>,
    /// How often to look.
    #[arg(long, default_value = "1s", value_parser = serin_core::duration::parse_flag)]
    interval: Duration,
}

/// `serin promote|abort|pause|resume NAME`.
#[derive(Args, Debug)]
pub struct ActionArgs {
    /// Canary name.
    name: String,
    #[command(flatten)]
    conn: Conn,
    /// Who asks, recorded in the history (default: $USER).
    #[arg(long, env = "SERIN_ACTOR")]
    by: Option<String>,
}

/// `serin gate open|close NAME`.
#[derive(Args, Debug)]
pub struct GateArgs {
    #[command(subcommand)]
    op: GateOp,
}

#[derive(Subcommand, Debug)]
enum GateOp {
    /// Open the gate: `/gate/check` (or `/rollback/check`) answers 200.
    Open(GateTarget),
    /// Close the gate: the check answers 403.
    Close(GateTarget),
}

#[derive(Args, Debug)]
struct GateTarget {
    /// Canary name.
    name: String,
    /// Which gate: `confirm` (checked by /gate/check) or `rollback` (/rollback/check).
    #[arg(long, default_value = "confirm", value_parser = ["confirm", "rollback"])]
    gate: String,
    #[command(flatten)]
    conn: Conn,
    /// Who asks, recorded in the history (default: $USER).
    #[arg(long, env = "SERIN_ACTOR")]
    by: Option<String>,
}

/// Where the canaries are read and commands written.
enum Source {
    Api(Box<Client>),
    Kube(serin_kube::source::KubeSource),
}

/// A failure with the exit code it maps to (always 4 here) and a message naming the cause.
struct Failure(String);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let hint = match &e {
            ClientError::Api { status, error } if status.as_u16() == 401 => {
                if error.error == "readOnly" {
                    " (the controller runs without --dashboard-token, so it accepts no actions)"
                } else {
                    " (pass --token or set SERIN_DASHBOARD_TOKEN)"
                }
            }
            ClientError::Unreachable { .. } => {
                " (is the controller running? set --server or SERIN_SERVER)"
            }
            e if e.is_foreign() => {
                " (not an answer of Serin's API: is --server / SERIN_SERVER the controller's dashboard address?)"
            }
            _ => "",
        };
        Failure(format!("{e}{hint}"))
    }
}

impl From<serin_kube::source::KubeError> for Failure {
    fn from(e: serin_kube::source::KubeError) -> Self {
        Failure(e.to_string())
    }
}

impl Source {
    async fn connect(conn: &Conn) -> Result<Source, Failure> {
        if conn.kubernetes {
            Ok(Source::Kube(
                serin_kube::source::KubeSource::connect().await?,
            ))
        } else {
            Ok(Source::Api(Box::new(Client::new(
                &conn.server,
                conn.token.clone(),
            )?)))
        }
    }

    async fn list(&self, namespace: Option<&str>) -> Result<Vec<CanarySummary>, Failure> {
        match self {
            Source::Api(c) => Ok(c
                .list()
                .await?
                .into_iter()
                .filter(|s| namespace.is_none_or(|n| s.namespace == n))
                .collect()),
            Source::Kube(k) => Ok(k.list(namespace).await?),
        }
    }

    async fn get(&self, key: &CanaryKey) -> Result<CanarySummary, Failure> {
        match self {
            Source::Api(c) => match c.detail(key).await {
                Ok(d) => Ok(d.canary),
                Err(e) if e.is_not_found() => Err(Failure(format!(
                    "canary {key} not found at {} (check the name and -n/--namespace)",
                    c.base()
                ))),
                Err(e) => Err(e.into()),
            },
            Source::Kube(k) => Ok(k.get(key).await?),
        }
    }

    /// The maximum weight of a run, for the progress bar.
    async fn max_weight(&self, key: &CanaryKey) -> u32 {
        let w = match self {
            Source::Api(c) => c
                .detail(key)
                .await
                .ok()
                .and_then(|d| d.analysis)
                .and_then(|a| a.max_weight.or(a.step_weights.last().copied())),
            Source::Kube(k) => k.max_weight(key).await,
        };
        w.filter(|w| *w > 0).unwrap_or(100)
    }

    fn is_transient(&self, f: &Failure) -> bool {
        // Only connection trouble is worth retrying; everything else is final.
        f.0.contains("unreachable")
    }

    async fn act(
        &self,
        key: &CanaryKey,
        action: Action,
        gate: Option<String>,
        by: String,
    ) -> Result<String, Failure> {
        match self {
            Source::Api(c) => {
                let receipt = c
                    .act(
                        key,
                        action,
                        &ActionRequest {
                            by: Some(by),
                            gate,
                            id: None,
                        },
                    )
                    .await
                    .map_err(|e| match e {
                        e if e.is_not_found() => Failure(format!("{action}: {e}")),
                        e => Failure::from(e),
                    })?;
                Ok(format!(
                    "{action} of {key} recorded (command {}, by {}); the controller applies it on its next tick",
                    receipt.command.id, receipt.command.by
                ))
            }
            Source::Kube(k) => {
                let id = k.command(key, action, gate, by.clone()).await?;
                Ok(format!(
                    "{action} of {key} written to the serin.dev/command annotation (command {id}, by {by}); the controller applies it on its next reconcile"
                ))
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn finish(code: i32) -> anyhow::Result<()> {
    let _ = std::io::stdout().flush();
    if code == 0 {
        Ok(())
    } else {
        std::process::exit(code)
    }
}

fn fail(msg: &str) -> i32 {
    eprintln!("error: {msg}");
    exit::ERROR
}

// -------------------------------------------------------------------------------------------
// status

/// Runs `serin status`.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let code = runtime()?.block_on(async {
        match status_inner(&args).await {
            Ok(()) => 0,
            Err(Failure(m)) => fail(&m),
        }
    });
    finish(code)
}

async fn status_inner(args: &StatusArgs) -> Result<(), Failure> {
    let source = Source::connect(&args.conn).await?;
    let items = match &args.name {
        Some(name) => vec![
            source
                .get(&CanaryKey::new(&args.conn.namespace, name))
                .await?,
        ],
        None => {
            let ns = (!args.all_namespaces).then_some(args.conn.namespace.as_str());
            source.list(ns).await?
        }
    };
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            let json = if args.name.is_some() {
                serde_json::to_string_pretty(&items[0])
            } else {
                serde_json::to_string_pretty(&serin_dashboard::model::CanaryList {
                    items,
                    ..Default::default()
                })
            }
            .map_err(|e| Failure(e.to_string()))?;
            let _ = writeln!(out, "{json}");
        }
        Output::Table => {
            let _ = write!(out, "{}", table(&items));
            if args.name.is_some()
                && let Some(s) = items.first()
            {
                let _ = write!(out, "{}", describe(s));
            }
        }
    }
    Ok(())
}

fn table(items: &[CanarySummary]) -> String {
    let mut rows = vec![[
        "NAMESPACE".to_string(),
        "NAME".into(),
        "PHASE".into(),
        "WEIGHT".into(),
        "FAILED".into(),
        "REVISION".into(),
        "PROMOTED".into(),
        "LAST TRANSITION".into(),
    ]];
    for s in items {
        rows.push([
            s.namespace.clone(),
            s.name.clone(),
            match &s.waiting {
                Some(_) if s.paused => format!("{} (paused)", s.phase),
                _ => s.phase.to_string(),
            },
            format!("{}%", s.canary_weight),
            s.failed_checks.to_string(),
            s.revision_in_flight().unwrap_or("-").to_string(),
            s.promoted_revision.clone().unwrap_or_else(|| "-".into()),
            s.last_transition_time
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    if items.is_empty() {
        return "No canaries found.\n".to_string();
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn describe(s: &CanarySummary) -> String {
    let mut out = String::new();
    if let Some(run) = &s.run {
        let state = match &run.outcome {
            None => "in flight".to_string(),
            Some(o) => format!(
                "{}: {}",
                match o.result {
                    RunResult::Promoted => "promoted",
                    RunResult::RolledBack => "rolled back",
                    RunResult::Aborted => "aborted",
                    RunResult::Superseded => "superseded",
                },
                o.reason
            ),
        };
        out.push_str(&format!(
            "\nRun {} (revision {}): {state}\n",
            run.id, run.revision
        ));
    }
    if let Some(w) = &s.waiting {
        out.push_str(&format!(
            "Waiting for a person: {}{}\n",
            serde_json::to_value(w.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            w.message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "Gates: confirm {}, rollback {}\n",
        if s.gates.confirm { "open" } else { "closed" },
        if s.gates.rollback { "open" } else { "closed" }
    ));
    if let Some(m) = &s.message {
        out.push_str(&format!("Message: {m}\n"));
    }
    if let Some(h) = &s.holding {
        out.push_str(&format!("Holding: {h}\n"));
    }
    out
}

// -------------------------------------------------------------------------------------------
// wait

/// Runs `serin wait`; exits with the documented codes.
pub fn wait(args: WaitArgs) -> anyhow::Result<()> {
    let code = runtime()?.block_on(async {
        let key = CanaryKey::new(&args.conn.namespace, &args.name);
        let mut progress = Progress::new(std::io::stderr().is_terminal());
        let done = tokio::select! {
            code = wait_inner(&args, &mut progress) => Some(code),
            () = serin_demo::server::terminate_signal() => None,
        };
        // Ctrl-C or a cancelled CI job: clear the bar and say that only the wait stopped.
        done.unwrap_or_else(|| {
            progress.clear();
            println!("interrupted: stopped waiting for {key}; the rollout itself goes on");
            INTERRUPTED
        })
    });
    finish(code)
}

/// Exit code of a `serin wait` stopped by SIGINT or SIGTERM (the shell's 128 + SIGINT).
const INTERRUPTED: i32 = 130;

/// How long the controller may be unreachable mid-wait (a restart) before the wait gives up.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(60);

async fn wait_inner(args: &WaitArgs, progress: &mut Progress) -> i32 {
    if args.interval.is_zero() {
        return fail("--interval: must be more than 0, e.g. 1s");
    }
    let key = CanaryKey::new(&args.conn.namespace, &args.name);
    let start = Instant::now();
    // Every look at the source is bounded by what is left of --timeout: a server that accepts
    // and never answers (a stalled controller, an API server behind a dead proxy) must not keep
    // a CI job past its deadline by a request timeout (the API client's 15 s per read, kube's
    // minutes).
    let deadline = tokio::time::Instant::from_std(start + args.timeout);
    let timed_out = |summary: Option<&CanarySummary>, why: &str| {
        let state = match summary {
            Some(s) => format!(
                " revision {}: phase {}, weight {}%",
                args.revision
                    .as_deref()
                    .or(s.target_revision.as_deref())
                    .unwrap_or("-"),
                s.phase,
                s.canary_weight
            ),
            None => String::new(),
        };
        println!(
            "timed out after {}s waiting for {key}{state}{why}",
            args.timeout.as_secs()
        );
        exit::TIMED_OUT
    };
    let source = match tokio::time::timeout_at(deadline, Source::connect(&args.conn)).await {
        Ok(Ok(s)) => s,
        Ok(Err(Failure(m))) => return fail(&m),
        Err(_) => return timed_out(None, ": could not connect in time"),
    };
    let mut summary = match tokio::time::timeout_at(deadline, source.get(&key)).await {
        Ok(Ok(s)) => s,
        Ok(Err(Failure(m))) => return fail(&m),
        Err(_) => return timed_out(None, ": no answer from the server in time"),
    };
    // Only for the progress bar: without an answer in time the bar assumes 100.
    let max_weight = tokio::time::timeout_at(deadline, source.max_weight(&key))
        .await
        .unwrap_or(100);
    let mut unreachable_since: Option<Instant> = None;
    let mut unanswered = false;
    loop {
        let pinned = args.revision.is_some();
        let Some(want) = args
            .revision
            .clone()
            .or_else(|| summary.target_revision.clone())
        else {
            // Say why when the engine says it (a target that does not exist holds here).
            let why = summary
                .holding
                .as_deref()
                .map(|h| format!(" (holding: {h})"))
                .unwrap_or_default();
            return fail(&format!(
                "{key}: the controller does not report the target's revision yet{why}; pass --revision"
            ));
        };
        match assess(&summary, &want, pinned) {
            Assessment::Promoted { run } => {
                progress.clear();
                println!(
                    "promoted: {key} revision {want}{}",
                    run.map(|r| format!(" (run {r})"))
                        .unwrap_or_else(|| " (already the primary's revision)".into())
                );
                return exit::PROMOTED;
            }
            Assessment::Failed { reason } => {
                progress.clear();
                println!("failed: {key}: {reason}");
                return exit::FAILED;
            }
            Assessment::Inconclusive { reason } => {
                progress.clear();
                println!("inconclusive: {key}: {reason}");
                return exit::INCONCLUSIVE;
            }
            Assessment::Deleted { reason } => {
                progress.clear();
                return fail(&reason);
            }
            Assessment::NeedsHuman { reason } if args.until_paused => {
                progress.clear();
                println!("waiting for a person: {key}: {reason}");
                return exit::WAITING_FOR_HUMAN;
            }
            Assessment::NeedsHuman { reason } | Assessment::Pending { reason } => {
                progress.show(&summary, &want, max_weight, &reason);
            }
        }
        let elapsed = start.elapsed();
        if elapsed >= args.timeout {
            progress.clear();
            let why = if unanswered {
                " (the last look got no answer in time)"
            } else if unreachable_since.is_some() {
                " (the server was unreachable at the last look)"
            } else {
                ""
            };
            return timed_out(Some(&summary), why);
        }
        tokio::time::sleep(args.interval.min(args.timeout - elapsed)).await;
        let look = match tokio::time::timeout_at(deadline, source.get(&key)).await {
            Ok(look) => look,
            Err(_) => {
                // The deadline passed mid-request: the check above reports it.
                unanswered = true;
                continue;
            }
        };
        match look {
            Ok(s) => {
                summary = s;
                unreachable_since = None;
            }
            // The controller may be restarting: keep trying for a while.
            Err(f) if source.is_transient(&f) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= UNREACHABLE_GRACE {
                    progress.clear();
                    return fail(&f.0);
                }
            }
            Err(Failure(m)) => {
                progress.clear();
                return fail(&m);
            }
        }
    }
}

/// `; holding: why` when the engine says why the run does not move (target not found, waiting
/// for evidence, ...): a wait that never moves must not read like a hang.
fn hold_suffix(s: &CanarySummary) -> String {
    s.holding
        .as_deref()
        .map(|h| format!("; holding: {h}"))
        .unwrap_or_default()
}

/// A progress bar on a terminal, plain lines (one per change) otherwise.
struct Progress {
    tty: bool,
    last: String,
    /// The last hold printed, digits left out: a hold that only counts requests or seconds
    /// prints once, not at every look.
    last_hold: Option<String>,
    drawn: bool,
}

impl Progress {
    fn new(tty: bool) -> Self {
        Self {
            tty,
            last: String::new(),
            last_hold: None,
            drawn: false,
        }
    }

    fn show(&mut self, s: &CanarySummary, want: &str, max_weight: u32, reason: &str) {
        let running_want = s.revision_in_flight() == Some(want);
        let pct = if !running_want {
            0
        } else if matches!(s.phase, Phase::Promoting | Phase::Finalising) {
            100
        } else {
            (s.canary_weight * 100 / max_weight.max(1)).min(100)
        };
        if self.tty {
            let filled = (pct as usize) * 30 / 100;
            let line = format!(
                "\r\x1b[2K[{}{}] {pct:>3}% {} weight {}% failed {} · {reason}{}",
                "#".repeat(filled),
                "-".repeat(30 - filled),
                s.phase,
                s.canary_weight,
                s.failed_checks,
                hold_suffix(s)
            );
            eprint!("{line}");
            let _ = std::io::stderr().flush();
            self.drawn = true;
        } else {
            let line = format!(
                "phase={} weight={} failedChecks={} revision={want} {reason}",
                s.phase, s.canary_weight, s.failed_checks
            );
            let hold = s
                .holding
                .as_deref()
                .map(|h| h.replace(|c: char| c.is_ascii_digit(), ""));
            if line != self.last || hold != self.last_hold {
                println!("{line}{}", hold_suffix(s));
                self.last = line;
                self.last_hold = hold;
            }
        }
    }

    fn clear(&mut self) {
        if self.tty && self.drawn {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.drawn = false;
        }
    }
}

// -------------------------------------------------------------------------------------------
// actions

fn default_actor(by: Option<String>) -> String {
    by.filter(|b| !b.trim().is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "serin-cli".to_string())
}

/// Runs `serin promote|abort|pause|resume NAME`.
pub fn act(args: ActionArgs, action: Action) -> anyhow::Result<()> {
    let key = CanaryKey::new(&args.conn.namespace, &args.name);
    let by = default_actor(args.by);
    let code = runtime()?.block_on(act_inner(&args.conn, &key, action, None, by));
    finish(code)
}

/// Runs `serin gate open|close NAME`.
pub fn gate(args: GateArgs) -> anyhow::Result<()> {
    let (t, action) = match args.op {
        GateOp::Open(t) => (t, Action::GateOpen),
        GateOp::Close(t) => (t, Action::GateClose),
    };
    let key = CanaryKey::new(&t.conn.namespace, &t.name);
    let by = default_actor(t.by);
    let code = runtime()?.block_on(act_inner(&t.conn, &key, action, Some(t.gate), by));
    finish(code)
}

async fn act_inner(
    conn: &Conn,
    key: &CanaryKey,
    action: Action,
    gate: Option<String>,
    by: String,
) -> i32 {
    let source = match Source::connect(conn).await {
        Ok(s) => s,
        Err(Failure(m)) => return fail(&m),
    };
    match source.act(key, action, gate, by).await {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err(Failure(m)) => fail(&m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_the_rest() {
        use serin_core::duration::parse_flag as parse_duration;
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        // One grammar for every flag (Go's): `serin wait --timeout 1.5m` works as
        // `--lease-duration 1.5m` does.
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        for bad in ["", "15", "m", "1x", "-1s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("accepted: a number with a unit"), "{bad}: {e}");
        }
    }
}
