//! `serin plan -f canary.yaml --rps N`: before a rollout, what its schedule can prove at the
//! service's traffic: the expected time to a Pass for a healthy canary and to a Fail for one
//! with twice the primary's error rate, and how often the run would end by `onInconclusive`.
//! The figures come from seeded runs of the real judge (serin_analysis::planner).

use std::io::Write;

use serin_analysis::planner::{Estimate, Outcomes, Schedule, TrafficModel, estimate};
use serin_api::{Normalized, Outcome, Resource};

/// Estimate, for every Canary in the files, how long its rollout takes to prove a healthy
/// canary safe and to catch a doubled error rate at the given traffic. Exit status: 0 printed,
/// 1 an invalid Canary or a Canary without the judge, 2 unreadable input or bad flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Canary manifest (YAML or JSON, several documents allowed; `-` reads stdin).
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<String>,

    /// Total requests per second the service receives (primary and canary together), e.g. 8.5.
    #[arg(long, value_name = "RPS", allow_negative_numbers = true)]
    pub rps: f64,

    /// The primary's error rate to assume, in percent (`1%` or `1`).
    #[arg(
        long,
        default_value = "1%",
        value_name = "PERCENT",
        allow_hyphen_values = true
    )]
    pub error_rate: String,

    /// Simulated rollouts per scenario (more is steadier, slower).
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub trials: usize,
}

const INVALID: i32 = 1;
const UNREADABLE: i32 = 2;

/// Runs `serin plan`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let code = plan(&args);
    let _ = std::io::stdout().flush();
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

pub(crate) fn parse_percent(text: &str) -> Result<f64, String> {
    let t = text.trim().trim_end_matches('%').trim();
    match t.parse::<f64>() {
        Ok(v) if (0.0..50.0).contains(&v) => Ok(v / 100.0),
        _ => Err(format!(
            "--error-rate: {text:?} is not accepted; accepted: a percentage from 0 to under 50, e.g. 1% or 0.1"
        )),
    }
}

fn plan(args: &Args) -> i32 {
    let error_rate = match parse_percent(&args.error_rate) {
        Ok(v) => v,
        Err(m) => {
            eprintln!("serin plan: {m}");
            return UNREADABLE;
        }
    };
    if let Err(m) = check_rps("--rps", args.rps) {
        eprintln!("serin plan: {m}");
        return UNREADABLE;
    }
    if args.trials == 0 || args.trials > 100_000 {
        eprintln!(
            "serin plan: --trials: {} is not accepted; accepted: 1 to 100000",
            args.trials
        );
        return UNREADABLE;
    }
    let sources = match crate::validate::read_sources(&args.files, false) {
        Ok(s) => s,
        Err(m) => {
            eprintln!("serin plan: {m}");
            return UNREADABLE;
        }
    };
    let mut code = 0;
    let mut canaries = 0;
    for (source, text) in &sources {
        for doc in serin_api::check_manifests(text) {
            let label = format!("{source}: {}", doc.label());
            match &doc.outcome {
                Outcome::Valid(Resource::Canary(c)) => {
                    canaries += 1;
                    match Normalized::from_canary(c) {
                        Ok(n) => match report(&n, args, error_rate) {
                            Ok(text) => println!("{label}\n{text}"),
                            Err(m) => {
                                eprintln!("{label}: {m}");
                                code = code.max(INVALID);
                            }
                        },
                        Err(errors) => {
                            for e in errors {
                                eprintln!("{label}: {}: {}", e.path, e.message);
                            }
                            code = code.max(INVALID);
                        }
                    }
                }
                Outcome::Invalid(errors) if doc.kind.as_deref() == Some("Canary") => {
                    canaries += 1;
                    for e in errors {
                        eprintln!("{label}: {}: {}", e.path, e.message);
                    }
                    code = code.max(INVALID);
                }
                Outcome::Syntax { line, message, .. } => {
                    eprintln!(
                        "{source}: line {}: {message}",
                        line.map_or("?".into(), |l| l.to_string())
                    );
                    return UNREADABLE;
                }
                _ => {}
            }
        }
    }
    if canaries == 0 {
        eprintln!("serin plan: no Canary in {}", args.files.join(", "));
        return UNREADABLE;
    }
    code
}

use serin_analysis::planner::plan_duration as minutes;

fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

fn line(what: &str, o: &Outcomes, policy: &str) -> String {
    format!(
        "  {what}: promoted {} (median {}), rolled back by the judge {} (median {}), ended by onInconclusive ({policy}) {} (median {})",
        pct(o.promoted),
        minutes(o.median_to_promote),
        pct(o.failed),
        minutes(o.median_to_fail),
        pct(o.inconclusive),
        minutes(o.median_to_inconclusive),
    )
}

/// The plan for one Canary, as printed.
fn report(n: &Normalized, args: &Args, error_rate: f64) -> Result<String, String> {
    figures(n, args.rps, error_rate, args.trials)
}

/// Checks `--rps` (the same rule for `serin plan` and `serin validate --rps`).
pub(crate) fn check_rps(flag: &str, rps: f64) -> Result<(), String> {
    if rps.is_finite() && rps >= 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{flag}: {rps} is not accepted; accepted: requests per second, 0 or more (e.g. 8.5)"
        ))
    }
}

/// The planner's figures for one Canary at `rps` total requests per second, one indented line
/// each (also printed by `serin validate --rps`).
pub(crate) fn figures(
    n: &Normalized,
    rps: f64,
    error_rate: f64,
    trials: usize,
) -> Result<String, String> {
    let Some(j) = &n.judge else {
        return Err(
            "spec.analysis.judge is off: without the judge there is no evidence to plan for".into(),
        );
    };
    let serin_api::Strategy::Canary { weights, .. } = &n.strategy else {
        return Err(
            "serin plan models weighted canary rollouts (stepWeight/stepWeights); A/B testing and blue/green send traffic by match or mirror"
                .into(),
        );
    };
    let config = serin_controller::measure::judge_config(j);
    let schedule = Schedule {
        step_weights: weights.clone(),
        interval: n.interval,
        step_budget: Some(j.step_budget),
        run_budget: Some(j.run_budget),
    };
    let traffic = TrafficModel { rps, error_rate };
    let e: Estimate = estimate(&config, &schedule, &traffic, trials).map_err(|e| e.to_string())?;
    let policy = config.on_inconclusive.as_str();
    let steps: Vec<String> = weights.iter().map(|w| w.to_string()).collect();
    let mut out = format!(
        "  schedule: stepWeights {}, interval {}, stepBudget {}, runBudget {}, onInconclusive {policy}\n  judge: {}\n  traffic: {} requests/s ({} per interval), primary error rate {}%; {} simulated rollouts per line\n",
        steps.join(","),
        serin_analysis::format_duration(n.interval),
        serin_analysis::format_duration(j.step_budget),
        serin_analysis::format_duration(j.run_budget),
        config.margins_text(),
        rps,
        (rps * n.interval.as_secs_f64()).round(),
        error_rate * 100.0,
        trials,
    );
    out.push_str(&line("healthy canary", &e.healthy, policy));
    out.push('\n');
    out.push_str(&line("2x error rate ", &e.regression, policy));
    out.push('\n');
    let verdict = format!("  => {}", e.summary(rps, policy));
    out.push_str(&verdict);
    Ok(out)
}
