//! What `serin wait` concludes from one look at a Canary: pure, so every case is testable.
//!
//! The rule that matters: only the run of the revision being waited for counts. A `Succeeded`
//! left over from the previous revision's run never ends the wait.

use crate::model::{CanarySummary, Phase, RunResult, WaitReason};

/// Exit codes of `serin wait` (and `serin status` for errors), a contract for CI pipelines.
pub mod exit {
    /// The revision was promoted.
    pub const PROMOTED: i32 = 0;
    /// The revision was rolled back, aborted or replaced before promotion.
    pub const FAILED: i32 = 1;
    /// The run waits for a person (paused, or a confirm gate), with `--until-paused`.
    pub const WAITING_FOR_HUMAN: i32 = 2;
    /// The timeout passed first.
    pub const TIMED_OUT: i32 = 3;
    /// Not found, unreachable, or invalid input.
    pub const ERROR: i32 = 4;
    /// The revision was rolled back because the judge gathered no decisive evidence within its
    /// budget (`onInconclusive: rollback`): not shown bad, not shown safe (often: too little
    /// traffic; see `serin plan`).
    pub const INCONCLUSIVE: i32 = 5;
}

/// One look's conclusion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// The awaited revision serves as primary.
    Promoted {
        /// Run id, when a run promoted it.
        run: Option<u64>,
    },
    /// The awaited revision's run ended without promoting it.
    Failed {
        /// Why.
        reason: String,
    },
    /// The awaited revision's run was rolled back by `onInconclusive` (no decisive evidence
    /// within the judge's budget).
    Inconclusive {
        /// Why.
        reason: String,
    },
    /// The run waits for a person.
    NeedsHuman {
        /// What it waits for.
        reason: String,
    },
    /// The Canary is being deleted (or was): no run of it will end any more. `serin wait` exits
    /// [`exit::ERROR`], as for a Canary that is not found.
    Deleted {
        /// Why, naming the Canary.
        reason: String,
    },
    /// Not decided yet.
    Pending {
        /// What is happening, for the progress line.
        reason: String,
    },
}

/// Decides from `summary` where the rollout of `revision` stands.
///
/// `pinned` says the revision came from `--revision` (a deploy that knows what it shipped): if
/// the target moves on to another revision, the awaited one will never be promoted. Unpinned,
/// the caller re-reads the target's current revision on every look.
pub fn assess(summary: &CanarySummary, revision: &str, pinned: bool) -> Assessment {
    if matches!(summary.phase, Phase::Terminating | Phase::Terminated) {
        // The engine does nothing more for it: waiting on would only end at the timeout.
        return Assessment::Deleted {
            reason: format!(
                "{}/{} is being deleted (phase {}): no rollout of it will end",
                summary.namespace, summary.name, summary.phase
            ),
        };
    }
    if let Some(run) = summary.run.as_ref().filter(|r| r.revision == revision) {
        match &run.outcome {
            Some(o) if o.result == RunResult::Promoted => {
                return Assessment::Promoted { run: Some(run.id) };
            }
            Some(o)
                if o.result == RunResult::RolledBack
                    && o.reason.starts_with(serin_core::ON_INCONCLUSIVE) =>
            {
                return Assessment::Inconclusive {
                    reason: format!(
                        "revision {revision} rolled back without a decision (run {}): {}",
                        run.id, o.reason
                    ),
                };
            }
            Some(o) => {
                let what = match o.result {
                    RunResult::RolledBack => "rolled back",
                    RunResult::Aborted => "aborted",
                    _ => "superseded",
                };
                return Assessment::Failed {
                    reason: format!("revision {revision} {what} (run {}): {}", run.id, o.reason),
                };
            }
            None => {
                if let Some(w) = &summary.waiting {
                    let what = match w.reason {
                        WaitReason::Paused => "paused",
                        WaitReason::ConfirmRollout => "waiting for confirm-rollout gate",
                        WaitReason::ConfirmTrafficIncrease => {
                            "waiting for confirm-traffic-increase gate"
                        }
                        WaitReason::ConfirmPromotion => "waiting for confirm-promotion gate",
                    };
                    let detail = w
                        .message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default();
                    return Assessment::NeedsHuman {
                        reason: format!("run {} of revision {revision} is {what}{detail}", run.id),
                    };
                }
                return Assessment::Pending {
                    reason: format!(
                        "run {} of revision {revision}: {} at weight {}%",
                        run.id, summary.phase, summary.canary_weight
                    ),
                };
            }
        }
    }
    let another_in_flight = summary.revision_in_flight().is_some();
    if summary.promoted_revision.as_deref() == Some(revision)
        && !another_in_flight
        && !matches!(summary.phase, Phase::Initializing)
    {
        // Already the primary's revision (e.g. reverting to the last promoted spec starts no
        // run, as in Flagger).
        return Assessment::Promoted { run: None };
    }
    if pinned
        && let Some(current) = summary.target_revision.as_deref()
        && current != revision
    {
        return Assessment::Failed {
            reason: format!(
                "the target now declares revision {current}; revision {revision} will not be rolled out"
            ),
        };
    }
    Assessment::Pending {
        reason: match summary.revision_in_flight() {
            Some(other) => format!(
                "run of revision {other} in flight ({}); waiting for revision {revision}",
                summary.phase
            ),
            None => format!(
                "waiting for the controller to start the run of revision {revision} (phase {})",
                summary.phase
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::model::{Gates, Outcome, RunSummary, TargetRef, Waiting};

    fn canary(phase: Phase, run: Option<(&str, Option<RunResult>)>) -> CanarySummary {
        CanarySummary {
            namespace: "test".into(),
            name: "podinfo".into(),
            target: TargetRef {
                kind: "Deployment".into(),
                name: "podinfo".into(),
            },
            phase,
            canary_weight: 0,
            failed_checks: 0,
            iterations: 0,
            last_transition_time: None,
            target_revision: Some("v2".into()),
            promoted_revision: Some("v1".into()),
            run: run.map(|(rev, result)| RunSummary {
                id: 7,
                revision: rev.into(),
                started_at: Timestamp::UNIX_EPOCH,
                ended_at: None,
                outcome: result.map(|result| Outcome {
                    result,
                    reason: "why".into(),
                }),
            }),
            paused: false,
            waiting: None,
            gates: Gates::default(),
            message: None,
            holding: None,
        }
    }

    #[test]
    fn a_deleted_canary_ends_the_wait() {
        for phase in [Phase::Terminating, Phase::Terminated] {
            let c = canary(phase, Some(("v2", None)));
            assert!(matches!(
                assess(&c, "v2", false),
                Assessment::Deleted { .. }
            ));
        }
    }

    #[test]
    fn the_previous_runs_success_does_not_count() {
        let c = canary(Phase::Succeeded, Some(("v1", Some(RunResult::Promoted))));
        assert!(matches!(
            assess(&c, "v2", false),
            Assessment::Pending { .. }
        ));
    }

    #[test]
    fn the_awaited_runs_end_decides() {
        let c = canary(Phase::Succeeded, Some(("v2", Some(RunResult::Promoted))));
        assert_eq!(
            assess(&c, "v2", false),
            Assessment::Promoted { run: Some(7) }
        );
        for result in [
            RunResult::RolledBack,
            RunResult::Aborted,
            RunResult::Superseded,
        ] {
            let c = canary(Phase::Failed, Some(("v2", Some(result))));
            assert!(
                matches!(assess(&c, "v2", false), Assessment::Failed { .. }),
                "{result:?}"
            );
        }
    }

    #[test]
    fn a_run_ended_by_on_inconclusive_is_its_own_outcome() {
        let mut c = canary(Phase::Failed, Some(("v2", Some(RunResult::RolledBack))));
        if let Some(o) = c.run.as_mut().and_then(|r| r.outcome.as_mut()) {
            o.reason = format!(
                "{} rollback: no decision within the step budget (15m) at weight 10%",
                serin_core::ON_INCONCLUSIVE
            );
        }
        match assess(&c, "v2", false) {
            Assessment::Inconclusive { reason } => {
                assert!(reason.contains("step budget"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pause_or_confirm_gate_needs_a_human_only_in_the_awaited_run() {
        let mut c = canary(Phase::WaitingPromotion, Some(("v2", None)));
        c.waiting = Some(Waiting {
            reason: WaitReason::ConfirmPromotion,
            since: None,
            message: None,
        });
        assert!(matches!(
            assess(&c, "v2", false),
            Assessment::NeedsHuman { .. }
        ));
        c.run.as_mut().unwrap().revision = "v3".into();
        assert!(matches!(
            assess(&c, "v2", false),
            Assessment::Pending { .. }
        ));
    }

    #[test]
    fn the_primarys_revision_is_already_promoted_but_a_moved_pinned_target_fails() {
        let c = canary(Phase::Failed, Some(("v2", Some(RunResult::RolledBack))));
        assert_eq!(assess(&c, "v1", false), Assessment::Promoted { run: None });
        let mut c = canary(Phase::Initialized, None);
        c.target_revision = Some("v3".into());
        assert!(matches!(assess(&c, "v2", true), Assessment::Failed { .. }));
        assert!(matches!(
            assess(&c, "v2", false),
            Assessment::Pending { .. }
        ));
    }
}
