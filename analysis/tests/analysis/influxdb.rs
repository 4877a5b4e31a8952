//! The InfluxDB provider (Flux over the InfluxDB 2 query API, as Flagger's) against a fake API
//! on 127.0.0.1:0 answering with InfluxDB 2's annotated-CSV and JSON error shapes: what is sent
//! (path, org, token, the Flux body), the first record's `_value`, no data as `None`, in-band
//! and HTTP errors with InfluxDB's message, missing Secret keys named. Then against Debian's
//! real InfluxDB 1.6 (no Flux), when installed: its answer is reported as "no Flux here".

use std::collections::BTreeMap;
use std::time::Duration;

use serin_analysis::testing::{Answer, FakeApi, eventually, logged_address};
use serin_analysis::{AnalysisError, Credentials, ProviderRegistry, ProviderSettings};

fn settings(address: &str, keys: &[(&str, &str)]) -> ProviderSettings {
    ProviderSettings {
        type_: "influxdb".into(),
        address: Some(address.into()),
        credentials: (!keys.is_empty()).then(|| Credentials {
            secret: "monitoring/influx".into(),
            data: keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }),
        ..Default::default()
    }
}

const CSV: &str = "text/csv; charset=utf-8";

/// A one-record answer, as InfluxDB 2 writes it (CRLF line ends, a trailing blank line).
const ONE_DOUBLE: &str = "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,double,string\r\n\
#group,false,false,true,true,false,true\r\n\
#default,_result,,,,,\r\n\
,result,table,_start,_stop,_value,_field\r\n\
,,0,2026-12-07T03:00:00Z,2026-12-07T03:01:00Z,99.25,success_rate\r\n\
,,0,2026-12-07T03:00:00Z,2026-12-07T03:01:00Z,12.5,success_rate\r\n\r\n";

const COUNT_LONG: &str = "#datatype,string,long,long\r\n#group,false,false,false\r\n#default,_result,,\r\n,result,table,_value\r\n,,0,42\r\n\r\n";

const NULL_VALUE: &str = "#datatype,string,long,double\r\n#group,false,false,false\r\n#default,_result,,\r\n,result,table,_value\r\n,,0,\r\n\r\n";

const STRING_VALUE: &str = "#datatype,string,long,string\r\n#group,false,false,false\r\n#default,_result,,\r\n,result,table,_value\r\n,,0,\"high, very\"\r\n\r\n";

const IN_BAND_ERROR: &str = "#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n,\"runtime error @1:1-1:40: from: bucket \"\"nope\"\" not found\",\r\n\r\n";

const FLUX: &str = "from(bucket: \"podinfo\")\n  |> range(start: -1m)\n  |> filter(fn: (r) => r._measurement == \"http\")\n  |> mean()";

#[tokio::test]
async fn influxdb_posts_flux_with_the_token_and_reads_the_first_records_value() {
    let mut api = FakeApi::start(vec![
        Answer::with_type(200, CSV, ONE_DOUBLE),
        Answer::with_type(200, CSV, COUNT_LONG),
        Answer::with_type(200, CSV, "\r\n"),
        Answer::with_type(200, CSV, NULL_VALUE),
        Answer::with_type(200, CSV, STRING_VALUE),
        Answer::with_type(200, CSV, IN_BAND_ERROR),
        Answer::json(
            400,
            r#"{"code":"invalid","message":"compilation failed: error at @1:1-1:5: undefined identifier frm"}"#,
        ),
        Answer::json(401, r#"{"code":"unauthorized","message":"unauthorized access"}"#),
    ])
    .await;
    let p = ProviderRegistry::new()
        .provider(
            "test/influx",
            &settings(&api.address, &[("token", "tok-1\n"), ("org", "serin")]),
        )
        .expect("an influxdb client");
    let minute = Duration::from_secs(60);

    let o = p.query(FLUX, minute).await.unwrap();
    assert_eq!(o.value, Some(99.25), "the first record's _value");
    let seen = api.next().await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/api/v2/query")
    );
    assert_eq!(seen.param("org").as_deref(), Some("serin"));
    assert_eq!(seen.header("authorization"), Some("Token tok-1"));
    assert_eq!(seen.header("accept"), Some("application/csv"));
    let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(body["query"], FLUX);
    assert_eq!(body["type"], "flux");
    assert_eq!(body["dialect"]["annotations"][0], "datatype");

    // count() answers a long: a number too.
    assert_eq!(p.query(FLUX, minute).await.unwrap().value, Some(42.0));
    // No record, or a null _value: no data, never a pass (Flagger's provider returns 0).
    assert_eq!(p.query(FLUX, minute).await.unwrap().value, None);
    assert_eq!(p.query(FLUX, minute).await.unwrap().value, None);

    let err = p.query(FLUX, minute).await.unwrap_err().to_string();
    assert!(err.contains("\"high, very\" of type string"), "{err}");
    let err = p.query(FLUX, minute).await.unwrap_err().to_string();
    assert!(
        err.contains("the query failed") && err.contains("bucket \"nope\" not found"),
        "{err}"
    );
    let err = p.query(FLUX, minute).await.unwrap_err();
    assert!(matches!(err, AnalysisError::BadResponse { .. }), "{err}");
    let err = err.to_string();
    assert!(
        err.contains("HTTP 400") && err.contains("invalid: compilation failed"),
        "{err}"
    );
    let err = p.query(FLUX, minute).await.unwrap_err().to_string();
    assert!(
        err.contains("HTTP 401") && err.contains("unauthorized access"),
        "{err}"
    );
}

#[test]
fn a_secret_without_org_or_token_names_the_key() {
    let r = ProviderRegistry::new();
    for (keys, missing) in [
        (&[("token", "t")][..], "key org"),
        (&[("org", "o")][..], "key token"),
    ] {
        let err = r
            .provider("test/influx", &settings("http://127.0.0.1:9", keys))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("Secret monitoring/influx {missing}")),
            "{err}"
        );
    }
    let mut no_address = settings("http://127.0.0.1:9", &[]);
    no_address.address = None;
    let err = r
        .provider("test/influx", &no_address)
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.provider.address"), "{err}");
}

/// Debian's influxdb is 1.6, which has no Flux: the provider says so instead of a bare 404.
/// Skipped, saying why, when `influxd` is not installed.
#[tokio::test]
async fn a_real_influxdb_without_flux_is_reported_as_such() {
    let Some(influxd) = ["/usr/bin/influxd", "/usr/sbin/influxd"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
    else {
        eprintln!("SKIPPED: influxd is not installed (Debian package influxdb)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("serin-influxd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Port 0 for both listeners: influxd logs the HTTP address it bound (the RPC one is not
    // used here).
    let d = dir.display();
    std::fs::write(
        dir.join("influxdb.conf"),
        format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:0\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n[http]\n  bind-address = \"127.0.0.1:0\"\n  log-enabled = false\n"
        ),
    )
    .unwrap();
    let mut server = tokio::process::Command::new(influxd)
        .arg("-config")
        .arg(dir.join("influxdb.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start influxd");
    let stderr = server.stderr.take().expect("stderr is piped");
    let listening = logged_address(stderr, r#"msg="Listening on HTTP""#, "addr");
    let http = tokio::time::timeout(Duration::from_secs(30), listening)
        .await
        .expect("influxd logged its HTTP address within 30s")
        .unwrap_or_else(|log| panic!("influxd exited without listening:\n{log}"));
    let p = ProviderRegistry::new()
        .provider(
            "test/influx",
            &settings(&format!("http://{http}"), &[("token", "t"), ("org", "o")]),
        )
        .unwrap();
    let err = eventually("influxd to answer", Duration::from_secs(30), || async {
        match p.query(FLUX, Duration::from_secs(60)).await {
            Err(AnalysisError::Unavailable { .. }) => None,
            other => Some(other),
        }
    })
    .await
    .unwrap_err()
    .to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        err.contains("HTTP 404") && err.contains("speaks Flux to InfluxDB 2"),
        "{err}"
    );
}
