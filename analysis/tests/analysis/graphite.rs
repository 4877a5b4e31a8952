//! The Graphite provider against Debian's real Graphite: carbon-cache and graphite-web started
//! by the test on loopback ports it binds on port 0 and holds
//! (serin_analysis::testing::graphite), datapoints written through carbon's plaintext
//! protocol, then read back through the registry's client with Flagger's semantics: the render
//! query string (written over several lines), the last non-null datapoint, no data as `None`,
//! graphite-web's own error message.
//! Skips, saying why, without the packages, unless CI or SERIN_REQUIRE_GRAPHITE is set.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serin_analysis::testing::eventually;
use serin_analysis::testing::graphite::start_graphite;
use serin_analysis::{AnalysisError, ProviderRegistry, ProviderSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphite_answers_the_last_non_null_datapoint_of_a_render_query() {
    let Some(graphite) = start_graphite() else {
        return;
    };
    let settings = ProviderSettings {
        type_: "graphite".into(),
        address: Some(graphite.address.clone()),
        ..Default::default()
    };
    let provider = ProviderRegistry::new()
        .provider("test/graphite", &settings)
        .expect("a graphite client");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    // Two series of one-second points; the newest second of `errors` is left empty (null).
    graphite
        .write(&[
            ("serin.podinfo.requests", 100.0, now - 4),
            ("serin.podinfo.requests", 200.0, now - 3),
            ("serin.podinfo.requests", 300.0, now - 2),
            ("serin.podinfo.errors", 1.0, now - 4),
            ("serin.podinfo.errors", 3.0, now - 3),
        ])
        .await;
    // Written over several lines, as Flagger's docs do; whitespace folds to one space.
    let query = "target=asPercent(
        serin.podinfo.errors,
        serin.podinfo.requests
    )
    &from=-1min";
    let observed = eventually(
        "graphite-web to serve the written datapoints",
        Duration::from_secs(60),
        || async {
            match provider.query(query, Duration::from_secs(60)).await {
                Ok(o) if o.value.is_some() => Some(o),
                Ok(_) => None,
                // Not up yet: graphite-web takes a few seconds to start.
                Err(AnalysisError::Unavailable { .. }) => None,
                Err(e) => panic!("{e}\n{}", graphite.logs()),
            }
        },
    )
    .await;
    // errors/requests per second: 1%, 1.5%, then null (no error point at now-2): the last
    // non-null is 1.5.
    assert_eq!(observed.value, Some(1.5), "{}", graphite.logs());

    // A series that does not exist is no data, never a pass.
    let absent = provider
        .query(
            "target=serin.podinfo.absent&from=-1min",
            Duration::from_secs(60),
        )
        .await
        .expect("an empty answer is not an error");
    assert_eq!(absent.value, None);

    // graphite-web's own message comes back with the status.
    let err = provider
        .query(
            "target=noSuchFunction(serin.podinfo.requests)",
            Duration::from_secs(60),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 400") && err.contains("unknown function: noSuchFunction"),
        "{err}"
    );
}
