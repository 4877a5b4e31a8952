//! Conversions between the engine's types (`serin-core`) and the API's own JSON types, for the
//! runtimes implementing [`crate::Backend`] and for the CLI reading Canary status on Kubernetes.
//!
//! The API keeps its own types so its JSON stays stable when the engine changes; everything the
//! engine records maps onto them here.

use crate::model::{
    self, Action, CanaryKey, CanarySummary, CommandState, EntryKind, Gates, HistoryEntry, Outcome,
    RunResult, RunSummary, TargetRef, WaitReason, Waiting, gate,
};

/// An engine instant as a [`jiff::Timestamp`] (out-of-range values clamp to the epoch).
pub fn time(t: serin_core::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(t.as_millis()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// A [`jiff::Timestamp`] as an engine instant.
pub fn core_time(t: jiff::Timestamp) -> serin_core::Timestamp {
    serin_core::Timestamp::from_millis(t.as_millisecond())
}

/// The engine's phase as the API's.
pub fn phase(p: serin_core::Phase) -> model::Phase {
    use serin_core::Phase as P;
    match p {
        P::Initializing => model::Phase::Initializing,
        P::Initialized => model::Phase::Initialized,
        P::Waiting => model::Phase::Waiting,
        P::Progressing => model::Phase::Progressing,
        P::WaitingPromotion => model::Phase::WaitingPromotion,
        P::Promoting => model::Phase::Promoting,
        P::Finalising => model::Phase::Finalising,
        P::Succeeded => model::Phase::Succeeded,
        P::Failed => model::Phase::Failed,
        P::Terminating => model::Phase::Terminating,
        P::Terminated => model::Phase::Terminated,
    }
}

/// A run's outcome.
pub fn outcome(o: &serin_core::RunOutcome) -> (Outcome, jiff::Timestamp) {
    use serin_core::RunOutcome as O;
    match o {
        O::Promoted { reason, at } => (
            Outcome {
                result: RunResult::Promoted,
                reason: reason.clone(),
            },
            time(*at),
        ),
        O::RolledBack { reason, at } => (
            Outcome {
                // The engine records a manual abort as a rollback whose reason says so.
                result: if reason.to_ascii_lowercase().contains("abort") {
                    RunResult::Aborted
                } else {
                    RunResult::RolledBack
                },
                reason: reason.clone(),
            },
            time(*at),
        ),
        O::Superseded { by_revision, at } => (
            Outcome {
                result: RunResult::Superseded,
                reason: format!("superseded by revision {by_revision}"),
            },
            time(*at),
        ),
    }
}

/// A run.
pub fn run(r: &serin_core::Run) -> RunSummary {
    let (outcome, ended_at) = match &r.outcome {
        Some(o) => {
            let (o, at) = outcome(o);
            (Some(o), Some(at))
        }
        None => (None, None),
    };
    RunSummary {
        id: r.id,
        revision: r.revision.clone(),
        started_at: time(r.started_at),
        ended_at,
        outcome,
    }
}

/// The overview row of a Canary from the engine's persisted status.
///
/// `target_revision` is the revision the target declares now, as the runtime computes it (the
/// pod-template hash on Kubernetes, the manifest's revision locally).
pub fn summary(
    key: &CanaryKey,
    target: TargetRef,
    status: &serin_core::Status,
    target_revision: Option<String>,
) -> CanarySummary {
    let ph = phase(status.phase);
    let waiting = if let Some(p) = &status.paused {
        Some(Waiting {
            reason: WaitReason::Paused,
            since: Some(time(p.at)),
            // The engine's reason usually names who already ("paused by dana").
            message: Some(if p.reason.contains(&p.by) {
                p.reason.clone()
            } else {
                format!("by {}: {}", p.by, p.reason)
            }),
        })
    } else {
        let reason = match status.phase {
            serin_core::Phase::Waiting => Some(WaitReason::ConfirmRollout),
            serin_core::Phase::WaitingPromotion => Some(WaitReason::ConfirmPromotion),
            _ => None,
        };
        reason.map(|reason| Waiting {
            reason,
            since: status.last_transition_time.map(time),
            message: None,
        })
    };
    let gate_open = |name: &str| status.gates.get(name).is_some_and(|g| g.open);
    CanarySummary {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        target,
        phase: ph,
        canary_weight: status.canary_weight,
        failed_checks: status.failed_checks,
        iterations: status.iterations,
        last_transition_time: status.last_transition_time.map(time),
        target_revision,
        promoted_revision: status.last_promoted_spec.clone(),
        run: status.run.as_ref().map(run),
        paused: status.paused.is_some(),
        waiting,
        gates: Gates {
            confirm: gate_open(gate::CONFIRM),
            rollback: gate_open(gate::ROLLBACK),
        },
        message: status
            .promoted_condition()
            .map(|c| c.message.clone())
            .filter(|m| !m.is_empty()),
        holding: status.hold.clone().filter(|h| !h.is_empty()),
    }
}

/// An API command as the engine's command (the `serin.dev/command` annotation's shape).
pub fn command_to_core(c: &model::Command) -> serin_core::Command {
    use serin_core::CommandAction as A;
    let action = match c.action {
        Action::Promote => A::Promote,
        Action::Abort => A::Abort,
        Action::Pause => A::Pause,
        Action::Resume => A::Resume,
        Action::GateOpen => A::GateOpen {
            gate: c.gate_name().to_string(),
        },
        Action::GateClose => A::GateClose {
            gate: c.gate_name().to_string(),
        },
    };
    serin_core::Command {
        id: c.id.clone(),
        action,
        by: c.by.clone(),
        at: core_time(c.at),
    }
}

/// The engine's command as an API command.
pub fn command_from_core(c: &serin_core::Command) -> model::Command {
    use serin_core::CommandAction as A;
    let (action, gate) = match &c.action {
        A::Promote => (Action::Promote, None),
        A::Abort => (Action::Abort, None),
        A::Pause => (Action::Pause, None),
        A::Resume => (Action::Resume, None),
        A::GateOpen { gate } => (Action::GateOpen, Some(gate.clone())),
        A::GateClose { gate } => (Action::GateClose, Some(gate.clone())),
    };
    model::Command {
        id: c.id.clone(),
        action,
        gate,
        by: c.by.clone(),
        at: time(c.at),
    }
}

fn verdict(v: serin_core::Verdict) -> model::Verdict {
    match v {
        serin_core::Verdict::Pass => model::Verdict::Pass,
        serin_core::Verdict::Fail => model::Verdict::Fail,
        serin_core::Verdict::Inconclusive => model::Verdict::Inconclusive,
    }
}

/// Expands the engine's per-tick history entries into the API's timeline entries.
///
/// One engine entry carries a tick's phase, weight, checks, gate results and commands; the
/// timeline shows each as its own line. `entries` must be oldest first; phase and weight lines
/// appear only where they changed from the previous entry.
pub fn history(entries: &[serin_core::HistoryEntry]) -> Vec<HistoryEntry> {
    use serin_core::HistoryKind as K;
    let mut out = Vec::new();
    let mut prev: Option<&serin_core::HistoryEntry> = None;
    for (i, e) in entries.iter().enumerate() {
        let at = time(e.at);
        let run = (e.run > 0).then_some(e.run);
        let mut push = |kind: EntryKind| out.push(HistoryEntry { at, run, kind });
        if e.kind == K::Measured {
            // A tick's measurements: checks the engine did not record, the judge's look with
            // its evidence, and the chart sample. No phase or weight line: the engine's own
            // entries report those.
            for c in e.checks.iter().filter(|c| !judged(c, e)) {
                push(check(c, e.failed_checks));
            }
            if let Some(s) = &e.sample {
                if let Some(j) = &s.judge {
                    push(judge(j));
                }
                push(EntryKind::Sample {
                    weight: s.canary_weight,
                    canary: arm(&s.canary),
                    primary: arm(&s.primary),
                });
            }
            continue;
        }
        // The judge's look is shown with its evidence from the tick's `Measured` entry, which
        // the runtime records right after the engine's entries of the same tick.
        let measured = entries[i + 1..]
            .iter()
            .take_while(|m| m.at == e.at)
            .find(|m| m.kind == K::Measured);
        if e.kind == K::RunStarted
            && let Some(rev) = &e.revision
        {
            push(EntryKind::RunStarted {
                revision: rev.clone(),
                previous_revision: None,
            });
        }
        for c in &e.commands {
            let cmd = command_from_core(c);
            push(EntryKind::Command {
                id: cmd.id,
                action: cmd.action,
                gate: cmd.gate,
                by: cmd.by,
                state: CommandState::Applied,
                message: None,
            });
        }
        for g in &e.gates {
            push(EntryKind::Webhook {
                name: g.name.clone(),
                webhook_type: g.kind.as_str().to_string(),
                ok: g.passed,
                status: None,
                message: (!g.detail.is_empty()).then(|| g.detail.clone()),
                duration_ms: None,
            });
        }
        for c in &e.checks {
            if measured.is_some_and(|m| judged(c, m)) {
                continue;
            }
            push(check(c, e.failed_checks));
        }
        let prev_weight = prev.map_or(0, |p| p.canary_weight);
        if e.canary_weight != prev_weight || (e.kind == K::Advanced && e.iterations > 0) {
            push(EntryKind::Weight {
                from: prev_weight,
                to: e.canary_weight,
                iteration: (e.iterations > 0).then_some(e.iterations),
            });
        }
        let prev_phase = prev.map(|p| p.phase);
        match e.kind {
            K::Succeeded | K::RolledBack => push(EntryKind::RunEnded {
                outcome: Outcome {
                    result: if e.kind == K::Succeeded {
                        RunResult::Promoted
                    } else if e.message.to_ascii_lowercase().contains("abort") {
                        RunResult::Aborted
                    } else {
                        RunResult::RolledBack
                    },
                    reason: e.message.clone(),
                },
            }),
            _ => {}
        }
        if prev_phase != Some(e.phase) {
            push(EntryKind::Phase {
                from: prev_phase.map(phase),
                to: phase(e.phase),
                message: (!e.message.is_empty()).then(|| e.message.clone()),
            });
        } else if matches!(
            e.kind,
            K::Held | K::CheckFailed | K::Waiting | K::RunRestarted | K::NotificationFailed
        ) && !e.message.is_empty()
        {
            push(EntryKind::Event {
                severity: if matches!(e.kind, K::CheckFailed | K::NotificationFailed) {
                    model::Severity::Warn
                } else {
                    model::Severity::Info
                },
                message: e.message.clone(),
            });
        }
        prev = Some(e);
    }
    out
}

/// The name the runtimes give the judge's check result.
pub const JUDGE_CHECK: &str = "judge";

/// Whether `c` is the judge's check and `measured` carries that look's evidence.
fn judged(c: &serin_core::CheckResult, measured: &serin_core::HistoryEntry) -> bool {
    c.name == JUDGE_CHECK && measured.sample.as_ref().is_some_and(|s| s.judge.is_some())
}

fn check(c: &serin_core::CheckResult, failed_checks: u32) -> EntryKind {
    EntryKind::Check {
        name: c.name.clone(),
        verdict: verdict(c.verdict),
        value: c.value,
        min: c.bound.min,
        max: c.bound.max,
        sample_size: c.samples,
        failed_checks: Some(failed_checks),
        message: (!c.detail.is_empty()).then(|| c.detail.clone()),
    }
}

fn judge(j: &serin_core::JudgeSample) -> EntryKind {
    EntryKind::Judge {
        verdict: verdict(j.verdict),
        evidence: j
            .evidence
            .iter()
            .map(|e| model::Evidence {
                metric: e.metric.clone(),
                canary: e.canary,
                primary: e.primary,
                p_value: e.p_value,
                alpha: e.alpha,
                tolerance: e.tolerance,
                verdict: verdict(e.verdict),
                margin: e.margin,
                claim: e.claim.clone(),
            })
            .collect(),
        canary_requests: j.canary_requests,
        primary_requests: j.primary_requests,
        message: (!j.reason.is_empty()).then(|| j.reason.clone()),
    }
}

fn arm(a: &serin_core::ArmSample) -> model::ArmSample {
    model::ArmSample {
        requests: a.requests,
        success_rate: a.success_rate,
        latency_p99_ms: a.latency_p99_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> serin_core::Timestamp {
        serin_core::Timestamp::from_secs(1_790_000_000 + s)
    }

    #[test]
    fn an_engine_status_becomes_a_summary() {
        let mut status = serin_core::Status {
            phase: serin_core::Phase::Progressing,
            canary_weight: 30,
            failed_checks: 1,
            last_promoted_spec: Some("abc".into()),
            run: Some(serin_core::Run {
                id: 4,
                revision: "def".into(),
                started_at: ts(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        status.gates.insert(
            "rollback".into(),
            serin_core::GateState {
                open: true,
                by: "ops".into(),
                at: ts(1),
            },
        );
        status.paused = Some(serin_core::Pause {
            by: "dana".into(),
            at: ts(2),
            reason: "manual".into(),
        });
        let key = CanaryKey::new("prod", "podinfo");
        let target = TargetRef {
            kind: "Deployment".into(),
            name: "podinfo".into(),
        };
        let s = summary(&key, target, &status, Some("def".into()));
        assert_eq!(s.phase, model::Phase::Progressing);
        assert_eq!(s.revision_in_flight(), Some("def"));
        assert_eq!(s.promoted_revision.as_deref(), Some("abc"));
        assert_eq!(
            s.gates,
            Gates {
                confirm: false,
                rollback: true
            }
        );
        assert!(s.paused);
        assert_eq!(s.waiting.unwrap().reason, WaitReason::Paused);
        assert_eq!(s.run.unwrap().started_at, time(ts(0)));
        assert_eq!(s.holding, None, "advancing: nothing holds it");
    }

    #[test]
    fn why_the_engine_holds_the_canary_is_in_the_summary() {
        // `serin status` and `serin wait` show it: a Canary whose target does not exist sat
        // in Initializing with "New target detected" and nothing else to say why.
        let status = serin_core::Status {
            phase: serin_core::Phase::Initializing,
            hold: Some("target not found".into()),
            ..Default::default()
        };
        let key = CanaryKey::new("prod", "orphan");
        let target = TargetRef {
            kind: "Process".into(),
            name: "nothere".into(),
        };
        let s = summary(&key, target, &status, None);
        assert_eq!(s.holding.as_deref(), Some("target not found"));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["holding"], "target not found");
    }

    #[test]
    fn commands_round_trip_through_the_engine_shape() {
        let c = model::Command {
            id: "x1".into(),
            action: Action::GateOpen,
            gate: None,
            by: "ci".into(),
            at: time(ts(5)),
        };
        let core = command_to_core(&c);
        assert_eq!(
            serde_json::to_value(&core).unwrap(),
            serde_json::json!({"id":"x1","action":"gate-open","gate":"confirm","by":"ci","at":"2026-09-21T14:13:25Z"})
        );
        let back = command_from_core(&core);
        assert_eq!(back.gate.as_deref(), Some("confirm"));
        assert_eq!(back.action, Action::GateOpen);
    }

    #[test]
    fn a_tick_with_checks_expands_into_timeline_lines() {
        let base = serin_core::HistoryEntry {
            at: ts(0),
            run: 2,
            revision: Some("v2".into()),
            kind: serin_core::HistoryKind::RunStarted,
            phase: serin_core::Phase::Progressing,
            step: 0,
            canary_weight: 0,
            iterations: 0,
            failed_checks: 0,
            threshold: 2,
            checks: vec![],
            gates: vec![],
            commands: vec![],
            message: "new revision v2".into(),
            sample: None,
        };
        let mut tick = base.clone();
        tick.at = ts(60);
        tick.kind = serin_core::HistoryKind::CheckFailed;
        tick.canary_weight = 10;
        tick.failed_checks = 1;
        tick.checks = vec![serin_core::CheckResult {
            name: "request-success-rate".into(),
            verdict: serin_core::Verdict::Fail,
            value: Some(91.2),
            bound: serin_core::Bound {
                min: Some(99.0),
                max: None,
            },
            samples: Some(400),
            detail: String::new(),
        }];
        tick.message = "check request-success-rate 91.2 < 99".into();
        let out = history(&[base, tick]);
        let types: Vec<&str> = out.iter().map(|e| e.kind.type_name()).collect();
        assert_eq!(types, ["runStarted", "phase", "check", "weight", "event"]);
        match &out[2].kind {
            EntryKind::Check {
                value,
                min,
                failed_checks,
                ..
            } => {
                assert_eq!(
                    (*value, *min, *failed_checks),
                    (Some(91.2), Some(99.0), Some(1))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(out.iter().all(|e| e.run == Some(2)));
    }

    #[test]
    fn a_measured_tick_becomes_the_judge_with_evidence_and_a_chart_sample() {
        let held = serin_core::HistoryEntry {
            at: ts(60),
            run: 3,
            revision: Some("v3".into()),
            kind: serin_core::HistoryKind::Held,
            phase: serin_core::Phase::Progressing,
            step: 1,
            canary_weight: 20,
            iterations: 0,
            failed_checks: 0,
            threshold: 2,
            checks: vec![
                serin_core::CheckResult {
                    name: "request-success-rate".into(),
                    verdict: serin_core::Verdict::Pass,
                    value: Some(99.5),
                    bound: serin_core::Bound {
                        min: Some(99.0),
                        max: None,
                    },
                    samples: Some(800),
                    detail: String::new(),
                },
                serin_core::CheckResult {
                    name: JUDGE_CHECK.into(),
                    verdict: serin_core::Verdict::Inconclusive,
                    value: Some(99.5),
                    bound: serin_core::Bound::default(),
                    samples: Some(80),
                    detail: "waiting for minRequests 100 per arm".into(),
                },
            ],
            gates: vec![],
            commands: vec![],
            message: "holding: judge inconclusive".into(),
            sample: None,
        };
        let mut measured = held.clone();
        measured.kind = serin_core::HistoryKind::Measured;
        measured.checks = vec![];
        measured.message = String::new();
        measured.sample = Some(Box::new(serin_core::Sample {
            window_secs: 60,
            canary_weight: 10,
            canary: serin_core::ArmSample {
                requests: 80,
                success_rate: Some(99.5),
                latency_p99_ms: Some(12.0),
            },
            primary: serin_core::ArmSample {
                requests: 720,
                success_rate: Some(100.0),
                latency_p99_ms: Some(10.0),
            },
            judge: Some(serin_core::JudgeSample {
                verdict: serin_core::Verdict::Inconclusive,
                reason: "waiting for minRequests 100 per arm".into(),
                canary_requests: 80,
                primary_requests: 720,
                evidence: vec![serin_core::JudgeEvidence {
                    metric: "errorRate".into(),
                    canary: 0.5,
                    primary: 0.0,
                    p_value: Some(0.4),
                    alpha: Some(0.0025),
                    tolerance: Some(0.0),
                    verdict: serin_core::Verdict::Inconclusive,
                    margin: Some(0.25),
                    claim: Some("canary error <= 0.25% not shown yet".into()),
                }],
            }),
        }));
        // A later tick of the same hold: the engine records nothing, the runtime's entry keeps
        // the checks.
        let mut later = measured.clone();
        later.at = ts(120);
        later.sample = None;
        later.checks = vec![held.checks[0].clone()];
        let out = history(&[held, measured, later]);
        let types: Vec<&str> = out.iter().map(|e| e.kind.type_name()).collect();
        assert_eq!(
            types,
            ["check", "weight", "phase", "judge", "sample", "check"],
            "{out:#?}"
        );
        match &out[3].kind {
            EntryKind::Judge {
                verdict,
                evidence,
                canary_requests,
                ..
            } => {
                assert_eq!(*verdict, model::Verdict::Inconclusive);
                assert_eq!(*canary_requests, 80);
                assert_eq!(evidence[0].metric, "errorRate");
                assert_eq!(evidence[0].p_value, Some(0.4));
                assert_eq!(evidence[0].margin, Some(0.25));
                assert_eq!(
                    evidence[0].claim.as_deref(),
                    Some("canary error <= 0.25% not shown yet")
                );
            }
            other => panic!("{other:?}"),
        }
        match &out[4].kind {
            EntryKind::Sample {
                weight,
                canary,
                primary,
            } => {
                assert_eq!(*weight, 10);
                assert_eq!(canary.success_rate, Some(99.5));
                assert_eq!(primary.latency_p99_ms, Some(10.0));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[5].at, time(ts(120)));
    }
}
