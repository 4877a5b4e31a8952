//! `serin`: the command line people and CI pipelines call. Thin: parse flags, set up tracing,
//! call a library `run()`.

use clap::{Parser, Subcommand};

mod control_plane;
mod controller;
mod crds;
mod load;
mod sample_app;
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
    /// Walk the canary engine through a rolled-back and a promoted rollout (simulated observations).
    Walkthrough(walkthrough::Args),
    /// Run the canary controller (--kubernetes: reconcile Canaries in a cluster).
    Controller(controller::Args),
    /// Run a small podinfo-like HTTP service (versions, error rate, latency) for demos and tests.
    SampleApp(sample_app::Args),
    /// Send open-loop load at a fixed rate and print a summary, or serve load-test webhooks.
    Load(load::Args),
    /// Run the traffic-split control plane (HTTPRoute / TrafficSplit to proxy route tables).
    ControlPlane(control_plane::Args),
    /// Print Serin's CustomResourceDefinitions (Canary, MetricTemplate, AlertProvider) as YAML.
    Crds(crds::Args),
    /// Check Canary, MetricTemplate and AlertProvider manifests with the controller's rules.
    Validate(validate::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SERIN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Walkthrough(args) => walkthrough::run(args),
        Command::SampleApp(args) => sample_app::run(args),
        Command::Load(args) => load::run(args),
        Command::Controller(args) => controller::run(args),
        Command::Crds(args) => crds::run(args),
        Command::Validate(args) => validate::run(args),
        Command::ControlPlane(args) => control_plane::run(args),
    }
}
