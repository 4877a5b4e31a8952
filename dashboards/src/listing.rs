//! The overview at scale: filtering by phase, namespace and a search text, counts by phase and
//! server-side paging, over the summaries a backend keeps in memory. Pure: no I/O, so a render of
//! a thousand Canaries costs a pass over a vector, not a call to the backend's source.

use std::collections::BTreeMap;

use crate::model::{CanarySummary, Phase};

/// Rows per page of the overview (`?page=N`). A few hundred rows render quickly in a browser;
/// past that the page shows a pager.
pub const PAGE_SIZE: usize = 200;

/// Which Canaries to show: every field narrows the selection; `offset`/`limit` page it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only Canaries in this phase.
    pub phase: Option<Phase>,
    /// Only Canaries in this namespace.
    pub namespace: Option<String>,
    /// Only Canaries whose namespace, name or target name contains this text (any case).
    pub search: Option<String>,
    /// Rows to skip (after filtering and sorting).
    pub offset: usize,
    /// At most this many rows (`None`: all).
    pub limit: Option<usize>,
}

impl ListQuery {
    /// Whether the query narrows the list at all (a filter, not only a page).
    pub fn is_filtered(&self) -> bool {
        self.phase.is_some() || self.namespace.is_some() || self.search.is_some()
    }
}

/// One page of the overview with what the page shows around it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// The rows of this page, sorted by namespace and name.
    pub items: Vec<CanarySummary>,
    /// Canaries matching every filter (all pages).
    pub total: usize,
    /// Canaries per phase among those matching the namespace and search filters (the phase
    /// filter left out, so each count says what choosing that phase would show).
    pub counts: BTreeMap<Phase, usize>,
    /// Every namespace with a Canary (the namespace filter's choices).
    pub namespaces: Vec<String>,
}

/// Filters, counts and pages `all` (in any order) by `query`.
pub fn select(all: &[CanarySummary], query: &ListQuery) -> Listing {
    let needle = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_lowercase);
    let matches_text = |s: &CanarySummary| match &needle {
        None => true,
        Some(n) => [&s.namespace, &s.name, &s.target.name]
            .iter()
            .any(|field| field.to_lowercase().contains(n.as_str())),
    };
    let mut namespaces: Vec<String> = Vec::new();
    let mut counts: BTreeMap<Phase, usize> = BTreeMap::new();
    let mut chosen: Vec<&CanarySummary> = Vec::new();
    for s in all {
        namespaces.push(s.namespace.clone());
        if query
            .namespace
            .as_ref()
            .is_some_and(|ns| *ns != s.namespace)
            || !matches_text(s)
        {
            continue;
        }
        *counts.entry(s.phase).or_default() += 1;
        if query.phase.is_none_or(|p| p == s.phase) {
            chosen.push(s);
        }
    }
    namespaces.sort();
    namespaces.dedup();
    chosen.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let total = chosen.len();
    let items = chosen
        .into_iter()
        .skip(query.offset)
        .take(query.limit.unwrap_or(usize::MAX))
        .cloned()
        .collect();
    Listing {
        items,
        total,
        counts,
        namespaces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TargetRef;

    fn canary(ns: &str, name: &str, phase: Phase) -> CanarySummary {
        CanarySummary {
            namespace: ns.into(),
            name: name.into(),
            target: TargetRef {
                kind: "Deployment".into(),
                name: format!("{name}-app"),
            },
            phase,
            canary_weight: 0,
            failed_checks: 0,
            iterations: 0,
            last_transition_time: None,
            target_revision: None,
            promoted_revision: None,
            run: None,
            paused: false,
            waiting: None,
            gates: Default::default(),
            message: None,
            holding: None,
        }
    }

    fn names(l: &Listing) -> Vec<String> {
        l.items.iter().map(|s| s.key().to_string()).collect()
    }

    fn fleet() -> Vec<CanarySummary> {
        vec![
            canary("prod", "podinfo", Phase::Progressing),
            canary("dev", "podinfo", Phase::Failed),
            canary("prod", "backend", Phase::Succeeded),
            canary("prod", "frontend", Phase::Failed),
        ]
    }

    #[test]
    fn the_whole_list_is_sorted_and_counted_by_phase() {
        let l = select(&fleet(), &ListQuery::default());
        assert_eq!(
            names(&l),
            [
                "dev/podinfo",
                "prod/backend",
                "prod/frontend",
                "prod/podinfo"
            ]
        );
        assert_eq!(l.total, 4);
        assert_eq!(l.counts[&Phase::Failed], 2);
        assert_eq!(l.counts[&Phase::Succeeded], 1);
        assert_eq!(l.namespaces, ["dev", "prod"]);
    }

    #[test]
    fn a_phase_filter_keeps_the_counts_of_every_phase() {
        let q = ListQuery {
            phase: Some(Phase::Failed),
            ..Default::default()
        };
        let l = select(&fleet(), &q);
        assert_eq!(names(&l), ["dev/podinfo", "prod/frontend"]);
        assert_eq!(l.total, 2);
        assert_eq!(
            l.counts[&Phase::Progressing],
            1,
            "other phases still counted"
        );
    }

    #[test]
    fn namespace_and_search_narrow_the_counts_too() {
        let q = ListQuery {
            namespace: Some("prod".into()),
            search: Some(" END ".into()),
            ..Default::default()
        };
        let l = select(&fleet(), &q);
        assert_eq!(names(&l), ["prod/backend", "prod/frontend"]);
        assert_eq!(l.counts.values().sum::<usize>(), 2);
        assert_eq!(
            l.namespaces,
            ["dev", "prod"],
            "every namespace stays a choice"
        );
        let by_target = ListQuery {
            search: Some("podinfo-app".into()),
            ..Default::default()
        };
        assert_eq!(select(&fleet(), &by_target).total, 2);
    }

    #[test]
    fn pages_are_slices_of_the_sorted_selection() {
        let all: Vec<CanarySummary> = (0..450)
            .map(|i| canary("ns", &format!("c{i:03}"), Phase::Initialized))
            .collect();
        let page = |n: usize| ListQuery {
            offset: n * PAGE_SIZE,
            limit: Some(PAGE_SIZE),
            ..Default::default()
        };
        let second = select(&all, &page(1));
        assert_eq!(second.items.len(), PAGE_SIZE);
        assert_eq!(second.items[0].name, "c200");
        assert_eq!(second.total, 450);
        let last = select(&all, &page(2));
        assert_eq!(last.items.len(), 50);
        assert!(select(&all, &page(3)).items.is_empty());
    }
}
