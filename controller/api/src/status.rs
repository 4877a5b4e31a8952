//! `status.serin`: what a Serin controller keeps in a Canary's status beside Flagger's fields —
//! the engine's full state, the bounded history and the current run's analysis state — typed
//! once here for the controller that writes it and every reader (the reconcile, the watches,
//! the CLI's cluster client, the dashboards).
//!
//! Reading never loses what is stored: a part this version cannot read (written by a newer
//! controller, or edited by hand) is kept as written, with the reason, in
//! [`Stored::Unreadable`]; fields this version does not know, beside the three parts
//! ([`SerinStatus::unknown`]) or inside one that reads ([`Stored::ReadWithUnknown`]), are kept
//! as stored and written back (server-side apply removes a field its manager wrote before and
//! leaves out, so a field a newer controller added would otherwise go at this version's next
//! write). Readers decide what an unreadable part means (the Kubernetes
//! controller logs it, and holds a Canary whose state does not read, writing the stored state
//! back as it is instead of starting over), and a history entry they cannot read stays in the
//! history they write back.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use serin_core::{HistoryEntry, Status};

/// The Canary's `status.serin`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SerinStatus {
    /// The engine's state (`serin_core::Status`), so the controller resumes exactly where it
    /// stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Stored<Status>>,
    /// The last history entries, oldest first (the writer bounds them).
    #[serde(default, deserialize_with = "history_entries")]
    pub history: Vec<Stored<HistoryEntry>>,
    /// The current run's analysis state (the judge's sequential test); absent between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Stored<AnalysisState>>,
    /// Fields of `status.serin` this version does not know (a newer controller's), kept as
    /// stored: the writer passes them back.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

impl SerinStatus {
    /// The engine state, when one is stored and reads.
    pub fn state(&self) -> Option<&Status> {
        self.state.as_ref().and_then(Stored::read)
    }

    /// The analysis state, when one is stored and reads.
    pub fn analysis(&self) -> Option<&AnalysisState> {
        self.analysis.as_ref().and_then(Stored::read)
    }

    /// The history entries this version reads, oldest first (the others are skipped).
    pub fn entries(&self) -> impl Iterator<Item = &HistoryEntry> {
        self.history.iter().filter_map(Stored::read)
    }

    /// Every stored part this version cannot read: the field's path (as `status.serin.…`) and
    /// why, for the reader to log.
    pub fn unreadable(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        if let Some(e) = self.state.as_ref().and_then(Stored::error) {
            out.push(("status.serin.state".to_string(), e));
        }
        for (i, h) in self.history.iter().enumerate() {
            if let Some(e) = h.error() {
                out.push((format!("status.serin.history[{i}]"), e));
            }
        }
        if let Some(e) = self.analysis.as_ref().and_then(Stored::error) {
            out.push(("status.serin.analysis".to_string(), e));
        }
        out
    }
}

/// What an analyzer remembers between the looks of one run — the judge's sequential test —
/// persisted with the status (`status.serin.analysis` on Kubernetes), so a restarted controller
/// continues the same test (keeping its error-rate guarantee) instead of starting a new one.
/// Opaque to the driver and the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisState {
    /// The run the state belongs to (0: none yet); state of another run is ignored.
    pub run: u64,
    /// The judge's sequential state (`serin_analysis::JudgeState`), once the judge has looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<Value>,
}

/// One stored part of `status.serin`: read into its type, or kept exactly as written when this
/// version cannot read it, so that reading it (and writing it back) loses nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored<T> {
    /// The part as this version reads it.
    Read(T),
    /// A part this version reads, stored with what it does not know (fields a newer controller
    /// added, at the top or deeper): written back as stored while it is not replaced, and a
    /// value written in its place keeps its top-level unknown fields.
    ReadWithUnknown {
        /// The part as this version reads it.
        value: T,
        /// The stored top-level fields `T` does not have, by name.
        unknown: Map<String, Value>,
        /// The part as stored (`None` for a new value given a stored part's `unknown`
        /// fields): what is written back, so nothing at any depth is lost.
        raw: Option<Value>,
    },
    /// A part this version cannot read.
    Unreadable {
        /// The part as stored.
        raw: Value,
        /// Why it does not read.
        error: String,
    },
}

impl<T> Stored<T> {
    /// The part, if it reads.
    pub fn read(&self) -> Option<&T> {
        match self {
            Stored::Read(t) | Stored::ReadWithUnknown { value: t, .. } => Some(t),
            Stored::Unreadable { .. } => None,
        }
    }

    /// Why the part does not read, if it does not.
    pub fn error(&self) -> Option<&str> {
        match self {
            Stored::Read(_) | Stored::ReadWithUnknown { .. } => None,
            Stored::Unreadable { error, .. } => Some(error),
        }
    }

    /// The stored top-level fields this version does not know, of a part that reads and was
    /// stored with something it does not know (`None` otherwise).
    pub fn unknown(&self) -> Option<&Map<String, Value>> {
        match self {
            Stored::ReadWithUnknown { unknown, .. } => Some(unknown),
            Stored::Read(_) | Stored::Unreadable { .. } => None,
        }
    }

    /// `value`, to be written in place of `stored`, keeping the fields of `stored` this version
    /// does not know (a newer controller's; it reads them back when it runs again) instead of
    /// dropping them.
    pub fn keeping_unknown(value: T, stored: Option<&Stored<T>>) -> Self {
        match stored.and_then(Stored::unknown) {
            Some(unknown) if !unknown.is_empty() => Stored::ReadWithUnknown {
                value,
                unknown: unknown.clone(),
                raw: None,
            },
            _ => Stored::Read(value),
        }
    }
}

impl<T> From<T> for Stored<T> {
    fn from(t: T) -> Self {
        Stored::Read(t)
    }
}

impl<T: Serialize> Serialize for Stored<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Stored::Read(t) => t.serialize(s),
            Stored::ReadWithUnknown { raw: Some(raw), .. } => raw.serialize(s),
            Stored::ReadWithUnknown {
                value,
                unknown,
                raw: None,
            } => {
                let mut v = serde_json::to_value(value).map_err(serde::ser::Error::custom)?;
                if let Value::Object(fields) = &mut v {
                    for (name, field) in unknown {
                        // The value's own fields win: a name it has is not unknown to it.
                        fields.entry(name.clone()).or_insert_with(|| field.clone());
                    }
                }
                v.serialize(s)
            }
            Stored::Unreadable { raw, .. } => raw.serialize(s),
        }
    }
}

impl<'de, T: DeserializeOwned + Serialize> Deserialize<'de> for Stored<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Stored::from_raw(Value::deserialize(d)?))
    }
}

impl<T: DeserializeOwned + Serialize> Stored<T> {
    /// `raw` read into `T`, or kept with the reason when it does not read.
    pub fn from_raw(raw: Value) -> Self {
        match T::deserialize(&raw) {
            Ok(t) => {
                let unknown = match (&raw, field_names::<T>()) {
                    (Value::Object(stored), Some(known)) => stored
                        .iter()
                        .filter(|(name, _)| !known.contains(&name.as_str()))
                        .map(|(name, v)| (name.clone(), v.clone()))
                        .collect(),
                    _ => Map::new(),
                };
                // Also what `T` drops deeper down (a field of a nested object): written as
                // this version would write it, the part would differ from the one stored.
                let lossless =
                    unknown.is_empty() && serde_json::to_value(&t).is_ok_and(|v| v == raw);
                if lossless {
                    Stored::Read(t)
                } else {
                    Stored::ReadWithUnknown {
                        value: t,
                        unknown,
                        raw: Some(raw),
                    }
                }
            }
            Err(e) => Stored::Unreadable {
                raw,
                error: e.to_string(),
            },
        }
    }
}

/// The field names a struct `T` reads (as serde's derive lists them for `deserialize_struct`);
/// `None` when `T` is not read as a struct.
fn field_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut names = None;
    // The probe answers nothing: `T::deserialize` fails once it has named its fields.
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

/// A deserializer that only records the fields a derived struct asks for.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(serde::de::Error::custom(
            "only the field names were asked for",
        ))
    }

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// `status.serin.history`: each entry read on its own (one this version cannot read stays as
/// written); anything but an array is kept as one unreadable entry rather than failing the
/// whole Canary.
fn history_entries<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Stored<HistoryEntry>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.into_iter().map(Stored::from_raw).collect(),
        Value::Null => Vec::new(),
        other => vec![Stored::Unreadable {
            raw: other,
            error: "expected an array of history entries".into(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use serin_core::{HistoryKind, Phase};

    use super::*;
    use kube::CustomResourceExt;

    use crate::{Canary, CanaryPhase};

    /// A Canary as the previous version's controller wrote it (`status.serin` free-form: the
    /// status of serin-kube's dashboard scenarios, with an analysis state).
    fn written_by_the_previous_version() -> Value {
        serde_json::from_str(include_str!("../tests/fixtures/status/written-by-0.1.json"))
            .expect("the fixture is JSON")
    }

    #[test]
    fn a_status_the_previous_version_wrote_reads_typed() {
        let canary: Canary = serde_json::from_value(written_by_the_previous_version()).unwrap();
        let status = canary.status.unwrap();
        assert_eq!(status.phase, Some(CanaryPhase::Progressing));
        let serin = status.serin.unwrap();
        assert!(serin.unreadable().is_empty(), "{:?}", serin.unreadable());
        let state = serin.state().unwrap();
        assert_eq!(state.phase, Phase::Progressing);
        assert_eq!(
            (state.canary_weight, state.failed_checks, state.runs),
            (20, 1, 2)
        );
        assert_eq!(state.run.as_ref().unwrap().revision, "abc");
        let kinds: Vec<HistoryKind> = serin.entries().map(|h| h.kind).collect();
        assert_eq!(kinds, [HistoryKind::RunStarted, HistoryKind::CheckFailed]);
        let analysis = serin.analysis().unwrap();
        assert_eq!(analysis.run, 2);
        assert_eq!(analysis.judge, Some(json!({"looks": 3})));
    }

    #[test]
    fn a_part_that_does_not_read_is_kept_as_written_with_its_reason() {
        let mut v = written_by_the_previous_version();
        let state = json!({"phase": "Exploded", "canaryWeight": 20});
        let newer = json!({"at": "2026-11-21T10:02:00Z", "kind": "teleported", "message": "?"});
        let analysis = json!({"run": "two"});
        v["status"]["serin"]["state"] = state.clone();
        v["status"]["serin"]["history"][1] = newer.clone();
        v["status"]["serin"]["analysis"] = analysis.clone();
        // The Canary itself still reads: one unreadable part does not hide the others.
        let canary: Canary = serde_json::from_value(v.clone()).unwrap();
        let serin = canary.status.as_ref().unwrap().serin.as_ref().unwrap();
        assert_eq!(serin.state(), None);
        assert_eq!(serin.analysis(), None);
        assert_eq!(serin.entries().count(), 1);
        let unreadable = serin.unreadable();
        let fields: Vec<&str> = unreadable.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "status.serin.state",
                "status.serin.history[1]",
                "status.serin.analysis"
            ]
        );
        assert!(unreadable[0].1.contains("Exploded"), "{unreadable:?}");
        // Written back, every part is what was stored.
        let back = serde_json::to_value(serin).unwrap();
        assert_eq!(back["state"], state);
        assert_eq!(back["history"][1], newer);
        assert_eq!(back["analysis"], analysis);
        assert_eq!(back["history"][0], v["status"]["serin"]["history"][0]);
    }

    /// A Canary as a newer controller (under a newer CRD) wrote it: fields this version does
    /// not know at every level of the status.
    fn written_by_a_newer_version() -> Value {
        serde_json::from_str(include_str!(
            "../tests/fixtures/status/written-by-a-newer-version.json"
        ))
        .expect("the fixture is JSON")
    }

    #[test]
    fn fields_a_newer_version_added_read_and_are_written_back_as_stored() {
        let stored = written_by_a_newer_version();
        let canary: Canary = serde_json::from_value(stored.clone()).unwrap();
        let status = canary.status.as_ref().unwrap();
        let serin = status.serin.as_ref().unwrap();
        // Everything this version knows reads, typed; nothing is unreadable.
        assert!(serin.unreadable().is_empty(), "{:?}", serin.unreadable());
        assert_eq!(serin.state().unwrap().canary_weight, 20);
        assert_eq!(serin.entries().count(), 2);
        assert_eq!(serin.analysis().unwrap().run, 2);
        // What it does not know is kept, each at its level.
        assert_eq!(serin.unknown["rollout"]["pausedBy"], "ops");
        let state = serin.state.as_ref().unwrap();
        assert_eq!(state.unknown().unwrap()["mirrorWeight"], 5);
        assert_eq!(
            serin.history[0].unknown().unwrap()["traceId"],
            "4bf92f3577b34da6"
        );
        // A field deeper down (in a check of the entry) is kept too: the entry goes back as
        // stored.
        assert!(serin.history[1].unknown().unwrap().is_empty());
        assert_eq!(serin.history[1].read().unwrap().checks.len(), 1);
        let analysis = serin.analysis.as_ref().unwrap();
        assert_eq!(analysis.unknown().unwrap()["judgeVersion"], 3);
        assert_eq!(status.unknown["observedGeneration"], 4);
        assert_eq!(status.conditions[0].unknown["observedGeneration"], 4);
        // Written back, the status is the one stored, field for field.
        let back = serde_json::to_value(&canary).unwrap();
        assert_eq!(back["status"], stored["status"]);

        // A new state written in place of the stored one keeps the stored state's unknown
        // fields; its own fields are the new ones.
        let mut next = state.read().unwrap().clone();
        next.canary_weight = 30;
        let written = serde_json::to_value(Stored::keeping_unknown(next, Some(state))).unwrap();
        assert_eq!(written["canaryWeight"], 30);
        assert_eq!(written["mirrorWeight"], 5);
        let fresh = Stored::keeping_unknown(Status::default(), None);
        assert_eq!(fresh, Stored::Read(Status::default()));
    }

    #[test]
    fn a_history_that_is_not_a_list_is_one_unreadable_entry() {
        let serin: SerinStatus =
            serde_json::from_value(json!({"history": {"kind": "runStarted"}})).unwrap();
        assert_eq!(serin.entries().count(), 0);
        assert_eq!(serin.unreadable()[0].0, "status.serin.history[0]");
        let empty: SerinStatus = serde_json::from_value(json!({"history": null})).unwrap();
        assert_eq!(empty, SerinStatus::default());
    }

    #[test]
    fn every_phase_the_crd_accepts_reads_and_is_written_as_flagger_spells_it() {
        let crd = serde_json::to_value(Canary::crd()).unwrap();
        let names = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["phase"]["enum"];
        let names: Vec<&str> = names
            .as_array()
            .unwrap()
            .iter()
            .flat_map(Value::as_str)
            .collect();
        assert_eq!(names.len(), 11, "{names:?}");
        for name in names {
            let p: Phase = serde_json::from_value(json!(name)).unwrap();
            assert_eq!(p.as_str(), name);
            assert_eq!(serde_json::to_value(p).unwrap(), json!(name));
        }
        let mut v = written_by_the_previous_version();
        v["status"]["phase"] = json!("Terminated");
        let canary: Canary = serde_json::from_value(v).unwrap();
        assert_eq!(canary.status.unwrap().phase, Some(CanaryPhase::Terminated));
    }
}
