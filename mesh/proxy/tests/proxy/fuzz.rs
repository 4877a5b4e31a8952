//! Property tests: decoding and matching never panic, whatever the input.

use std::collections::BTreeMap;
use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use serin_mesh_api::RouteTable;
use serin_proxy::metrics::Registry;
use serin_proxy::router::{Compiled, EndpointStates, RequestView, split_authority};

const TABLE: &str = r#"
routes:
  - authority: svc
    rules:
      - matches:
          - path: { type: RegularExpression, value: "/v[0-9]+/.*" }
            method: GET
          - headers: [{ name: x-user, type: RegularExpression, value: "(a|b)+" }]
            queryParams: [{ name: q, value: "1" }]
            cookies: [{ name: c, type: RegularExpression, value: ".*x.*" }]
        backends: [{ name: a, endpoints: ["127.0.0.1:1"] }]
      - matches: [{ path: { value: /api } }, { path: { type: Exact, value: / } }]
        backends: [{ name: b, weight: 3, endpoints: ["127.0.0.1:2", "127.0.0.1:3"] }, { name: c, weight: 0, endpoints: [] }]
  - authority: svc:80
    rules:
      - backends: [{ name: d, endpoints: ["127.0.0.1:4"] }]
"#;

fn compiled() -> &'static Compiled {
    static C: std::sync::OnceLock<Compiled> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        let t: RouteTable = serde_norway::from_str(TABLE).expect("fixture");
        Compiled::compile(
            t,
            &Registry::new(&BTreeMap::new()),
            &EndpointStates::default(),
        )
        .expect("fixture compiles")
    })
}

/// YAML-ish text built from the pieces a config is made of, so mutations reach deep paths.
fn yamlish() -> impl Strategy<Value = String> {
    let atoms = prop_oneof![
        Just("routes:".to_string()),
        Just("  - authority: ".to_string()),
        Just("    rules:".to_string()),
        Just("      - backends:".to_string()),
        Just("          - name: a".to_string()),
        Just("            weight: ".to_string()),
        Just("            endpoints: [127.0.0.1:1]".to_string()),
        Just("        mirror: { backend: x, percent: 200 }".to_string()),
        Just("        timeout: ".to_string()),
        Just("      - matches: [{ path: { type: RegularExpression, value: \"(\" } }]".to_string()),
        Just("outbound: { listen: 127.0.0.1:0 }".to_string()),
        Just("labels: { \"bad key\": x }".to_string()),
        "[ -~]{0,20}",
    ];
    proptest::collection::vec(atoms, 0..16).prop_map(|v| v.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn config_decoding_never_panics_on_arbitrary_text(src in "\\PC{0,200}") {
        let _ = serin_proxy::config::parse(Path::new("fuzz.yaml"), &src);
    }

    #[test]
    fn config_decoding_never_panics_on_config_shaped_text(src in yamlish()) {
        if let Err(e) = serin_proxy::config::parse(Path::new("fuzz.yaml"), &src) {
            // Every rejection is a message, never empty.
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn line_location_never_panics(src in yamlish(), key in "[a-z\\[\\]0-9.]{0,30}") {
        if let Some(line) = serin_proxy::config::locate(&src, &key) {
            prop_assert!(line >= 1 && line <= src.lines().count());
        }
    }

    #[test]
    fn json_tables_decode_or_fail_cleanly(src in "\\PC{0,200}") {
        if let Ok(t) = serde_json::from_str::<RouteTable>(&src) {
            let _ = t.validate();
        }
    }

    #[test]
    fn matching_never_panics_and_always_picks_a_listed_backend(
        authority in "[a-zA-Z0-9:.\\[\\]-]{0,24}",
        method in "[A-Z]{1,8}",
        path in "/[ -~]{0,40}",
        query in proptest::option::of("[ -~]{0,30}"),
        headers in proptest::collection::vec(("(x-user|cookie|x-[a-z]{1,5})", "[ -~]{0,20}"), 0..6),
        draw in any::<u64>(),
    ) {
        let c = compiled();
        let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
        let mut map = HeaderMap::new();
        for (k, v) in &headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                map.append(k, v);
            }
        }
        let _ = split_authority(&authority);
        if let Some(route) = c.route(&authority) {
            let view = RequestView { method: &method, path: &path, query: query.as_deref(), headers: &map };
            if let Some(rule) = route.rule(&view) {
                let b = rule.pick(draw % rule.total_weight());
                prop_assert!(["a", "b", "c", "d"].contains(&b.name.as_str()));
                prop_assert!(b.name != "c", "weight-0 backends are never picked");
            }
        }
    }

    #[test]
    fn authorities_and_durations_parse_or_fail_cleanly(s in "\\PC{0,40}") {
        let _ = s.parse::<serin_mesh_api::Authority>();
        let _ = serin_mesh_api::table::parse_duration(&s);
    }
}
