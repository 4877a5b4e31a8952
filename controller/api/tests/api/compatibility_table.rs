//! The compatibility table in README.md is generated from the tables `serin validate`'s
//! verdicts come from (`serin_api::support`), so the two cannot drift.

use std::path::PathBuf;

const START: &str = "<!-- flagger-compatibility:start -->\n";
const END: &str = "<!-- flagger-compatibility:end -->";

#[test]
fn readme_compatibility_table_matches_the_support_tables() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find(START)
        .expect("README.md lost its compatibility start marker")
        + START.len();
    let end = readme
        .find(END)
        .expect("README.md lost its compatibility end marker");
    let generated = serin_api::support::compatibility_markdown();
    if std::env::var_os("SERIN_UPDATE_README").is_some() {
        let updated = format!("{}{generated}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        &readme[start..end],
        generated,
        "README.md's Flagger compatibility table is out of date; regenerate with SERIN_UPDATE_README=1 cargo test -p serin-api --test api compatibility_table::"
    );
}

#[test]
fn the_table_names_every_provider_and_says_what_is_not_run() {
    let table = serin_api::support::compatibility_markdown();
    for p in serin_api::support::TRAFFIC_PROVIDERS {
        assert!(table.contains(&format!("| `{}` |", p.name)), "{}", p.name);
    }
    for t in serin_api::METRIC_PROVIDER_TYPES {
        assert!(table.contains(&format!("| `{t}` |")), "{t}");
    }
    assert!(table.contains("| `istio` | — | not supported (valid, exit 3) |"));
    assert!(table.contains("| `spec.service.gateways` | accepted and ignored: "));
}
