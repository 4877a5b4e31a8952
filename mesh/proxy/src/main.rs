//! `serin-proxy`: flags, logging, runtime; everything else is in the library.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serin_proxy::{InboundConfig, Proxy, ProxyConfig};

/// jemalloc, built with its background thread on: after a connection storm the freed memory
/// goes back to the OS as its dirty pages decay (in about ten seconds), with no call from here.
/// glibc's malloc kept it: small long-lived allocations left high in the heap pin what lies
/// below them, and giving it back would need `malloc_trim` (unsafe FFI).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Serin's sidecar proxy: weighted splits, header/cookie routing, mirroring, Linkerd-named metrics.
#[derive(Parser, Debug)]
#[command(name = "serin-proxy", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Install the iptables rules that send the pod's TCP through the proxy (the injected init
    /// container's command; needs NET_ADMIN and NET_RAW).
    Init(InitArgs),
}

/// `serin-proxy init`.
#[derive(clap::Args, Debug)]
struct InitArgs {
    /// Port of the proxy's transparent inbound listener (inbound TCP is redirected there).
    #[arg(long, env = "SERIN_PROXY_INIT_INBOUND_PORT", default_value_t = 4143)]
    inbound_port: u16,
    /// Port of the proxy's outbound listener (outbound TCP is redirected there).
    #[arg(long, env = "SERIN_PROXY_INIT_OUTBOUND_PORT", default_value_t = 4140)]
    outbound_port: u16,
    /// UID the proxy container runs as; its own connections are never captured.
    #[arg(long, env = "SERIN_PROXY_INIT_PROXY_UID", default_value_t = 2102)]
    proxy_uid: u32,
    /// Inbound ports not captured, comma-separated (keep the proxy's admin port here).
    #[arg(long, env = "SERIN_PROXY_INIT_SKIP_INBOUND_PORTS", value_delimiter = ',', default_value = "4191", value_parser = parse_port)]
    skip_inbound_ports: Vec<u16>,
    /// Outbound destination ports not captured, comma-separated.
    #[arg(long, env = "SERIN_PROXY_INIT_SKIP_OUTBOUND_PORTS", value_delimiter = ',', value_parser = parse_port)]
    skip_outbound_ports: Vec<u16>,
    /// iptables backend: auto (whichever holds the node's rules), nft or legacy.
    #[arg(long, env = "SERIN_PROXY_INIT_IPTABLES_MODE", default_value = "auto")]
    iptables_mode: serin_proxy::capture::Mode,
    /// IPv6 capture with ip6tables (same chains, ports and exemptions as IPv4): auto (when the
    /// pod has an IPv6 address of global scope: a dual-stack or IPv6-only cluster), on (wherever
    /// the namespace has IPv6 on loopback; fail without it) or off (IPv6 bypasses the proxy).
    #[arg(long, env = "SERIN_PROXY_INIT_IPV6", default_value = "auto")]
    ipv6: serin_proxy::capture::Ipv6Mode,
    /// Print the rules instead of installing them.
    #[arg(long)]
    dry_run: bool,
    /// Remove Serin's rules and chains instead of installing them.
    #[arg(long)]
    remove: bool,
    /// Keep connection tracking for loopback-only TCP (the proxy's legs to the app and to
    /// upstreams on 127.0.0.1), which is otherwise exempted to save CPU per packet; for pods
    /// whose own rules match loopback traffic by conntrack state.
    #[arg(long, env = "SERIN_PROXY_INIT_TRACK_LOOPBACK")]
    track_loopback: bool,
    /// Keep connection tracking for the proxy's own upstream connections and the app's
    /// connections to --skip-outbound-ports (no rule translates them), which are otherwise
    /// exempted in both directions to save CPU per packet; for pods whose own rules match them
    /// by conntrack state.
    #[arg(long, env = "SERIN_PROXY_INIT_TRACK_UPSTREAM")]
    track_upstream: bool,
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{s:?} is not a port (1-65535)")),
    }
}

/// The proxy itself.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Static mode: YAML file with listeners, labels and `routes:` (reloaded on change and SIGHUP).
    #[arg(long, env = "SERIN_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Outbound listener, without --config (a file sets `outbound.listen`; both is an error).
    #[arg(
        long,
        env = "SERIN_PROXY_OUTBOUND",
        default_value = "127.0.0.1:4140",
        conflicts_with = "config"
    )]
    outbound: SocketAddr,
    /// Admin listener (/metrics, /ready, /live, /routes), without --config (a file sets
    /// `admin.listen`; both is an error).
    #[arg(
        long,
        env = "SERIN_PROXY_ADMIN",
        default_value = "127.0.0.1:4191",
        conflicts_with = "config"
    )]
    admin: SocketAddr,
    /// Inbound listener in front of the local app (needs --inbound-forward), without --config
    /// (a file sets `inbound:`; both is an error).
    #[arg(
        long,
        env = "SERIN_PROXY_INBOUND",
        requires = "inbound_forward",
        conflicts_with = "config"
    )]
    inbound: Option<SocketAddr>,
    /// The local app the inbound listener forwards to.
    #[arg(
        long,
        env = "SERIN_PROXY_INBOUND_FORWARD",
        requires = "inbound",
        conflicts_with = "config"
    )]
    inbound_forward: Option<SocketAddr>,
    /// Identity label on every metric, KEY=VALUE (repeatable; e.g. namespace=prod, deployment=web, pod=web-1).
    /// Added to (and overriding) the file's `labels:`.
    #[arg(long = "label", env = "SERIN_PROXY_LABELS", value_delimiter = ',', value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// How often the --config file is checked for changes (e.g. 1s, 500ms).
    #[arg(long, env = "SERIN_PROXY_RELOAD_INTERVAL", default_value = "1s", value_parser = parse_interval)]
    reload_interval: Duration,
    /// Control-plane mode: stream route tables from this URL (http://HOST:PORT) instead of a file's
    /// `routes:`; the last table stays in force while the control plane is unreachable.
    #[arg(long, env = "SERIN_PROXY_CONTROL_PLANE", requires = "workload", value_parser = parse_control_plane)]
    control_plane: Option<http::Uri>,
    /// The workload this proxy serves, NAMESPACE/NAME (with --control-plane; picks the namespace
    /// whose short Service names resolve and whose consumer routes apply).
    #[arg(long, env = "SERIN_PROXY_WORKLOAD", requires = "control_plane", value_parser = parse_workload)]
    workload: Option<serin_mesh_api::protocol::Workload>,
    /// Transparent mode: the outbound listener takes connections redirected by `serin-proxy
    /// init` (original destination read from the kernel; unknown destinations relayed as TCP).
    #[arg(long, env = "SERIN_PROXY_TRANSPARENT")]
    transparent: bool,
    /// Transparent inbound listener (the REDIRECT target of inbound TCP; the app is reached at
    /// 127.0.0.1 on the original port). Only with --transparent.
    #[arg(
        long,
        env = "SERIN_PROXY_TRANSPARENT_INBOUND",
        default_value = "0.0.0.0:4143"
    )]
    transparent_inbound: SocketAddr,
    /// IPv6 twins of the transparent listeners ([::1] beside 127.0.0.1, [::] beside 0.0.0.0,
    /// same ports), where `serin-proxy init`'s ip6tables rules send IPv6 connections: auto
    /// (when the network namespace has IPv6), on (fail to start without them) or off.
    #[arg(
        long,
        env = "SERIN_PROXY_TRANSPARENT_IPV6",
        default_value = "auto",
        requires = "transparent"
    )]
    transparent_ipv6: serin_proxy::capture::Ipv6Mode,
    /// How long a captured connection may stay silent before it is relayed as opaque TCP
    /// (protocols where the server speaks first), e.g. 1s, 300ms.
    // Not 0: a connection whose first bytes are not there the moment it is accepted (most of
    // them) would be relayed as opaque TCP, unrouted and uncounted.
    #[arg(long, env = "SERIN_PROXY_DETECT_TIMEOUT", default_value = "1s", value_parser = parse_interval)]
    detect_timeout: Duration,
    /// Most client connections each proxying listener keeps open when no file is given (the
    /// file's `outbound.maxConnections` / `inbound.maxConnections`); above it, it stops accepting.
    #[arg(long, env = "SERIN_PROXY_MAX_CONNECTIONS", default_value_t = serin_proxy::config::DEFAULT_MAX_CONNECTIONS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,
    /// Worker threads (1 keeps the sidecar small; the runtime is then single-threaded).
    #[arg(long, env = "SERIN_PROXY_THREADS", default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    threads: usize,
    #[command(flatten)]
    timeouts: TimeoutArgs,
}

/// The file's timing keys, for proxies run without a file (an injected sidecar has only its
/// flags and environment). With --config the file's keys are the place, and these are errors.
#[derive(clap::Args, Debug, Default)]
struct TimeoutArgs {
    /// How long in-flight requests may run after SIGTERM (the file's `shutdownTimeout`; default
    /// 30s, keep it under the pod's terminationGracePeriodSeconds).
    #[arg(long, env = "SERIN_PROXY_SHUTDOWN_TIMEOUT", value_parser = parse_interval, conflicts_with = "config")]
    shutdown_timeout: Option<Duration>,
    /// Time allowed to connect to an endpoint before a 502 (`connectTimeout`; default 5s).
    #[arg(long, env = "SERIN_PROXY_CONNECT_TIMEOUT", value_parser = parse_interval, conflicts_with = "config")]
    connect_timeout: Option<Duration>,
    /// Longest pause inside a body, each way, and longest wait for a response head on a route
    /// without `timeout` (`bodyIdleTimeout`; default 60s; raise it for long polls).
    #[arg(long, env = "SERIN_PROXY_BODY_IDLE_TIMEOUT", value_parser = parse_interval, conflicts_with = "config")]
    body_idle_timeout: Option<Duration>,
    /// An h2c client connection without open streams for this long is closed (`h2IdleTimeout`;
    /// default 60s).
    #[arg(long, env = "SERIN_PROXY_H2_IDLE_TIMEOUT", value_parser = parse_interval, conflicts_with = "config")]
    h2_idle_timeout: Option<Duration>,
    /// How long a gone endpoint's series stay on /metrics (`metricsRetainIdle`; default 10m; 0
    /// drops them at the next table swap).
    #[arg(long, env = "SERIN_PROXY_METRICS_RETAIN_IDLE", value_parser = parse_duration, conflicts_with = "config")]
    metrics_retain_idle: Option<Duration>,
}

impl TimeoutArgs {
    /// Sets the timings given on the command line (or in the environment) in `cfg`.
    fn apply(&self, cfg: &mut ProxyConfig) {
        let set = |field: &mut Duration, v: Option<Duration>| {
            if let Some(v) = v {
                *field = v;
            }
        };
        set(&mut cfg.shutdown_timeout, self.shutdown_timeout);
        set(&mut cfg.connect_timeout, self.connect_timeout);
        set(&mut cfg.body_idle_timeout, self.body_idle_timeout);
        set(&mut cfg.h2_idle_timeout, self.h2_idle_timeout);
        set(&mut cfg.metrics_retain_idle, self.metrics_retain_idle);
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("--label {s:?}: expected KEY=VALUE"))?;
    if let Some(why) = serin_proxy::config::identity_label_problem(k) {
        return Err(format!("--label {s:?}: {why}"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_control_plane(s: &str) -> Result<http::Uri, String> {
    serin_mesh_api::client::parse_url(s).map_err(|e| format!("--control-plane: {e}"))
}

fn parse_workload(s: &str) -> Result<serin_mesh_api::protocol::Workload, String> {
    s.parse().map_err(|e| format!("--workload: {e}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    serin_mesh_api::table::parse_duration(s)
        .map_err(|e| format!("{e}; accepted: {}", serin_mesh_api::table::DURATION_FORM))
}

/// A period: zero would make the file watcher spin (and tokio's interval refuses it).
fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!(
            "must be above 0; accepted: {}",
            serin_mesh_api::table::DURATION_FORM
        )),
        d => Ok(d),
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Some(Command::Init(init)) => capture(init),
        None => start(args.run),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line (with causes), not a backtrace.
            eprintln!("serin-proxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn capture(args: InitArgs) -> anyhow::Result<()> {
    use serin_proxy::capture::{
        CaptureConfig, CaptureError, Family, InitAction, Iptables, Ipv6Decision, LOCAL_PORT_RANGE,
        Plan, PodIpv6, PortRangeSource, Removal, ipv6_decision, local_port_range_for, tool_for,
    };
    // A dry run prints the install plan even with --remove (as below), so it reads the range.
    let action = if args.dry_run {
        InitAction::DryRun
    } else if args.remove {
        InitAction::Remove
    } else {
        InitAction::Install
    };
    // The connections the pod opens take their source ports from this range (set per pod
    // before any container starts, e.g. by securityContext.sysctls), so init reads it here,
    // in the pod's namespace; removal does not need it.
    let (local_port_range, source) = local_port_range_for(action, args.track_upstream, || {
        std::fs::read_to_string(LOCAL_PORT_RANGE)
    })
    .map_err(anyhow::Error::msg)?;
    if let PortRangeSource::AssumedDefault(why) = source {
        eprintln!(
            "serin-proxy init: {why}; assuming the kernel's default {:?}",
            serin_proxy::capture::DEFAULT_LOCAL_PORT_RANGE
        );
    }
    let cfg = CaptureConfig {
        inbound_port: args.inbound_port,
        outbound_port: args.outbound_port,
        proxy_uid: args.proxy_uid,
        skip_inbound_ports: args.skip_inbound_ports.into_iter().collect(),
        skip_outbound_ports: args.skip_outbound_ports.into_iter().collect(),
        track_loopback: args.track_loopback,
        track_upstream: args.track_upstream,
        local_port_range,
    };
    let pod_ipv6 = PodIpv6::read();
    let ipv6 = ipv6_decision(args.ipv6, action, &pod_ipv6).map_err(anyhow::Error::msg)?;
    let plans: Vec<Plan> = Family::ALL
        .into_iter()
        .filter(|f| *f == Family::V4 || ipv6 == Ipv6Decision::Capture)
        .map(|f| cfg.plan_for(f))
        .collect();
    if args.dry_run {
        for plan in &plans {
            println!(
                "# {} ({})",
                plan.family.name(),
                tool_for(args.iptables_mode, plan.family)
            );
            print!(
                "{}",
                plan.render(&tool_for(args.iptables_mode, plan.family))
            );
        }
        // What the same flags would do for real in this namespace, when it differs from the
        // dry run's both-families print.
        let here = ipv6_decision(args.ipv6, InitAction::Install, &pod_ipv6);
        match (&ipv6, here) {
            (Ipv6Decision::Skip(why), _) => println!("# {why}"),
            (Ipv6Decision::Capture, Ok(Ipv6Decision::Skip(why))) => {
                println!("# here `init --ipv6 auto` would install the IPv4 rules only: {why}")
            }
            (Ipv6Decision::Capture, Err(why)) => println!("# here this would fail: {why}"),
            (Ipv6Decision::Capture, Ok(Ipv6Decision::Capture)) => {}
        }
        return Ok(());
    }
    let v4 = Iptables::detect(args.iptables_mode)?;
    // Every tool is found before anything is touched.
    let v6 = v4.family(Family::V6);
    if ipv6 == Ipv6Decision::Capture && !args.remove && !v6.available() {
        anyhow::bail!(
            "{}; this pod has IPv6, and without ip6tables rules its IPv6 connections would bypass the proxy: install it, or pass --ipv6 off (SERIN_PROXY_INIT_IPV6=off; on an injected pod the annotation serin.dev/capture-ipv6: off) to capture IPv4 only",
            CaptureError::NoIptables {
                wanted: v6.bin.clone()
            }
        );
    }
    if args.remove {
        let removals = v4.remove_all(&plans);
        for (family, removal) in removals.done {
            let tool = v4.family(family);
            match removal {
                Removal::Removed => println!(
                    "serin-proxy init: removed the {} capture rules ({})",
                    family.name(),
                    tool.bin
                ),
                Removal::NoTool => println!(
                    "serin-proxy init: no {} rules to remove: {} is not installed",
                    family.name(),
                    tool.bin
                ),
                Removal::NoTables => println!(
                    "serin-proxy init: no {} rules to remove: {} has no nat or raw table here",
                    family.name(),
                    tool.bin
                ),
            }
        }
        if let Some((family, e)) = removals.failed {
            return Err(
                anyhow::Error::new(e).context(format!("removing the {} rules", family.name()))
            );
        }
        if let Ipv6Decision::Skip(why) = &ipv6 {
            println!("serin-proxy init: {why}");
        }
        return Ok(());
    }
    match v4.install_all(&plans) {
        Ok(installed) => {
            for (family, installed) in &installed {
                report(&cfg, &v4.family(*family), *family, installed);
            }
        }
        Err((family, e)) => {
            let hint = if family == Family::V6 {
                "; nothing is installed: this pod has IPv6, and without IPv6 rules its IPv6 connections would bypass the proxy (pass --ipv6 off, SERIN_PROXY_INIT_IPV6=off, or on an injected pod the annotation serin.dev/capture-ipv6: off, to capture IPv4 only)"
            } else {
                ""
            };
            return Err(anyhow::Error::new(e).context(format!(
                "installing the {} capture rules failed{hint}",
                family.name()
            )));
        }
    }
    if let Ipv6Decision::Skip(why) = &ipv6 {
        println!("serin-proxy init: {why}");
    }
    Ok(())
}

/// The init container's log lines for one family's install.
fn report(
    cfg: &serin_proxy::capture::CaptureConfig,
    tool: &serin_proxy::capture::Iptables,
    family: serin_proxy::capture::Family,
    installed: &serin_proxy::capture::Installed,
) {
    use serin_proxy::capture::{Exemption, Family};
    // IPv4's lines read as they always have; IPv6's say which family they are about.
    let fam = if family == Family::V4 { "" } else { "IPv6 " };
    println!(
        "serin-proxy init: {fam}capture rules installed ({}): inbound -> :{}, outbound -> :{}, proxy uid {} exempt",
        tool.bin, cfg.inbound_port, cfg.outbound_port, cfg.proxy_uid
    );
    match installed.skipped(Exemption::Loopback) {
        Some(e) => eprintln!(
            "serin-proxy init: warning: {fam}loopback TCP stays connection-tracked (capture works; each loopback packet costs more CPU): {e}"
        ),
        None if cfg.track_loopback => {
            println!(
                "serin-proxy init: {fam}loopback TCP stays connection-tracked (--track-loopback)"
            )
        }
        None => {
            println!("serin-proxy init: {fam}loopback-only TCP exempt from connection tracking")
        }
    }
    let (lo, hi) = cfg.local_port_range;
    match installed.skipped(Exemption::Upstream) {
        Some(e) => eprintln!(
            "serin-proxy init: warning: the proxy's {fam}upstream connections stay connection-tracked (capture works; each of their packets costs more CPU): {e}"
        ),
        None if cfg.track_upstream => println!(
            "serin-proxy init: the proxy's {fam}upstream connections stay connection-tracked (--track-upstream)"
        ),
        None => println!(
            "serin-proxy init: the proxy's {fam}upstream connections and skip-port connections exempt from connection tracking (source ports {lo}-{hi})"
        ),
    }
}

fn start(args: RunArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(run(args))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (mut cfg, table) = match &args.config {
        Some(path) => {
            let file = serin_proxy::config::load(path)?;
            (file.proxy, Some(file.table))
        }
        None => {
            let inbound = match (args.inbound, args.inbound_forward) {
                (Some(listen), Some(forward)) => Some(InboundConfig {
                    listen,
                    forward,
                    timeout: None,
                    max_connections: args.max_connections,
                }),
                _ => None,
            };
            let mut cfg = ProxyConfig {
                outbound: args.outbound,
                admin: Some(args.admin),
                inbound,
                outbound_max_connections: args.max_connections,
                ..ProxyConfig::default()
            };
            args.timeouts.apply(&mut cfg);
            (cfg, None)
        }
    };
    if args.transparent {
        cfg.transparent = Some(serin_proxy::TransparentConfig {
            inbound: Some(args.transparent_inbound),
            detect_timeout: args.detect_timeout,
            inbound_max_connections: args.max_connections,
            ipv6: args.transparent_ipv6,
        });
    }
    let extra: BTreeMap<String, String> = args.labels.into_iter().collect();
    cfg.labels.extend(extra);

    let proxy = Proxy::start(cfg).await?;
    let control = match (args.control_plane, args.workload) {
        (Some(url), Some(workload)) => {
            if table.as_ref().is_some_and(|t| !t.routes.is_empty()) {
                tracing::warn!("--control-plane is set: the `routes:` of --config are ignored");
            }
            Some(serin_proxy::control_client::spawn(
                url,
                workload,
                proxy.table(),
            ))
        }
        _ => None,
    };
    let table = if control.is_some() { None } else { table };
    if let (Some(path), Some(mut table)) = (args.config, table) {
        if table.version == 0 {
            table.version = 1;
        }
        proxy
            .table()
            .apply(table)
            .with_context(|| format!("{}: route table rejected", path.display()))?;
        tokio::spawn(serin_proxy::reload::watch(
            path,
            proxy.table(),
            args.reload_interval,
        ));
    }

    serin_proxy::shutdown_signal().await;
    if !proxy.shutdown().await {
        tracing::warn!("shutdown deadline passed with requests still in flight; they were cut");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_flags_reach_the_proxy_config_and_unset_ones_keep_the_defaults() {
        let args = Args::try_parse_from([
            "serin-proxy",
            "--body-idle-timeout",
            "5m",
            "--shutdown-timeout",
            "45s",
            "--metrics-retain-idle",
            "0s",
        ])
        .expect("valid flags");
        let mut cfg = ProxyConfig::default();
        args.run.timeouts.apply(&mut cfg);
        assert_eq!(cfg.body_idle_timeout, Duration::from_secs(300));
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(45));
        assert_eq!(cfg.metrics_retain_idle, Duration::ZERO);
        let defaults = ProxyConfig::default();
        assert_eq!(cfg.connect_timeout, defaults.connect_timeout);
        assert_eq!(cfg.h2_idle_timeout, defaults.h2_idle_timeout);
    }
}
