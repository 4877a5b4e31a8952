//! Routing objects built for each provider, provider names, and the admin server over real HTTP.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use serin_api::Canary;
use serin_controller::metrics::{Health, Metrics, bind_admin, serve_admin};
use serin_core::{AffinityRoutes, Routes};
use serin_kube::routing::{Provider, http_route, parse_provider, traffic_split};
use serin_kube::services::ServiceNames;

fn canary() -> Canary {
    serde_json::from_value(json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "timeout": "15s", "headers": {"request": {"set": {"x-env": "prod"}}}},
            "analysis": {"interval": "1m", "threshold": 2, "iterations": 5,
                "match": [{"headers": {"x-canary": {"exact": "insider"}}}, {"queryParams": {"beta": {"prefix": "y"}}}]}
        }
    }))
    .unwrap()
}

fn owner() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    serin_kube::owner_reference(&canary())
}

#[test]
fn flagger_provider_names_map_onto_serins_routing() {
    assert_eq!(
        parse_provider("serin").unwrap(),
        Provider::HttpRoute {
            version: "v1",
            serin_mesh: true
        }
    );
    assert_eq!(
        parse_provider("gatewayapi:v1beta1").unwrap(),
        Provider::HttpRoute {
            version: "v1beta1",
            serin_mesh: false
        }
    );
    assert_eq!(
        parse_provider("linkerd").unwrap(),
        Provider::HttpRoute {
            version: "v1",
            serin_mesh: false
        }
    );
    assert_eq!(
        parse_provider("osm").unwrap(),
        Provider::TrafficSplit {
            version: "v1alpha2"
        }
    );
    assert_eq!(
        parse_provider("smi:v1alpha4").unwrap(),
        Provider::TrafficSplit {
            version: "v1alpha4"
        }
    );
    assert_eq!(parse_provider("kubernetes").unwrap(), Provider::Kubernetes);
    for bad in ["istio", "appmesh", "contour", "nginx:v2"] {
        let e = parse_provider(bad).unwrap_err().to_string();
        assert!(e.contains(bad) && e.contains("supported: serin"), "{e}");
    }
}

/// `serin validate` says "runnable" exactly for the provider forms the controller routes.
#[test]
fn the_routing_code_drives_exactly_what_validate_calls_runnable() {
    for p in serin_api::support::TRAFFIC_PROVIDERS {
        let forms = std::iter::once(p.name.to_string())
            .chain(p.versions.iter().map(|v| format!("{}:{v}", p.name)));
        for form in forms {
            let verdict = serin_api::support::provider_not_driven(&form);
            match parse_provider(&form) {
                Ok(_) => assert_eq!(
                    verdict, None,
                    "{form} is routed but validate says not runnable"
                ),
                Err(e) => assert_eq!(Some(e.to_string()), verdict, "{form}"),
            }
        }
    }
}

#[test]
fn ab_matches_go_to_the_canary_and_the_rest_to_the_primary() {
    let c = canary();
    let (n, _) = serin_controller::plan::context("test", &c).unwrap();
    let names = ServiceNames::new(&n);
    let routes = Routes {
        primary_weight: 0,
        canary_weight: 100,
        mirror_weight: None,
        matches: serin_controller::plan::route_matches(&c.spec.analysis.r#match),
        affinity: None,
    };
    let r = http_route("v1", &c, &n, &names, &routes, &owner());
    let rules = r["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 3, "{r}");
    assert_eq!(
        rules[0]["matches"][0]["headers"][0],
        json!({"name": "x-canary", "type": "Exact", "value": "insider"})
    );
    assert_eq!(
        rules[0]["backendRefs"][1],
        json!({"name": "podinfo-canary", "port": 9898, "weight": 100})
    );
    assert_eq!(
        rules[1]["matches"][0]["queryParams"][0],
        json!({"name": "beta", "type": "RegularExpression", "value": "^y.*"})
    );
    assert_eq!(
        rules[2]["backendRefs"][0]["weight"], 100,
        "unmatched traffic stays on the primary"
    );
    assert_eq!(rules[2]["backendRefs"][1]["weight"], 0);
    assert_eq!(rules[2]["timeouts"]["request"], "15s");
    assert_eq!(
        rules[2]["filters"][0]["requestHeaderModifier"]["set"][0],
        json!({"name": "x-env", "value": "prod"})
    );
    assert_eq!(r["metadata"]["ownerReferences"][0]["uid"], "u1");
}

#[test]
fn mirroring_and_session_affinity_use_gateway_api_filters() {
    let c = canary();
    let (n, _) = serin_controller::plan::context("test", &c).unwrap();
    let names = ServiceNames::new(&n);
    let routes = Routes {
        primary_weight: 90,
        canary_weight: 10,
        mirror_weight: Some(50),
        matches: vec![],
        affinity: Some(AffinityRoutes {
            cookie_name: "serin-cookie".into(),
            cookie: Some("serin-cookie=abc".into()),
            max_age: 3600,
            expire: Some("serin-cookie=old".into()),
            attributes: Default::default(),
            primary_cookie_name: None,
        }),
    };
    let r = http_route("v1", &c, &n, &names, &routes, &owner());
    let rules = r["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules[0]["matches"][0]["headers"][0]["name"], "Cookie");
    assert_eq!(
        rules[0]["backendRefs"][0],
        json!({"name": "podinfo-canary", "port": 9898, "weight": 100})
    );
    let main = &rules[1];
    assert_eq!(main["backendRefs"][0]["weight"], 90);
    assert_eq!(main["backendRefs"][1]["weight"], 10);
    assert_eq!(
        main["backendRefs"][1]["filters"][0]["responseHeaderModifier"]["add"][0]["value"],
        "serin-cookie=abc; Max-Age=3600"
    );
    assert_eq!(
        main["backendRefs"][0]["filters"][0]["responseHeaderModifier"]["add"][0]["value"],
        "serin-cookie=old; Max-Age=-1"
    );
    let mirror = main["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["type"] == "RequestMirror")
        .unwrap();
    assert_eq!(
        mirror["requestMirror"],
        json!({"backendRef": {"name": "podinfo-canary", "port": 9898}, "percent": 50})
    );
}

#[test]
fn traffic_splits_carry_integer_weights_except_v1alpha1() {
    let c = canary();
    let (n, _) = serin_controller::plan::context("test", &c).unwrap();
    let names = ServiceNames::new(&n);
    let routes = Routes {
        primary_weight: 70,
        canary_weight: 30,
        ..Routes::all_primary()
    };
    let ts = traffic_split("v1alpha2", "test", &names, &routes, &owner());
    assert_eq!(ts["apiVersion"], "split.smi-spec.io/v1alpha2");
    assert_eq!(ts["spec"]["service"], "podinfo");
    assert_eq!(
        ts["spec"]["backends"],
        json!([{"service": "podinfo-primary", "weight": 70}, {"service": "podinfo-canary", "weight": 30}])
    );
    let old = traffic_split("v1alpha1", "test", &names, &routes, &owner());
    assert_eq!(old["spec"]["backends"][1]["weight"], "30");
}

#[tokio::test]
async fn the_admin_server_serves_metrics_health_and_readiness() {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    metrics.canary_seen("podinfo", "test");
    metrics.set_phase("podinfo", "test", "Progressing");
    metrics.set_weights("podinfo", "test", 80, 20);
    metrics.set_metric("podinfo", "test", "request-success-rate", 99.5);
    metrics.rollout_finished("podinfo", "test", "canary", true, Some(300.0));
    metrics.rollout_finished("podinfo", "test", "canary", false, Some(120.0));
    let (listener, addr) = bind_admin("127.0.0.1:0".parse().unwrap()).await.unwrap();
    tokio::spawn(serve_admin(listener, metrics, health.clone()));
    let http = serin_controller::http::HttpClient::new();
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            http.get(&format!("http://{addr}{path}"), Duration::from_secs(5))
                .await
                .unwrap()
        }
    };
    assert_eq!(get("/healthz").await.status, 200);
    assert_eq!(
        get("/readyz").await.status,
        503,
        "not ready before the caches sync"
    );
    health.set_ready(true);
    assert_eq!(get("/readyz").await.status, 200);
    let text = String::from_utf8(get("/metrics").await.body.to_vec()).unwrap();
    for line in [
        "serin_canary_status{name=\"podinfo\",namespace=\"test\"} 0",
        "serin_canary_weight{workload=\"podinfo-primary\",namespace=\"test\"} 80",
        "serin_canary_weight{workload=\"podinfo\",namespace=\"test\"} 20",
        "serin_canary_total{namespace=\"test\"} 1",
        "serin_canary_metric_analysis{name=\"podinfo\",namespace=\"test\",metric=\"request-success-rate\"} 99.5",
        "serin_canary_successes_total{name=\"podinfo\",namespace=\"test\",deployment_strategy=\"canary\"} 1",
        "serin_canary_failures_total{name=\"podinfo\",namespace=\"test\",deployment_strategy=\"canary\"} 1",
        "serin_canary_duration_seconds_count{name=\"podinfo\",namespace=\"test\"} 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

/// Flagger's sessionAffinity cookie attributes reach the Set-Cookie of both the canary's cookie
/// and the primary's expiry of an earlier one (which needs the same Domain and Path to match).
#[test]
fn session_affinity_cookie_attributes_are_in_every_set_cookie() {
    let mut c = canary();
    c.spec.analysis.session_affinity = Some(serin_api::SessionAffinity {
        cookie_name: "flagger-cookie".into(),
        primary_cookie_name: Some("flagger-primary".into()),
        max_age: Some(600),
        attributes: serin_api::CookieAttributes {
            domain: Some("shop.example.com".into()),
            path: Some("/".into()),
            same_site: Some(serin_api::SameSite::Lax),
            secure: true,
            http_only: true,
            partitioned: true,
        },
    });
    let (n, ctx) = serin_controller::plan::context("test", &c).unwrap();
    let a = ctx.plan.session_affinity.clone().unwrap();
    assert_eq!(a.max_age, 600);
    let names = ServiceNames::new(&n);
    let routes = Routes {
        primary_weight: 90,
        canary_weight: 10,
        mirror_weight: None,
        matches: vec![],
        affinity: Some(AffinityRoutes {
            cookie_name: a.cookie_name.clone(),
            cookie: Some("flagger-cookie=run2".into()),
            max_age: a.max_age,
            expire: Some("flagger-cookie=run1".into()),
            attributes: a.attributes.clone(),
            primary_cookie_name: a.primary_cookie_name.clone(),
        }),
    };
    let r = http_route("v1", &c, &n, &names, &routes, &owner());
    let rules = r["spec"]["rules"].as_array().unwrap();
    let last = rules.last().unwrap();
    let set_cookies = |i: usize| -> Vec<String> {
        last["backendRefs"][i]["filters"][0]["responseHeaderModifier"]["add"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                assert_eq!(h["name"], "Set-Cookie");
                h["value"].as_str().unwrap().to_string()
            })
            .collect()
    };
    const ATTRS: &str =
        "Domain=shop.example.com; Path=/; Secure; HttpOnly; SameSite=Lax; Partitioned";
    assert_eq!(
        set_cookies(1),
        [format!("flagger-cookie=run2; Max-Age=600; {ATTRS}")]
    );
    // The primary pins its own users (primaryCookieName, the run's value) and expires both
    // cookies of the earlier run.
    assert_eq!(
        set_cookies(0),
        [
            format!("flagger-primary=run2; Max-Age=600; {ATTRS}"),
            format!("flagger-cookie=run1; Max-Age=-1; {ATTRS}"),
            format!("flagger-primary=run1; Max-Age=-1; {ATTRS}"),
        ]
    );
    // Sticky rules first: the canary's cookie to the canary, the primary's to the primary
    // (the patterns escape `-`, so look for the part after it).
    let sticky = |cookie: &str| {
        rules
            .iter()
            .find(|r| {
                r["matches"][0]["headers"][0]["value"]
                    .as_str()
                    .is_some_and(|v| v.contains(cookie))
            })
            .unwrap_or_else(|| panic!("no rule matches the cookie {cookie}"))["backendRefs"]
            .clone()
    };
    assert_eq!(
        sticky("cookie=run2"),
        json!([{"name": "podinfo-canary", "port": 9898, "weight": 100}])
    );
    assert_eq!(
        sticky("primary=run2"),
        json!([{"name": "podinfo-primary", "port": 9898, "weight": 100}])
    );
}
