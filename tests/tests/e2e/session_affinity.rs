//! Flagger's `analysis.sessionAffinity` on the local platform, from the Canary to the table the
//! proxies run: the Canary's cookie fields go through the engine's plan into serin-local's
//! routes file, and the local control plane (the real `LocalSource` reading that file) puts
//! each cookie on the right backend of the weighted rule and a sticky rule per cookie before it.
//! The proxy's side (the `Set-Cookie` headers on real answers) is mesh/proxy/tests/proxy/proxy.rs.

use serin_core::AffinityRoutes;
use serin_local::router::{ControlPlane, RouteSpec};
use serin_mesh_control::hub::Hub;
use serin_mesh_control::local::LocalSource;
use serin_mesh_control::translate::Options;

fn canary() -> serin_api::Canary {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {
            "targetRef": {"apiVersion": "serin.dev/v1beta1", "kind": "Process", "name": "shop"},
            "service": {"port": 8080},
            "analysis": {"interval": "10s", "threshold": 2, "maxWeight": 50, "stepWeight": 10,
                "sessionAffinity": {
                    "cookieName": "flagger-cookie", "primaryCookieName": "flagger-primary",
                    "maxAge": 600, "domain": "shop.example", "path": "/",
                    "sameSite": "Strict", "secure": true, "httpOnly": true, "partitioned": true}}
        }
    }))
    .expect("a valid Canary")
}

#[test]
fn every_session_affinity_field_reaches_the_local_control_planes_table() {
    let (_, ctx) = serin_controller::plan::context("default", &canary()).expect("plan");
    let a = ctx
        .plan
        .session_affinity
        .clone()
        .expect("session affinity in the plan");
    assert_eq!(a.primary_cookie_name.as_deref(), Some("flagger-primary"));
    // What the engine sets while run 2 is live (run 1's cookies are expired).
    let affinity = AffinityRoutes {
        cookie_name: a.cookie_name.clone(),
        cookie: Some("flagger-cookie=run2".into()),
        max_age: a.max_age,
        expire: Some("flagger-cookie=run1".into()),
        attributes: a.attributes.clone(),
        primary_cookie_name: a.primary_cookie_name.clone(),
    };
    let dir = std::env::temp_dir().join(format!("serin-affinity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("routes dir");
    let spec = RouteSpec {
        namespace: "default".into(),
        service: "shop".into(),
        target: "shop".into(),
        port: 8080,
        primary_weight: 90,
        canary_weight: 10,
        primary: vec!["127.0.0.1:1001".parse().unwrap()],
        canary: vec!["127.0.0.1:1002".parse().unwrap()],
        pods: Default::default(),
        affinity: Some(affinity),
    };
    ControlPlane::new("http://127.0.0.1:9", &dir)
        .write(&spec)
        .expect("write the routes file");
    let hub = Hub::new(Options::default());
    let _source = LocalSource::start(&dir, hub.clone()).expect("the control plane reads it");
    let table = hub.current().table("default");
    let _ = std::fs::remove_dir_all(&dir);
    table.validate().expect("the proxy accepts the table");

    let route = table
        .routes
        .iter()
        .find(|r| r.authority.host == "shop")
        .expect("a route for shop");
    let attrs = "Domain=shop.example; Path=/; Secure; HttpOnly; SameSite=Strict; Partitioned";
    // Rule order: canary sticky, primary sticky, then the weighted rule.
    assert_eq!(route.rules.len(), 3, "{:#?}", route.rules);
    let sticky = |i: usize| {
        let r = &route.rules[i];
        let h = &r.matches[0].headers[0];
        assert_eq!(h.name.to_ascii_lowercase(), "cookie");
        (
            h.value.clone(),
            r.backends
                .iter()
                .map(|b| b.name.clone())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        sticky(0),
        (
            r".*flagger\-cookie=run2.*".to_string(),
            vec!["shop-canary".to_string()]
        )
    );
    assert_eq!(
        sticky(1),
        (
            r".*flagger\-primary=run2.*".to_string(),
            vec!["shop-primary".to_string()]
        )
    );
    let weighted = &route.rules[2];
    let cookies = |name: &str| -> Vec<String> {
        let b = weighted
            .backends
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("backend {name}"));
        assert!(b.response_headers.set.is_empty(), "added, never set");
        b.response_headers
            .add
            .iter()
            .map(|h| {
                assert_eq!(h.name, "Set-Cookie");
                h.value.clone()
            })
            .collect()
    };
    assert_eq!(
        cookies("shop-canary"),
        [format!("flagger-cookie=run2; Max-Age=600; {attrs}")]
    );
    assert_eq!(
        cookies("shop-primary"),
        [
            format!("flagger-primary=run2; Max-Age=600; {attrs}"),
            format!("flagger-cookie=run1; Max-Age=-1; {attrs}"),
            format!("flagger-primary=run1; Max-Age=-1; {attrs}"),
        ]
    );
}
