//! The whole proxy in-process on 127.0.0.1:0 against stub upstreams.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serin_proxy::Proxy;
use support::*;

fn split_yaml(
    primary: &Upstream,
    canary: &Upstream,
    primary_weight: u32,
    canary_weight: u32,
) -> String {
    format!(
        r#"
routes:
  - authority: podinfo
    rules:
      - matches:
          - headers: [{{ name: x-canary, value: insider }}]
          - cookies: [{{ name: track, value: canary }}]
        backends:
          - {{ name: podinfo-canary, endpoints: ["{c}"] }}
      - backends:
          - {{ name: podinfo-primary, weight: {primary_weight}, labels: {{ track: primary }}, endpoints: ["{p}"] }}
          - {{ name: podinfo-canary, weight: {canary_weight}, endpoints: ["{c}"] }}
"#,
        p = primary.addr,
        c = canary.addr
    )
}

/// Upstreams `primary` and `canary` behind a proxy splitting `podinfo` between them.
async fn split_proxy(primary_weight: u32, canary_weight: u32) -> (Upstream, Upstream, Proxy) {
    let primary = upstream("primary").await;
    let canary = upstream("canary").await;
    let p = proxy().await;
    p.table()
        .apply(table(&split_yaml(
            &primary,
            &canary,
            primary_weight,
            canary_weight,
        )))
        .expect("valid table");
    (primary, canary, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_sends_about_a_tenth_of_10000_requests_to_the_canary() {
    let primary = upstream("primary").await;
    let canary = upstream("canary").await;
    let p = proxy_with(&[("namespace", "test"), ("deployment", "frontend")]).await;
    p.table()
        .apply(table(&split_yaml(&primary, &canary, 90, 10)))
        .expect("valid table");
    let addr = p.outbound_addr();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        workers.spawn(async move {
            let client = h1_client();
            let mut canary = 0u32;
            for _ in 0..625 {
                let got = get(&client, addr, "podinfo", "/", &[]).await;
                assert_eq!(got.status, StatusCode::OK);
                if got.body == "canary" {
                    canary += 1;
                }
            }
            canary
        });
    }
    let mut to_canary = 0;
    within(600, async {
        while let Some(n) = workers.join_next().await {
            to_canary += n.expect("worker");
        }
    })
    .await;
    // Binomial(10000, 0.1): sd = 30, so ±150 (5 sd, 1.5 percentage points) fails by chance
    // about once in 1.7 million runs.
    assert!(
        (850..=1150).contains(&to_canary),
        "{to_canary} of 10000 went to the canary; expected 1000 ± 150"
    );

    let m = metrics(&p).await;
    let primary_labels = [
        "direction=\"outbound\"",
        "authority=\"podinfo\"",
        "dst_service=\"podinfo-primary\"",
        "dst_track=\"primary\"",
        "namespace=\"test\"",
        "deployment=\"frontend\"",
    ];
    let mut req_labels = vec!["request_total{"];
    req_labels.extend(primary_labels);
    assert_eq!(sample(&m, &req_labels), f64::from(10000 - to_canary), "{m}");
    let mut resp_labels = vec![
        "response_total{",
        "status_code=\"200\"",
        "classification=\"success\"",
    ];
    resp_labels.extend(primary_labels);
    assert_eq!(sample(&m, &resp_labels), f64::from(10000 - to_canary));
    assert_eq!(
        sample(
            &m,
            &[
                "response_total{",
                "dst_service=\"podinfo-canary\"",
                "classification=\"success\""
            ]
        ),
        f64::from(to_canary)
    );
    assert_eq!(
        sample(
            &m,
            &[
                "response_latency_ms_count{",
                "dst_service=\"podinfo-canary\""
            ]
        ),
        f64::from(to_canary)
    );
    assert!(m.contains("tcp_open_total{direction=\"outbound\",peer=\"src\""));
    assert!(
        sample(
            &m,
            &[
                "tcp_read_bytes_total{",
                "direction=\"outbound\"",
                "peer=\"dst\""
            ]
        ) > 0.0
    );
    // Never the path as a label.
    assert!(!m.contains("path="));
}

#[tokio::test]
async fn a_header_or_a_cookie_pins_requests_to_the_canary() {
    let (_primary, _canary, p) = split_proxy(100, 0).await;
    let c = h1_client();
    let addr = p.outbound_addr();
    for _ in 0..50 {
        assert_eq!(get(&c, addr, "podinfo", "/", &[]).await.body, "primary");
        assert_eq!(
            get(&c, addr, "podinfo", "/", &[("x-canary", "insider")])
                .await
                .body,
            "canary"
        );
        assert_eq!(
            get(
                &c,
                addr,
                "podinfo",
                "/",
                &[("cookie", "session=1; track=canary")]
            )
            .await
            .body,
            "canary"
        );
        assert_eq!(
            get(&c, addr, "podinfo", "/", &[("x-canary", "outsider")])
                .await
                .body,
            "primary"
        );
    }
}

#[tokio::test]
async fn the_authority_may_carry_a_port_and_any_case() {
    let (_primary, _canary, p) = split_proxy(1, 0).await;
    let got = get(&h1_client(), p.outbound_addr(), "PodInfo:9898", "/", &[]).await;
    assert_eq!(got.body, "primary");
}

#[tokio::test]
async fn a_fully_qualified_authority_with_its_trailing_dot_names_the_same_route() {
    // `http://podinfo.test.svc.cluster.local./` skips the resolver's search list (a common
    // Kubernetes tip against ndots:5); its Host keeps the dot, over HTTP/1.1 and h2 alike.
    let (_primary, _canary, p) = split_proxy(1, 0).await;
    for client in [h1_client(), h2_client(p.outbound_addr())] {
        for authority in ["podinfo.", "PodInfo.:9898"] {
            let got = get(&client, p.outbound_addr(), authority, "/", &[]).await;
            assert_eq!(got.status, 200, "{authority}: {}", got.body);
            assert_eq!(got.body, "primary");
        }
    }
    let got = get(&h1_client(), p.outbound_addr(), "podinfo..", "/", &[]).await;
    assert_eq!(got.status, 404, "only one trailing dot is the root");
}

/// `api` to `primary`, every request copied to `shadow`.
fn mirror_yaml(primary: std::net::SocketAddr, shadow: std::net::SocketAddr) -> String {
    format!(
        r#"
routes:
  - authority: api
    backends:
      - {{ name: shadow, endpoints: ["{shadow}"] }}
    rules:
      - backends: [{{ name: primary, endpoints: ["{primary}"] }}]
        mirror: {{ backend: shadow, percent: 100 }}
"#
    )
}

#[tokio::test]
async fn mirrored_requests_reach_the_mirror_without_delaying_the_real_response() {
    let primary = upstream("primary").await;
    let mut shadow = upstream("shadow").await;
    let p = proxy().await;
    p.table()
        .apply(table(&mirror_yaml(primary.addr, shadow.addr)))
        .expect("valid table");
    let c = h1_client();
    // The shadow never answers, yet the real responses come back.
    for i in 0..10 {
        let got = within(
            10,
            send(
                &c,
                p.outbound_addr(),
                "api",
                "POST",
                "/hang-shadow",
                &[],
                Bytes::from(format!("body-{i}")),
            ),
        )
        .await;
        assert_eq!(got.status, StatusCode::OK, "real request {i}");
    }
    let mut bodies = Vec::new();
    within(30, async {
        while bodies.len() < 10 {
            let seen = shadow.seen.recv().await.expect("shadow request");
            assert_eq!(seen.path, "/hang-shadow");
            assert_eq!(
                seen.headers.get("host").map(|h| h.to_str().ok()),
                Some(Some("api"))
            );
            bodies.push(String::from_utf8_lossy(&seen.body).into_owned());
        }
    })
    .await;
    bodies.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("body-{i}")).collect();
    want.sort();
    assert_eq!(bodies, want);
    let _ = primary;
}

#[tokio::test]
async fn a_mirror_that_stops_answering_holds_a_bounded_number_of_copies() {
    use serin_proxy::balance::MAX_MIRRORS_IN_FLIGHT;
    let primary = upstream("primary").await;
    // Takes every connection and never answers (nor closes): each copy waits its whole timeout.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hole_addr = hole.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let p = proxy().await;
    p.table()
        .apply(table(&mirror_yaml(primary.addr, hole_addr)))
        .expect("valid table");
    let c = h1_client();
    let extra = 20;
    for i in 0..MAX_MIRRORS_IN_FLIGHT + extra {
        let got = within(10, get(&c, p.outbound_addr(), "api", "/", &[])).await;
        assert_eq!(got.status, StatusCode::OK, "real request {i}");
    }
    let m = metrics(&p).await;
    assert_eq!(
        sample(
            &m,
            &[
                "serin_proxy_mirror_total{",
                "dst_service=\"shadow\"",
                "result=\"dropped\""
            ]
        ),
        f64::from(extra),
        "{m}"
    );
}

#[tokio::test]
async fn a_mirror_answering_5xx_is_counted_as_a_failure_not_ok() {
    let primary = upstream("primary").await;
    let shadow = upstream("shadow").await;
    let p = proxy().await;
    p.table()
        .apply(table(&mirror_yaml(primary.addr, shadow.addr)))
        .expect("valid table");
    let c = h1_client();
    for (path, n) in [("/", 3), ("/status/503", 4)] {
        for _ in 0..n {
            within(10, get(&c, p.outbound_addr(), "api", path, &[])).await;
        }
    }
    // Copies finish after the real responses: wait until all seven are counted.
    let shadow_result = |m: &str, result: &str| {
        sample(
            m,
            &[
                "serin_proxy_mirror_total{",
                "dst_service=\"shadow\"",
                &format!("result=\"{result}\""),
            ],
        )
    };
    let m = within(10, async {
        loop {
            let m = metrics(&p).await;
            if shadow_result(&m, "ok") + shadow_result(&m, "failure") >= 7.0 {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(shadow_result(&m, "ok"), 3.0, "{m}");
    assert_eq!(shadow_result(&m, "failure"), 4.0, "{m}");
    let _ = (primary, shadow);
}

#[tokio::test]
async fn a_slow_backend_gets_a_504_after_the_route_timeout() {
    let slow = upstream("slow").await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            r#"
routes:
  - authority: slow
    rules:
      - backends: [{{ name: slow, endpoints: ["{s}"] }}]
        timeout: 200ms
"#,
            s = slow.addr
        )))
        .expect("valid table");
    let got = within(
        10,
        get(&h1_client(), p.outbound_addr(), "slow", "/hang", &[]),
    )
    .await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        got.body.contains("did not answer within 200ms"),
        "{}",
        got.body
    );
    let m = metrics(&p).await;
    assert_eq!(
        sample(
            &m,
            &[
                "response_total{",
                "dst_service=\"slow\"",
                "status_code=\"504\"",
                "classification=\"failure\"",
                "error=\"timeout\""
            ]
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_reused_upstream_connection_keeps_a_shorter_route_timeout() {
    // Each upstream HTTP/1.1 connection keeps one timer for the response deadlines of the
    // requests it carries. A connection that last served a route with a long timeout must
    // still time out the next request at its own, shorter deadline.
    let slow = upstream("slow").await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            r#"
routes:
  - authority: patient
    rules:
      - backends: [{{ name: slow, endpoints: ["{s}"] }}]
        timeout: 60s
  - authority: hasty
    rules:
      - backends: [{{ name: slow, endpoints: ["{s}"] }}]
        timeout: 200ms
"#,
            s = slow.addr
        )))
        .expect("valid table");
    let client = h1_client();
    let got = within(10, get(&client, p.outbound_addr(), "patient", "/", &[])).await;
    assert_eq!(got.status, StatusCode::OK);
    let started = std::time::Instant::now();
    let got = within(10, get(&client, p.outbound_addr(), "hasty", "/hang", &[])).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{}", got.body);
    assert!(
        got.body.contains("did not answer within 200ms"),
        "{}",
        got.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}, not at the 200ms deadline",
        started.elapsed()
    );
    // The connection that timed out is closed, not reused: the next request is answered.
    let got = within(10, get(&client, p.outbound_addr(), "patient", "/", &[])).await;
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_authorities_missing_endpoints_and_dead_endpoints_get_readable_errors() {
    let dead = closed_port().await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            r#"
routes:
  - authority: empty
    rules:
      - backends: [{{ name: nobody, endpoints: [] }}]
  - authority: dead
    rules:
      - backends: [{{ name: dead, endpoints: ["{dead}"] }}]
  - authority: misnamed
    backends: [{{ name: gone, invalid: BackendNotFound }}]
    rules:
      - backends: [{{ name: gone }}]
"#
        )))
        .expect("valid table");
    let c = h1_client();
    let a = p.outbound_addr();

    let got = get(&c, a, "elsewhere.example", "/", &[]).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.body, "no route for authority \"elsewhere.example\"\n");

    let got = get(&c, a, "empty", "/", &[]).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.body, "backend \"nobody\" has no endpoints\n");

    // Gateway API: an invalid backendRef's share is answered 500, not 503.
    let got = get(&c, a, "misnamed", "/", &[]).await;
    assert_eq!(got.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(got.body, "backend \"gone\" is invalid: BackendNotFound\n");
    assert_eq!(
        got.headers
            .get("l5d-proxy-error")
            .and_then(|v| v.to_str().ok()),
        Some("invalid_backend")
    );

    let got = get(&c, a, "dead", "/", &[]).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert!(
        got.body
            .starts_with("could not connect to backend \"dead\""),
        "{}",
        got.body
    );

    let m = metrics(&p).await;
    for (svc, code, error) in [
        ("", "404", "no_route"),
        ("nobody", "503", "no_endpoints"),
        ("gone", "500", "invalid_backend"),
        ("dead", "502", "connect"),
    ] {
        let svc = format!("dst_service=\"{svc}\"");
        let code = format!("status_code=\"{code}\"");
        let error = format!("error=\"{error}\"");
        assert_eq!(
            sample(
                &m,
                &[
                    "response_total{",
                    &svc,
                    &code,
                    &error,
                    "classification=\"failure\""
                ]
            ),
            1.0,
            "{svc} {code} {error} in\n{m}"
        );
    }
    // The client's authority never becomes a label value.
    assert!(!m.contains("elsewhere.example"));
}

#[tokio::test]
async fn upstream_5xx_count_as_failures_and_4xx_as_successes() {
    let up = upstream("up").await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: up\n    rules:\n      - backends: [{{ name: up, endpoints: [\"{}\"] }}]\n",
            up.addr
        )))
        .expect("valid table");
    let c = h1_client();
    assert_eq!(
        get(&c, p.outbound_addr(), "up", "/status/503", &[])
            .await
            .status,
        503
    );
    assert_eq!(
        get(&c, p.outbound_addr(), "up", "/status/404", &[])
            .await
            .status,
        404
    );
    let m = metrics(&p).await;
    assert_eq!(
        sample(
            &m,
            &[
                "response_total{",
                "status_code=\"503\"",
                "classification=\"failure\""
            ]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            &[
                "response_total{",
                "status_code=\"404\"",
                "classification=\"success\""
            ]
        ),
        1.0
    );
}

#[tokio::test]
async fn grpc_over_h2c_keeps_trailers_and_counts_non_zero_status_as_failure() {
    let mut grpc = upstream("grpc").await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            r#"
routes:
  - authority: greeter:50051
    rules:
      - backends: [{{ name: greeter, endpoints: ["{g}"] }}]
        responseHeaders:
          set: [{{ name: x-served-by, value: serin }}]
"#,
            g = grpc.addr
        )))
        .expect("valid table");
    let c = h2_client(p.outbound_addr());
    let headers = [("content-type", "application/grpc"), ("te", "trailers")];
    let ok = send(
        &c,
        p.outbound_addr(),
        "greeter:50051",
        "POST",
        "/grpc/0",
        &headers,
        Bytes::from_static(b"\0\0\0\0\0"),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.headers.get("x-served-by").map(|v| v.as_bytes()),
        Some(&b"serin"[..])
    );
    let trailers = ok.trailers.expect("trailers forwarded");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.as_bytes()),
        Some(&b"from-stub"[..])
    );
    let seen = grpc.seen.recv().await.expect("upstream saw it");
    assert_eq!(seen.version, http::Version::HTTP_2, "h2 stays h2 upstream");
    assert_eq!(
        seen.headers.get("te").map(|v| v.as_bytes()),
        Some(&b"trailers"[..])
    );

    let failed = send(
        &c,
        p.outbound_addr(),
        "greeter:50051",
        "POST",
        "/grpc/14",
        &headers,
        Bytes::new(),
    )
    .await;
    assert_eq!(failed.status, StatusCode::OK);
    assert_eq!(
        failed
            .trailers
            .expect("trailers")
            .get("grpc-status")
            .map(|v| v.as_bytes()),
        Some(&b"14"[..])
    );
    let m = metrics(&p).await;
    assert_eq!(
        sample(
            &m,
            &[
                "response_total{",
                "grpc_status=\"0\"",
                "classification=\"success\""
            ]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &[
                "response_total{",
                "grpc_status=\"14\"",
                "classification=\"failure\""
            ]
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn response_headers_are_set_for_session_affinity() {
    let canary = upstream("canary").await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            r#"
routes:
  - authority: shop
    rules:
      - backends: [{{ name: canary, endpoints: ["{c}"] }}]
        responseHeaders:
          set: [{{ name: set-cookie, value: "track=canary; Max-Age=3600" }}, {{ name: x-upstream, value: replaced }}]
"#,
            c = canary.addr
        )))
        .expect("valid table");
    let got = get(&h1_client(), p.outbound_addr(), "shop", "/", &[]).await;
    assert_eq!(
        got.headers.get("set-cookie").map(|v| v.as_bytes()),
        Some(&b"track=canary; Max-Age=3600"[..])
    );
    assert_eq!(
        got.headers.get("x-upstream").map(|v| v.as_bytes()),
        Some(&b"replaced"[..])
    );
}

/// Flagger's session affinity as the control plane translates it: each backend of the weighted
/// rule adds its own `Set-Cookie` (the canary's cookie on the canary's answers; the primary's
/// cookie and the expiry of an earlier run's on the primary's), after the rule's own headers and
/// without replacing them; a request carrying the primary's cookie stays on the primary.
#[tokio::test]
async fn each_backend_adds_its_own_set_cookie_headers_after_the_rules() {
    let primary = upstream("primary").await;
    let canary = upstream("canary").await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            r#"
routes:
  - authority: shop
    rules:
      - matches:
          - headers: [{{ name: cookie, type: RegularExpression, value: ".*flagger-primary=run2.*" }}]
        backends: [{{ name: primary, endpoints: ["{p}"] }}]
      - backends:
          - name: primary
            weight: 1
            endpoints: ["{p}"]
            responseHeaders:
              add:
                - {{ name: set-cookie, value: "flagger-primary=run2; Max-Age=600; Path=/; SameSite=Lax" }}
                - {{ name: set-cookie, value: "flagger-cookie=run1; Max-Age=-1; Path=/; SameSite=Lax" }}
          - name: canary
            weight: 1
            endpoints: ["{c}"]
            responseHeaders:
              add: [{{ name: set-cookie, value: "flagger-cookie=run2; Max-Age=600; Path=/; SameSite=Lax; Secure; HttpOnly; Partitioned" }}]
        responseHeaders:
          add: [{{ name: set-cookie, value: "app=1" }}]
"#,
            p = primary.addr,
            c = canary.addr
        )))
        .expect("valid table");
    let client = h1_client();
    let set_cookies = |got: &Got| -> Vec<String> {
        got.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().expect("ascii").to_string())
            .collect()
    };
    let (mut saw_primary, mut saw_canary) = (false, false);
    // Half of the requests go to each; 200 requests miss one side with probability 2^-199.
    for _ in 0..200 {
        let got = get(&client, p.outbound_addr(), "shop", "/", &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        if got.body == "primary" {
            saw_primary = true;
            assert_eq!(
                set_cookies(&got),
                [
                    "app=1",
                    "flagger-primary=run2; Max-Age=600; Path=/; SameSite=Lax",
                    "flagger-cookie=run1; Max-Age=-1; Path=/; SameSite=Lax",
                ]
            );
        } else {
            saw_canary = true;
            assert_eq!(
                set_cookies(&got),
                [
                    "app=1",
                    "flagger-cookie=run2; Max-Age=600; Path=/; SameSite=Lax; Secure; HttpOnly; Partitioned",
                ]
            );
        }
        if saw_primary && saw_canary {
            break;
        }
    }
    assert!(saw_primary && saw_canary, "both backends answered");
    // The primary's cookie pins its user: every request carrying it is the primary's.
    for _ in 0..50 {
        let got = get(
            &client,
            p.outbound_addr(),
            "shop",
            "/",
            &[("cookie", "session=9; flagger-primary=run2")],
        )
        .await;
        assert_eq!(got.body, "primary");
        assert!(set_cookies(&got).is_empty(), "the sticky rule sets nothing");
    }
}

#[tokio::test]
async fn response_headers_are_removed_set_and_added_in_that_order() {
    let canary = upstream("canary").await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            r#"
routes:
  - authority: shop
    rules:
      - backends: [{{ name: canary, endpoints: ["{c}"] }}]
        responseHeaders:
          remove: [x-upstream, content-type]
          set: [{{ name: content-type, value: text/x-test }}]
          add: [{{ name: x-upstream, value: first }}, {{ name: x-upstream, value: second }}]
"#,
            c = canary.addr
        )))
        .expect("valid table");
    let got = get(&h1_client(), p.outbound_addr(), "shop", "/", &[]).await;
    assert_eq!(got.body, "canary");
    // The upstream's own x-upstream value is gone; both added ones follow in order.
    let values: Vec<&[u8]> = got
        .headers
        .get_all("x-upstream")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    assert_eq!(values, [&b"first"[..], &b"second"[..]]);
    assert_eq!(
        got.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/x-test"[..])
    );

    // A bad name in any of the three lists is refused with its field; the table stays.
    let err = p
        .table()
        .apply(table(&format!(
            r#"
routes:
  - authority: shop
    rules:
      - backends: [{{ name: canary, endpoints: ["{c}"] }}]
        responseHeaders:
          remove: ["bad name"]
"#,
            c = canary.addr
        )))
        .expect_err("bad header name");
    assert!(
        err.to_string()
            .contains("routes[0].rules[0].responseHeaders.remove[0]"),
        "{err}"
    );
    // Framing headers are the proxy's own: a route cannot add a second Content-Length.
    let err = p
        .table()
        .apply(table(&format!(
            r#"
routes:
  - authority: shop
    rules:
      - backends: [{{ name: canary, endpoints: ["{c}"] }}]
        responseHeaders:
          add: [{{ name: Content-Length, value: "3" }}]
"#,
            c = canary.addr
        )))
        .expect_err("framing header");
    assert!(
        err.to_string()
            .contains("routes[0].rules[0].responseHeaders.add[0].name"),
        "{err}"
    );
    assert_eq!(
        get(&h1_client(), p.outbound_addr(), "shop", "/", &[])
            .await
            .headers
            .get_all("x-upstream")
            .iter()
            .count(),
        2,
        "the last good table stays in force"
    );
}

#[tokio::test]
async fn the_inbound_listener_forwards_to_the_app_and_reports_inbound_metrics() {
    let app = upstream("app").await;
    let cfg = serin_proxy::ProxyConfig {
        outbound: "127.0.0.1:0".parse().expect("addr"),
        admin: Some("127.0.0.1:0".parse().expect("addr")),
        inbound: Some(serin_proxy::InboundConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            forward: app.addr,
            timeout: None,
            max_connections: 100,
        }),
        labels: [
            ("deployment".to_string(), "podinfo-canary".to_string()),
            ("namespace".to_string(), "test".to_string()),
        ]
        .into(),
        ..serin_proxy::ProxyConfig::default()
    };
    let p = serin_proxy::Proxy::start(cfg).await.expect("start");
    let inbound = p.inbound_addr().expect("inbound on");
    let c = h1_client();
    for _ in 0..3 {
        assert_eq!(get(&c, inbound, "podinfo", "/", &[]).await.body, "app");
    }
    assert_eq!(
        get(&c, inbound, "podinfo", "/status/500", &[]).await.status,
        500
    );
    let m = metrics(&p).await;
    // What Flagger's Linkerd request-success-rate query selects.
    let base = [
        "direction=\"inbound\"",
        "deployment=\"podinfo-canary\"",
        "namespace=\"test\"",
    ];
    let mut ok = vec!["response_total{", "classification=\"success\""];
    ok.extend(base);
    assert_eq!(sample(&m, &ok), 3.0, "{m}");
    let mut bad = vec!["response_total{", "classification=\"failure\""];
    bad.extend(base);
    assert_eq!(sample(&m, &bad), 1.0);
}

#[tokio::test]
async fn admin_serves_readiness_liveness_and_the_table_in_force() {
    let p = proxy().await;
    let c = h1_client();
    let admin = p.admin_addr().expect("admin");
    assert_eq!(
        get(&c, admin, "a", "/live", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&c, admin, "a", "/ready", &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let mut t = table(
        "routes:\n  - authority: x\n    rules:\n      - backends: [{ name: x, endpoints: [] }]\n",
    );
    t.version = 42;
    p.table().apply(t).expect("valid");
    assert_eq!(
        get(&c, admin, "a", "/ready", &[]).await.status,
        StatusCode::OK
    );
    let routes = get(&c, admin, "a", "/routes", &[]).await;
    let back: serin_mesh_api::RouteTable = serde_json::from_str(&routes.body).expect("routes json");
    assert_eq!(back.version, 42);
    assert_eq!(back.routes[0].authority.host, "x");
    assert!(
        metrics(&p)
            .await
            .contains("serin_proxy_route_table_version 42")
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_in_flight_requests_finish() {
    let slow = upstream("slow").await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: slow\n    rules:\n      - backends: [{{ name: slow, endpoints: [\"{}\"] }}]\n",
            slow.addr
        )))
        .expect("valid");
    let addr = p.outbound_addr();
    let p_admin = p.admin_addr();
    let mut seen = slow.seen;
    let in_flight =
        tokio::spawn(async move { get(&h1_client(), addr, "slow", "/wait", &[]).await });
    // Wait until the request is at the upstream, then start draining.
    within(30, seen.recv())
        .await
        .expect("request reached upstream");
    let shutdown = tokio::spawn(p.shutdown());
    // New connections are refused once the listener is closed.
    within(30, async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    // While draining, the admin listener stays up and says not ready.
    let admin = p_admin.expect("admin on");
    let ready = within(30, get(&h1_client(), admin, "admin", "/ready", &[])).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    slow.release.notify_one();
    let got = within(30, in_flight).await.expect("task");
    assert_eq!(got.status, StatusCode::OK);
    assert!(within(30, shutdown).await.expect("task"), "drained in time");
}

/// A proxy that drains for at most `drain`, routing `up` to `upstream`.
async fn draining_proxy(drain: Duration, upstream: &Upstream) -> serin_proxy::Proxy {
    let p = serin_proxy::Proxy::start(serin_proxy::ProxyConfig {
        outbound: "127.0.0.1:0".parse().expect("addr"),
        admin: None,
        shutdown_timeout: drain,
        ..serin_proxy::ProxyConfig::default()
    })
    .await
    .expect("proxy starts");
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: up\n    rules:\n      - backends: [{{ name: up, endpoints: [\"{}\"] }}]\n",
            upstream.addr
        )))
        .expect("valid");
    p
}

/// Connects and sends `bytes`, returning once the proxy has read them all (so the connection
/// is past the accept queue and the drain must deal with it).
async fn send_partial(p: &serin_proxy::Proxy, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::net::TcpStream::connect(p.outbound_addr())
        .await
        .expect("connect");
    c.write_all(bytes).await.expect("write");
    let registry = p.registry();
    within(30, async {
        loop {
            let read = sample(
                &registry.render(),
                &["tcp_read_bytes_total{direction=\"outbound\",peer=\"src\""],
            );
            if read >= bytes.len() as f64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    c
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_at_the_drain_deadline_not_the_head_timeout() {
    use tokio::io::AsyncReadExt;
    let up = upstream("up").await;
    let p = draining_proxy(Duration::from_secs(1), &up).await;
    let mut c = send_partial(&p, b"GET / HTTP/1.1\r\nhost: up\r\nx-half: ").await;
    let started = std::time::Instant::now();
    // Nothing else is open: the half head is what the drain waits for, and it never completes.
    let clean = within(20, p.shutdown()).await;
    assert!(!clean, "a head still incomplete at the deadline is cut");
    // The connection is closed by then (not 30 s later, when the head timeout would fire).
    let mut buf = [0u8; 64];
    let n = within(5, c.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_head_completed_during_the_drain_is_answered_with_connection_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream("up").await;
    let p = draining_proxy(Duration::from_secs(20), &up).await;
    let mut c = send_partial(&p, b"GET / HTTP/1.1\r\nhost: up\r\n").await;
    let addr = p.outbound_addr();
    let shutdown = tokio::spawn(p.shutdown());
    // The drain has begun once the listener refuses new connections.
    within(30, async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    c.write_all(b"x-late: yes\r\n\r\n").await.expect("write");
    let mut got = Vec::new();
    within(15, c.read_to_end(&mut got)).await.expect("read");
    let got = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(got.starts_with("http/1.1 200"), "{got}");
    assert!(got.contains("connection: close"), "{got}");
    assert!(within(15, shutdown).await.expect("task"), "drained in time");
}

#[tokio::test]
async fn bad_tables_are_refused_and_the_last_good_one_stays() {
    let up = upstream("up").await;
    let p = proxy().await;
    let good = format!(
        "routes:\n  - authority: up\n    rules:\n      - backends: [{{ name: up, endpoints: [\"{}\"] }}]\n",
        up.addr
    );
    p.table().apply(table(&good)).expect("valid");
    let bad = table(
        "routes:\n  - authority: up\n    rules:\n      - matches: [{ path: { type: RegularExpression, value: \"([\" } }]\n        backends: [{ name: up, endpoints: [] }]\n",
    );
    let err = p.table().apply(bad).expect_err("rejected");
    assert!(
        err.to_string()
            .contains("routes[0].rules[0].matches[0].path.value"),
        "{err}"
    );
    let got = get(&h1_client(), p.outbound_addr(), "up", "/", &[]).await;
    assert_eq!(got.body, "up");
    let m = metrics(&p).await;
    assert!(
        m.contains("serin_proxy_config_reloads_total{result=\"failure\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("serin_proxy_config_last_reload_success 0"),
        "{m}"
    );
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn grpc_status_values_outside_the_defined_codes_share_one_unknown_series() {
    let grpc = upstream("grpc").await;
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: greeter\n    rules:\n      - backends: [{{ name: greeter, endpoints: [\"{}\"] }}]\n",
            grpc.addr
        )))
        .expect("valid table");
    let c = h2_client(p.outbound_addr());
    let headers = [("content-type", "application/grpc"), ("te", "trailers")];
    let mut codes: Vec<String> = (17..60).map(|n| n.to_string()).collect();
    codes.extend(["4294967295", "99999999999", "abc", "-1"].map(String::from));
    codes.push("5".into());
    for code in &codes {
        let got = send(
            &c,
            p.outbound_addr(),
            "greeter",
            "POST",
            &format!("/grpc/{code}"),
            &headers,
            Bytes::new(),
        )
        .await;
        assert_eq!(got.status, StatusCode::OK);
    }
    let m = metrics(&p).await;
    let series: std::collections::BTreeSet<&str> = m
        .lines()
        .filter(|l| l.starts_with("response_total{"))
        .filter_map(|l| l.split("grpc_status=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        series,
        ["5", "unknown"].into_iter().collect(),
        "grpc_status label values:\n{m}"
    );
    assert_eq!(
        sample(
            &m,
            &[
                "response_total{",
                "grpc_status=\"unknown\"",
                "classification=\"failure\""
            ]
        ),
        (codes.len() - 1) as f64,
        "{m}"
    );
}

#[tokio::test]
async fn endpoint_labels_give_each_pod_its_own_series_and_gone_pods_are_forgotten() {
    let a = upstream("web-1").await;
    let b = upstream("web-2").await;
    // metricsRetainIdle 0: a gone pod's series goes at the next swap (the default keeps it
    // 10 minutes; see the test below).
    let p = serin_proxy::Proxy::start(serin_proxy::ProxyConfig {
        outbound: "127.0.0.1:0".parse().expect("addr"),
        admin: Some("127.0.0.1:0".parse().expect("addr")),
        labels: [("namespace", "test"), ("deployment", "frontend")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        shutdown_timeout: Duration::from_secs(5),
        metrics_retain_idle: Duration::ZERO,
        ..serin_proxy::ProxyConfig::default()
    })
    .await
    .expect("proxy starts");
    let labelled = |eps: &[&Upstream]| {
        let list: Vec<String> = eps.iter().map(|u| format!("\"{}\"", u.addr)).collect();
        let labels: Vec<String> = eps
            .iter()
            .map(|u| {
                format!(
                    "\"{}\": {{ pod: {}, pod_template_hash: 7d9f8c }}",
                    u.addr,
                    if u.addr == a.addr {
                        "web-7d9f8c-aaaaa"
                    } else {
                        "web-7d9f8c-bbbbb"
                    }
                )
            })
            .collect();
        format!(
            "routes:\n  - authority: web\n    rules:\n      - backends:\n          - {{ name: web, labels: {{ namespace: shop, deployment: web }}, endpoints: [{}], endpointLabels: {{ {} }} }}\n",
            list.join(", "),
            labels.join(", ")
        )
    };
    p.table()
        .apply(table(&labelled(&[&a, &b])))
        .expect("valid table");
    let client = h1_client();
    let (mut to_a, mut to_b) = (0.0, 0.0);
    for _ in 0..40 {
        let got = get(&client, p.outbound_addr(), "web", "/", &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        if got.body == "web-1" {
            to_a += 1.0;
        } else {
            to_b += 1.0;
        }
    }
    let m = metrics(&p).await;
    let series = |pod: &str| {
        sample(
            &m,
            &[
                "request_total{",
                "direction=\"outbound\"",
                "dst_service=\"web\"",
                "dst_namespace=\"shop\"",
                "dst_deployment=\"web\"",
                &format!("dst_pod=\"{pod}\""),
                "dst_pod_template_hash=\"7d9f8c\"",
                "deployment=\"frontend\"",
            ],
        )
    };
    assert_eq!(series("web-7d9f8c-aaaaa"), to_a, "{m}");
    assert_eq!(series("web-7d9f8c-bbbbb"), to_b, "{m}");
    assert_eq!(to_a + to_b, 40.0);

    // The second pod goes away; its series is dropped at a later swap, the first pod's stays.
    p.table()
        .apply(table(&labelled(&[&a])))
        .expect("valid table");
    p.table()
        .apply(table(&labelled(&[&a])))
        .expect("valid table");
    let m = metrics(&p).await;
    assert!(m.contains("dst_pod=\"web-7d9f8c-aaaaa\""), "{m}");
    assert!(!m.contains("dst_pod=\"web-7d9f8c-bbbbb\""), "{m}");

    // Labels for an address that is not an endpoint are refused, naming the field.
    let bad = format!(
        "routes:\n  - authority: web\n    rules:\n      - backends:\n          - {{ name: web, endpoints: [\"{}\"], endpointLabels: {{ \"{}\": {{ pod: x }} }} }}\n",
        a.addr, b.addr
    );
    let err = p
        .table()
        .apply(table(&bad))
        .expect_err("labels of a non-endpoint");
    let msg = err.to_string();
    assert!(
        msg.contains("endpointLabels") && msg.contains("not one of the backend's endpoints"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_gone_pods_series_stays_on_metrics_for_the_default_retention() {
    // A rolled-back canary's pods leave the table at once; their failures must stay visible to
    // dashboards (Linkerd's proxy keeps idle series 10 minutes by default, and so does this one).
    let a = upstream("web-1").await;
    let b = upstream("web-2").await;
    let p = proxy_with(&[("namespace", "test")]).await;
    let with = |eps: &[(&Upstream, &str)]| {
        let list: Vec<String> = eps.iter().map(|(u, _)| format!("\"{}\"", u.addr)).collect();
        let labels: Vec<String> = eps
            .iter()
            .map(|(u, pod)| format!("\"{}\": {{ pod: {pod} }}", u.addr))
            .collect();
        table(&format!(
            "routes:\n  - authority: web\n    rules:\n      - backends:\n          - {{ name: web, endpoints: [{}], endpointLabels: {{ {} }} }}\n",
            list.join(", "),
            labels.join(", ")
        ))
    };
    p.table()
        .apply(with(&[(&b, "web-canary-0")]))
        .expect("valid table");
    let client = h1_client();
    let got = get(&client, p.outbound_addr(), "web", "/", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    for _ in 0..3 {
        p.table()
            .apply(with(&[(&a, "web-primary-0")]))
            .expect("valid table");
    }
    let m = metrics(&p).await;
    assert!(m.contains("dst_pod=\"web-canary-0\""), "{m}");
}

/// An h2c upstream that takes request heads of up to 1 MiB and answers 200 `big` (with a
/// 40 KB header on `/big-response`).
async fn roomy_h2_upstream() -> std::net::SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                    let mut r =
                        http::Response::new(http_body_util::Full::new(Bytes::from_static(b"big")));
                    if req.uri().path() == "/big-response" {
                        let v = http::HeaderValue::from_str(&"r".repeat(40_000)).expect("value");
                        r.headers_mut().insert("x-big", v);
                    }
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_header_list_size(1 << 20)
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn h2_requests_get_the_head_limit_of_http_1_1_and_a_431_not_a_goaway() {
    let p = proxy().await;
    p.table()
        .apply(table(&format!(
            "routes:\n  - authority: big\n    rules:\n      - backends: [{{ name: big, endpoints: [\"{}\"] }}]\n",
            roomy_h2_upstream().await
        )))
        .expect("valid table");
    let c = h2_client(p.outbound_addr());
    // 40 KB of token passes over h2 as over HTTP/1.1 (hyper's own default stops at 16 KiB).
    let token = "t".repeat(40_000);
    let got = get(
        &c,
        p.outbound_addr(),
        "big",
        "/",
        &[("authorization", &token)],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "big"));
    // Above the limit: that stream gets a 431, the connection's other streams go on.
    let huge = "t".repeat(70_000);
    let got = get(
        &c,
        p.outbound_addr(),
        "big",
        "/",
        &[("authorization", &huge)],
    )
    .await;
    assert_eq!(got.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let got = get(&c, p.outbound_addr(), "big", "/", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    // And a 40 KB response head comes back (to a client that takes one).
    let roomy = TestClient::H2(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .http2_max_header_list_size(1 << 20)
            .build(Via(p.outbound_addr())),
    );
    let got = get(&roomy, p.outbound_addr(), "big", "/big-response", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.headers["x-big"].len(), 40_000);
}

#[tokio::test]
async fn connect_over_h2c_is_refused_with_405_as_over_http_1_1() {
    let (p, mut up) = crate::client_h1::setup().await;
    let TestClient::H2(c) = h2_client(p.outbound_addr()) else {
        unreachable!("h2_client makes an h2 client")
    };
    let connect = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri("app:443")
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    let resp = within(10, c.request(connect)).await.expect("an answer");
    // A 200 would tell the client its tunnel is open.
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    // The upstream never saw it: the next thing it sees is the next request.
    let got = get(&TestClient::H2(c), p.outbound_addr(), "app", "/after", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        within(10, up.seen.recv()).await.expect("seen").path,
        "/after"
    );
}
