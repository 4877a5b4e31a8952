//! `serin`: the command line people and CI pipelines call. Thin: parse flags, set up tracing,
//! call a library `run()`.

use clap::{Parser, Subcommand};

mod check;
mod ci;
mod control_plane;
mod controller;
mod crds;
mod demo;
mod inject;
mod injector;
mod install;
mod load;
mod plan;
mod rollout;
mod sample_app;
mod uninstall;
mod validate;
mod walkthrough;

/// Serin: progressive delivery with its own mesh.
#[derive(Parser, Debug)]
#[command(name = "serin", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole platform on this machine: a bad release rolled back by the judge, a good one
    /// promoted, shown step by step (no cluster, loopback only, no arguments needed).
    Demo(demo::Args),
    /// Run the canary controller (--kubernetes: reconcile Canaries in a cluster).
    Controller(Box<controller::Args>),
    /// Walk the canary engine through a rolled-back and a promoted rollout (simulated observations).
    Walkthrough(walkthrough::Args),
    /// Run a small podinfo-like HTTP service (versions, error rate, latency) for demos and tests.
    SampleApp(sample_app::Args),
    /// Send open-loop load at a fixed rate and print a summary, or serve load-test webhooks.
    Load(load::Args),
    /// Start a local rollout: set a Process's revision (and env) for the local controller; --wait follows it.
    Rollout(rollout::Args),
    /// Print Serin's CustomResourceDefinitions (Canary, MetricTemplate, AlertProvider) as YAML.
    Crds(crds::Args),
    /// Check that Serin is installed and working in the cluster (--pre: before installing);
    /// exit 0 when every check passes, 1 otherwise.
    Check(check::Args),
    /// Print every manifest a cluster needs (`serin install | kubectl apply -f -`).
    Install(install::Args),
    /// Print what `kubectl delete -f -` must remove to take Serin out of the cluster
    /// (`serin uninstall | kubectl delete -f -`); refuses while Canaries or meshed pods remain.
    Uninstall(uninstall::Args),
    /// Check Canary, MetricTemplate and AlertProvider manifests with the controller's rules.
    Validate(validate::Args),
    /// Before a rollout: how long a Canary's schedule takes to promote a healthy release and to
    /// catch a doubled error rate at a given traffic (--rps), from simulated runs of the judge.
    Plan(plan::Args),
    /// Show canaries: phase, weight, failed checks, revision in flight.
    Status(ci::StatusArgs),
    /// Wait for the rollout of the target's current revision; exit 0 promoted, 1 rolled back,
    /// 2 waiting for a person (--until-paused), 3 timed out, 4 error, 5 rolled back by
    /// onInconclusive (no decision within the judge's budget).
    Wait(ci::WaitArgs),
    /// Promote the canary now, skipping the rest of the analysis (recorded with who/when).
    Promote(ci::ActionArgs),
    /// Roll the canary back now (recorded with who/when).
    Abort(ci::ActionArgs),
    /// Stop advancing the canary until resumed (recorded with who/when).
    Pause(ci::ActionArgs),
    /// Resume a paused canary (recorded with who/when).
    Resume(ci::ActionArgs),
    /// Open or close a canary's manual gate (Flagger's /gate/check and /rollback/check).
    Gate(ci::GateArgs),
    /// Run the traffic-split control plane (HTTPRoute / TrafficSplit to proxy route tables).
    ControlPlane(control_plane::Args),
    /// Add serin-proxy (capture init container + native sidecar) to the pods and pod templates
    /// of Kubernetes manifests (files, directories or -), YAML in, YAML out.
    Inject(inject::Args),
    /// Run the sidecar-injection admission webhook (TLS; creates its certificate Secret and
    /// the webhook's caBundle when missing).
    Injector(Box<injector::Args>),
}

fn main() {
    if let Err(e) = run() {
        // One line naming the flag or field and what is accepted, whatever RUST_BACKTRACE
        // says (anyhow's `Error: ...` + stack dump is for developers, not for a CI log).
        eprintln!("error: {}", message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: many errors already quote their
/// cause in their own message, which anyhow's `{:#}` would then print twice.
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        // CI commands promise exit code 4 for invalid flags (2 means "waiting for a person").
        if e.use_stderr() && ci::is_ci_command(std::env::args().nth(1).as_deref()) {
            let _ = e.print();
            std::process::exit(4);
        }
        e.exit()
    });
    // `serin demo` logs to a file in its directory: the terminal shows the demo.
    if !matches!(cli.command, Command::Demo(_)) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("SERIN_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_writer(std::io::stderr)
            // Colours only on a terminal: logs redirected to a file stay greppable.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Walkthrough(args) => walkthrough::run(args),
        Command::SampleApp(args) => sample_app::run(args),
        Command::Load(args) => load::run(args),
        Command::Rollout(args) => rollout::run(args),
        Command::Controller(args) => controller::run(*args),
        Command::Crds(args) => crds::run(args),
        Command::Install(args) => install::run(args),
        Command::Uninstall(args) => uninstall::run(args),
        Command::Check(args) => {
            if !check::run(args)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Validate(args) => validate::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Status(args) => ci::status(args),
        Command::Wait(args) => ci::wait(args),
        Command::Promote(args) => ci::act(args, serin_dashboard::model::Action::Promote),
        Command::Abort(args) => ci::act(args, serin_dashboard::model::Action::Abort),
        Command::Pause(args) => ci::act(args, serin_dashboard::model::Action::Pause),
        Command::Resume(args) => ci::act(args, serin_dashboard::model::Action::Resume),
        Command::Gate(args) => ci::gate(args),
        Command::ControlPlane(args) => control_plane::run(args),
        Command::Inject(args) => inject::run(args),
        Command::Injector(args) => injector::run(*args),
    }
}
