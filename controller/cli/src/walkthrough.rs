//! `serin walkthrough`: the canary engine driven through two scripted rollouts with simulated
//! observations (one rolled back, one promoted), printed tick by tick. Exits non-zero when either
//! outcome differs from what the engine is expected to decide.

/// Flags of `serin walkthrough`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also print the events, alerts and event-webhook notifications of every tick.
    #[arg(long, short)]
    pub verbose: bool,
}

/// Runs the walkthrough and prints it to stdout.
pub fn run(args: Args) -> anyhow::Result<()> {
    let report = serin_demo::walkthrough::run(serin_demo::walkthrough::Options {
        verbose: args.verbose,
    });
    print!("{}", report.text);
    if report.ok() {
        Ok(())
    } else {
        anyhow::bail!(
            "the engine walkthrough did not end as expected: {}",
            report.unexpected.join("; ")
        )
    }
}
