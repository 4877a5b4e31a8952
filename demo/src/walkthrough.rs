//! The engine walkthrough behind `serin walkthrough`: one canary, two rollouts, driven through
//! the real engine ([`serin_core::step`]) by the simulated runtime in [`serin_core::sim`]. The
//! first revision degrades its success rate and is rolled back; the fix is then promoted after an
//! inconclusive tick and a promotion approval. Observations (readiness, check values, webhook
//! answers) are simulated and labelled as such; the decisions are the engine's.

use std::fmt::Write as _;
use std::time::Duration;

use serin_core::sim::{Sim, TickLog, request_duration as latency, success_rate};
use serin_core::{
    Action, CheckResult, CommandAction, HistoryEntry, InconclusivePolicy, Phase, Plan, Strategy,
    Timestamp, Verdict, Webhook, WebhookKind,
};

/// How much to print.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Also print events, alerts and notifications for every tick.
    pub verbose: bool,
}

/// What the walkthrough printed and whether both rollouts ended as expected.
#[derive(Clone, Debug)]
pub struct Report {
    /// The text to print.
    pub text: String,
    /// Expectations that did not hold (empty when the walkthrough succeeded).
    pub unexpected: Vec<String>,
}

impl Report {
    /// Whether the rollback and the promotion both happened as expected.
    pub fn ok(&self) -> bool {
        self.unexpected.is_empty()
    }
}

const START: Timestamp = Timestamp::from_secs(1_800_000_000);
const STABLE: &str = "podinfo-6.0.0";
const BROKEN: &str = "podinfo-6.0.1";
const FIXED: &str = "podinfo-6.0.2";
const MAX_TICKS: usize = 40;

/// The plan of the walkthrough's canary (a typical Flagger manifest: 10% steps to 50%,
/// threshold 3, one-minute interval, success-rate and latency checks, a load test, a promotion
/// approval and a Slack-style notification).
pub fn plan() -> Plan {
    Plan {
        strategy: Strategy::Canary {
            step_weights: Strategy::linear(10, 50),
            step_weight_promotion: None,
            mirror: None,
        },
        interval: Duration::from_secs(60),
        threshold: 3,
        progress_deadline: Duration::from_secs(600),
        skip_analysis: false,
        suspend: false,
        webhooks: vec![
            hook("load-test", WebhookKind::Rollout),
            hook("release-approval", WebhookKind::ConfirmPromotion),
            hook("notify-chat", WebhookKind::PostRollout),
        ],
        checks: vec!["request-success-rate".into(), "request-duration".into()],
        on_inconclusive: InconclusivePolicy::Wait,
        inconclusive_budget: Default::default(),
        primary_ready_threshold: 100,
        canary_ready_threshold: 100,
        session_affinity: None,
        revert_on_deletion: false,
    }
}

fn hook(name: &str, kind: WebhookKind) -> Webhook {
    Webhook {
        name: name.into(),
        kind,
    }
}

/// Runs both rollouts and returns the printed text and any broken expectation.
pub fn run(options: Options) -> Report {
    let mut out = String::new();
    let mut unexpected = Vec::new();
    let plan = plan();
    let _ = writeln!(
        out,
        "Serin engine walkthrough: the canary engine (serin-core) driven tick by tick.\n\
         Observations are SIMULATED (workload readiness, metric values, webhook answers); no\n\
         workload, proxy or metric provider is involved. Every decision shown is the engine's.\n"
    );
    let _ = writeln!(out, "Canary plan: {}\n", describe_plan(&plan));

    let mut sim = Sim::new(plan, STABLE, START);
    sim.world.primary_ready = true;

    // --- bootstrap ---
    let _ = writeln!(out, "== Bootstrap: target {STABLE} becomes the primary ==");
    drive(
        &mut sim,
        &mut out,
        options,
        |s| s.status.phase == Phase::Initialized,
        |_| {},
    );
    expect(
        &mut unexpected,
        sim.status.phase == Phase::Initialized && !sim.world.canary_up,
        "bootstrap: primary initialized and target scaled to zero",
    );

    // --- rollout 1: a regression, rolled back ---
    let _ = writeln!(
        out,
        "\n== Rollout 1: {BROKEN} (simulated regression: success rate drops once it takes 20% of traffic) =="
    );
    sim.deploy(BROKEN);
    drive(&mut sim, &mut out, options, terminal, |sim| {
        let w = sim.status.canary_weight;
        let rate = if w >= 20 {
            96.4 - f64::from(w) / 50.0
        } else {
            99.7
        };
        sim.world.checks = vec![success_rate(rate, 1800), latency(230.0, 1800)];
    });
    expect(
        &mut unexpected,
        sim.status.phase == Phase::Failed,
        "rollout 1 ends Failed (rolled back)",
    );
    expect(
        &mut unexpected,
        sim.world.promotions.is_empty(),
        "rollout 1 promotes nothing",
    );
    expect(
        &mut unexpected,
        sim.status.failed_checks == sim.plan.threshold,
        "rollout 1 rolls back when failed checks reach the threshold",
    );
    expect(
        &mut unexpected,
        sim.world.routes.primary_weight == 100 && !sim.world.canary_up,
        "rollout 1 leaves all traffic on the primary and the canary scaled to zero",
    );
    expect(
        &mut unexpected,
        sim.status.last_promoted_spec.as_deref() == Some(STABLE),
        "the primary still runs the stable revision",
    );

    // --- rollout 2: the fix, promoted ---
    let _ = writeln!(
        out,
        "\n== Rollout 2: {FIXED} (healthy; the first analysis tick sees too little traffic, and the\n   release approval is given one tick after it is asked for) =="
    );
    sim.world.gates.insert("release-approval".into(), false);
    sim.deploy(FIXED);
    let mut analysis_ticks = 0;
    let mut waited_for_approval = 0;
    drive(&mut sim, &mut out, options, terminal, |sim| {
        let w = sim.status.canary_weight;
        if sim.status.phase == Phase::WaitingPromotion {
            waited_for_approval += 1;
            if waited_for_approval == 2 {
                let _ = sim.command(
                    CommandAction::GateOpen {
                        gate: "release-approval".into(),
                    },
                    "release-manager",
                );
            }
        }
        if w > 0 {
            analysis_ticks += 1;
        }
        sim.world.checks = if analysis_ticks == 1 {
            vec![
                CheckResult {
                    verdict: Verdict::Inconclusive,
                    detail: "below minRequests 100".into(),
                    ..success_rate(100.0, 40)
                },
                latency(190.0, 40),
            ]
        } else {
            vec![success_rate(99.93, 2400), latency(185.0, 2400)]
        };
    });
    expect(
        &mut unexpected,
        sim.status.phase == Phase::Succeeded,
        "rollout 2 ends Succeeded (promoted)",
    );
    expect(
        &mut unexpected,
        sim.world.promotions == [FIXED.to_string()],
        "rollout 2 promotes the fixed revision exactly once",
    );
    expect(
        &mut unexpected,
        sim.status.last_promoted_spec.as_deref() == Some(FIXED),
        "the primary runs the fixed revision",
    );
    expect(
        &mut unexpected,
        sim.world.routes.primary_weight == 100 && !sim.world.canary_up,
        "rollout 2 ends with all traffic on the primary and the canary scaled to zero",
    );

    let _ = writeln!(out);
    if unexpected.is_empty() {
        let _ = writeln!(
            out,
            "Result: as expected. {BROKEN} was rolled back after {} failed checks; {FIXED} was promoted.",
            sim.plan.threshold
        );
    } else {
        let _ = writeln!(out, "Result: UNEXPECTED outcome:");
        for u in &unexpected {
            let _ = writeln!(out, "  - expected: {u}");
        }
    }
    Report {
        text: out,
        unexpected,
    }
}

fn terminal(sim: &Sim) -> bool {
    matches!(sim.status.phase, Phase::Succeeded | Phase::Failed)
}

fn expect(unexpected: &mut Vec<String>, holds: bool, what: &str) {
    if !holds {
        unexpected.push(what.to_string());
    }
}

/// Ticks until `done` (or [`MAX_TICKS`]), letting `script` set the simulated world before each
/// tick, and prints every tick.
fn drive(
    sim: &mut Sim,
    out: &mut String,
    options: Options,
    done: impl Fn(&Sim) -> bool,
    mut script: impl FnMut(&mut Sim),
) {
    for _ in 0..MAX_TICKS {
        script(sim);
        let tick = sim.tick().clone();
        print_tick(out, &tick, sim.plan.threshold, options);
        if done(sim) {
            return;
        }
    }
    let _ = writeln!(out, "  (stopped after {MAX_TICKS} ticks)");
}

fn print_tick(out: &mut String, tick: &TickLog, threshold: u32, options: Options) {
    let s = &tick.transition.status;
    let elapsed = tick.at.since(START).as_secs();
    let _ = writeln!(
        out,
        "\n  t+{:02}:{:02}  {:<16} primary {:>3}%  canary {:>3}%  failed checks {}/{}{}",
        elapsed / 60,
        elapsed % 60,
        s.phase.as_str(),
        s.primary_weight(),
        s.canary_weight,
        s.failed_checks,
        threshold,
        if s.paused.is_some() { "  (paused)" } else { "" },
    );
    for c in &tick.observation.commands {
        let _ = writeln!(
            out,
            "    command  {} by {} (simulated)",
            c.action.as_str(),
            c.by
        );
    }
    for g in &tick.observation.gates {
        let _ = writeln!(
            out,
            "    webhook  {:<18} {:<24} {} (simulated answer)",
            g.name,
            format!("[{}]", g.kind.as_str()),
            if g.passed { "passed" } else { "refused" },
        );
    }
    for c in &tick.observation.checks {
        let _ = writeln!(out, "    check    {}", describe_check(c));
    }
    let mut did = Vec::new();
    for a in &tick.transition.actions {
        match a {
            Action::Record(h) => print_why(out, h),
            Action::InitializePrimary => did.push("create/update primary".to_string()),
            Action::ScaleCanaryUp => did.push("scale canary up".into()),
            Action::ScaleCanaryToZero => did.push("scale canary to zero".into()),
            Action::SetRoutes(r) => {
                let mut d = format!("route {}/{}", r.primary_weight, r.canary_weight);
                if let Some(m) = r.mirror_weight {
                    let _ = write!(d, " mirror {m}%");
                }
                did.push(d);
            }
            Action::PromoteCanaryToPrimary { revision } => {
                did.push(format!("copy {revision} to the primary"));
            }
            Action::RevertTarget => did.push("revert target".into()),
            Action::Notify {
                webhook,
                phase,
                message,
                ..
            } => {
                if webhook.kind == WebhookKind::PostRollout || options.verbose {
                    did.push(format!(
                        "notify {} [{}] ({phase}: {message})",
                        webhook.name,
                        webhook.kind.as_str()
                    ));
                }
            }
            Action::Alert { severity, message } => {
                if options.verbose {
                    did.push(format!("alert {severity:?}: {message}"));
                }
            }
            Action::Event {
                kind,
                reason,
                message,
            } => {
                if options.verbose {
                    did.push(format!("event {kind:?} {reason}: {message}"));
                }
            }
        }
    }
    if !did.is_empty() {
        let _ = writeln!(out, "    actions  {}", did.join("; "));
    }
}

fn print_why(out: &mut String, h: &HistoryEntry) {
    let _ = writeln!(out, "    why      {}", h.message);
}

fn describe_check(c: &CheckResult) -> String {
    let value = c.value.map_or("-".to_string(), |v| format!("{v:.2}"));
    let verdict = match c.verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "FAIL",
        Verdict::Inconclusive => "inconclusive",
    };
    let mut s = format!(
        "{:<22} {:>8}  accepted {:<8} {:<12}",
        c.name,
        value,
        c.bound.to_string(),
        verdict
    );
    if let Some(n) = c.samples {
        let _ = write!(s, " {n} requests");
    }
    if !c.detail.is_empty() {
        let _ = write!(s, " ({})", c.detail);
    }
    s.push_str(" (simulated)");
    s
}

fn describe_plan(plan: &Plan) -> String {
    let strategy = match &plan.strategy {
        Strategy::Canary { step_weights, .. } => format!(
            "canary, weights {}",
            step_weights
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" -> ")
        ),
        Strategy::AbTesting { iterations, .. } => format!("A/B, {iterations} iterations"),
        Strategy::BlueGreen { iterations, .. } => format!("blue/green, {iterations} iterations"),
    };
    let hooks: Vec<String> = plan
        .webhooks
        .iter()
        .map(|w| format!("{} [{}]", w.name, w.kind.as_str()))
        .collect();
    format!(
        "{strategy}; interval {}s; threshold {}; checks request-success-rate >= 99 %, \
         request-duration <= 500 ms; webhooks {}",
        plan.interval.as_secs(),
        plan.threshold,
        hooks.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walkthrough_rolls_back_then_promotes() {
        let report = run(Options::default());
        assert!(report.ok(), "{:?}\n{}", report.unexpected, report.text);
        assert!(report.text.contains("SIMULATED"));
        assert!(report.text.contains("Failed"));
        assert!(report.text.contains("Succeeded"));
        assert!(report.text.contains("WaitingPromotion"));
        assert!(report.text.contains("inconclusive"));
        assert!(report.text.contains("Result: as expected"));
    }
}
