//! The one registry of `MetricTemplate` providers that every platform's analyzer uses: it turns
//! a template's `spec.provider` (type, address, the decoded `secretRef` Secret, headers,
//! `insecureSkipVerify`, region) into a client with that provider's Flagger query semantics, and
//! keeps clients between ticks until the settings change (a rotated Secret, an edited template).
//!
//! Platforms only read the Secret: Kubernetes from the API server, the local platform from a
//! `kind: Secret` document in its manifest directory. What each provider reads from it, and the
//! window it queries, is decided here, once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::BoxFuture;
use crate::AnalysisError;
use crate::check::{MetricCheck, MetricSource, NoDataConfig, Observed, evaluate};
use crate::provider::cloudwatch;
use crate::provider::datadog::DatadogProvider;
use crate::provider::dynatrace::DynatraceProvider;
use crate::provider::graphite::GraphiteProvider;
use crate::provider::influxdb::InfluxDbProvider;
use crate::provider::newrelic::NewRelicProvider;
use crate::provider::prometheus::{PrometheusAuth, PrometheusConfig, PrometheusProvider};
use crate::provider::splunk::SplunkProvider;
use crate::queries::Mesh;
use crate::target::Target;
use crate::template::render;

/// The `spec.provider.type`s this registry builds clients for, in the order the compatibility
/// table lists them. `serin_api::support` must mark exactly these as queried (a test in the
/// controller runtime holds the two together).
pub const QUERIED_PROVIDERS: &[&str] = &[
    "prometheus",
    "influxdb",
    "datadog",
    "cloudwatch",
    "newrelic",
    "graphite",
    "dynatrace",
    "splunk",
];

/// A template's `secretRef` Secret, its values decoded to text.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// The Secret's name (for error messages).
    pub secret: String,
    /// Its keys and values.
    pub data: BTreeMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    // Never print secret values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials({}, keys {:?})",
            self.secret,
            self.data.keys().collect::<Vec<_>>()
        )
    }
}

impl Credentials {
    /// The value of `key`, trimmed; a missing or empty key is an error naming the Secret and
    /// the key, and listing every key `provider` reads.
    pub fn key(&self, provider: &str, key: &str, all: &[&str]) -> Result<String, AnalysisError> {
        self.optional(key)
            .ok_or_else(|| missing_key(provider, &self.secret, key, all))
    }

    /// The value of `key`, trimmed, when present and not empty.
    pub fn optional(&self, key: &str) -> Option<String> {
        self.data
            .get(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }
}

fn missing_key(provider: &str, secret: &str, key: &str, all: &[&str]) -> AnalysisError {
    AnalysisError::InvalidConfig {
        field: format!("spec.provider.secretRef: Secret {secret} key {key}"),
        message: "missing or empty".into(),
        accepted: format!(
            "for provider {provider} a Secret with the keys {}",
            all.join(", ")
        ),
    }
}

/// The credentials a provider requires, or an error naming `spec.provider.secretRef` and the
/// keys it must hold.
pub(crate) fn required<'a>(
    provider: &str,
    credentials: Option<&'a Credentials>,
    keys: &[&str],
) -> Result<&'a Credentials, AnalysisError> {
    credentials.ok_or_else(|| AnalysisError::InvalidConfig {
        field: "spec.provider.secretRef".into(),
        message: format!("required for provider {provider}"),
        accepted: format!("a Secret with the keys {}", keys.join(", ")),
    })
}

/// Everything a template's `spec.provider` says about reaching its backend.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderSettings {
    /// `spec.provider.type`.
    pub type_: String,
    /// `spec.provider.address` (for Prometheus, the platform fills in its default server).
    pub address: Option<String>,
    /// The `secretRef` Secret, when the template names one.
    pub credentials: Option<Credentials>,
    /// `spec.provider.headers` (sent by the Prometheus provider).
    pub headers: Vec<(String, String)>,
    /// `spec.provider.insecureSkipVerify`.
    pub insecure_skip_verify: bool,
    /// `spec.provider.region` (CloudWatch).
    pub region: Option<String>,
}

/// A backend that answers a rendered MetricTemplate query with one number. `interval` is the
/// metric's interval: providers whose APIs take a time range derive it as Flagger does.
pub trait TemplateProvider: Send + Sync + std::fmt::Debug {
    /// The provider type (`prometheus`, `datadog`, ...), a stable label.
    fn kind(&self) -> &'static str;

    /// Runs a rendered query; no data is `value: None` (never a pass).
    fn query<'a>(
        &'a self,
        query: &'a str,
        interval: Duration,
    ) -> BoxFuture<'a, Result<Observed, AnalysisError>>;
}

/// `impl TemplateProvider for $provider` by its inherent `async fn query(&self, &str, Duration)`,
/// with `kind()` = `$kind` (every HTTP provider has exactly this shape).
macro_rules! template_provider {
    ($provider:ty, $kind:expr) => {
        impl $crate::provider::registry::TemplateProvider for $provider {
            fn kind(&self) -> &'static str {
                $kind
            }

            fn query<'a>(
                &'a self,
                query: &'a str,
                interval: std::time::Duration,
            ) -> $crate::provider::BoxFuture<
                'a,
                Result<$crate::check::Observed, $crate::AnalysisError>,
            > {
                Box::pin(<$provider>::query(self, query, interval))
            }
        }
    };
}
pub(crate) use template_provider;

/// A Prometheus answering template queries (a wrapper, so that the provider's two `query`
/// methods never meet in one scope).
#[derive(Debug)]
struct PrometheusTemplates(PrometheusProvider);

impl TemplateProvider for PrometheusTemplates {
    fn kind(&self) -> &'static str {
        "prometheus"
    }

    fn query<'a>(
        &'a self,
        query: &'a str,
        _interval: Duration,
    ) -> BoxFuture<'a, Result<Observed, AnalysisError>> {
        // The query carries its own range (`[{{ interval }}]`), as in Flagger.
        crate::MetricsProvider::query(&self.0, query)
    }
}

/// Renders a template check's query, runs it on `provider` and judges the value.
pub async fn run_template_check(
    provider: &dyn TemplateProvider,
    check: &MetricCheck,
    target: &Target,
    no_data: &NoDataConfig,
) -> Result<crate::CheckResult, AnalysisError> {
    let MetricSource::Template { query, variables } = &check.source else {
        return Err(AnalysisError::Unsupported {
            provider: provider.kind(),
            what: format!(
                "the built-in check {} (built-in checks read Prometheus or the proxies)",
                check.name
            ),
        });
    };
    let rendered = render(query, &target.template_context(check.interval, variables))?;
    let mut observed = provider.query(&rendered, check.interval).await?;
    observed.query = Some(rendered);
    Ok(evaluate(check, observed, no_data))
}

/// Builds and caches template providers by the key the platform gives (the template's
/// `namespace/name`): a client is reused while its settings are unchanged.
#[derive(Default)]
pub struct ProviderRegistry {
    cache: Mutex<HashMap<String, Built>>,
}

/// A client and the settings it was built from.
type Built = (ProviderSettings, Arc<dyn TemplateProvider>);

impl std::fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderRegistry")
    }
}

impl ProviderRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The client for the template `key` with `settings`, built on first use or when the
    /// settings changed. Errors name the field (and the Secret key) that is wrong.
    pub fn provider(
        &self,
        key: &str,
        settings: &ProviderSettings,
    ) -> Result<Arc<dyn TemplateProvider>, AnalysisError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, p)) = cache.get(key)
            && s == settings
        {
            return Ok(p.clone());
        }
        let p = build(settings)?;
        cache.insert(key.to_string(), (settings.clone(), p.clone()));
        Ok(p)
    }
}

/// Builds the client for `settings` (no request is sent).
pub fn build(settings: &ProviderSettings) -> Result<Arc<dyn TemplateProvider>, AnalysisError> {
    let creds = settings.credentials.as_ref();
    let address = settings.address.as_deref();
    Ok(match settings.type_.as_str() {
        "prometheus" => Arc::new(PrometheusTemplates(prometheus(settings)?)),
        "datadog" => Arc::new(DatadogProvider::new(
            address,
            creds,
            settings.insecure_skip_verify,
        )?),
        "newrelic" => Arc::new(NewRelicProvider::new(
            address,
            creds,
            settings.insecure_skip_verify,
        )?),
        "dynatrace" => Arc::new(DynatraceProvider::new(
            address,
            creds,
            settings.insecure_skip_verify,
        )?),
        "graphite" => Arc::new(GraphiteProvider::new(
            address,
            creds,
            settings.insecure_skip_verify,
        )?),
        "influxdb" => Arc::new(InfluxDbProvider::new(
            address,
            creds,
            settings.insecure_skip_verify,
        )?),
        // The AWS credential chain reads the controller's environment, as Flagger's SDK does.
        "cloudwatch" => cloudwatch::from_process(
            settings.region.as_deref(),
            address,
            creds,
            settings.insecure_skip_verify,
        )?,
        "splunk" => Arc::new(SplunkProvider::new(
            address,
            creds,
            settings.insecure_skip_verify,
        )?),
        other => {
            return Err(AnalysisError::invalid(
                "spec.provider.type",
                format!("metric provider {other:?} is not queried by this Serin"),
                QUERIED_PROVIDERS.join(", "),
            ));
        }
    })
}

fn prometheus(settings: &ProviderSettings) -> Result<PrometheusProvider, AnalysisError> {
    let Some(address) = &settings.address else {
        return Err(AnalysisError::invalid(
            "spec.provider.address",
            "no Prometheus address",
            "the template's spec.provider.address, the Canary's spec.metricsServer or the controller's --metrics-server",
        ));
    };
    let mut config = PrometheusConfig::new(address.clone(), Mesh::Serin);
    config.headers = settings.headers.clone();
    config.insecure_skip_verify = settings.insecure_skip_verify;
    if let Some(c) = &settings.credentials {
        // A value that cannot go into a header (a line break inside a pasted token, a control
        // character): name the Secret and the key here, where they are known.
        for key in ["token", "username", "password"] {
            if let Some(v) = c.data.get(key)
                && v.trim().chars().any(char::is_control)
            {
                return Err(AnalysisError::InvalidConfig {
                    field: format!("spec.provider.secretRef: Secret {} key {key}", c.secret),
                    message: "contains a line break or another control character".into(),
                    accepted: "one line of text (a trailing newline is ignored)".into(),
                });
            }
        }
        // As Flagger reads it: a bearer `token`, else `username` and `password`.
        config.auth = Some(
            match (
                c.optional("token"),
                c.data.get("username"),
                c.data.get("password"),
            ) {
                (Some(token), _, _) => PrometheusAuth::Bearer { token },
                (None, Some(username), Some(password)) => PrometheusAuth::Basic {
                    username: username.trim().to_string(),
                    password: password.trim_end_matches(['\r', '\n']).to_string(),
                },
                // Half a basic-auth pair: name the key that is missing, as Flagger does.
                (None, Some(_), None) | (None, None, Some(_)) => {
                    let missing = if c.data.contains_key("username") {
                        "password"
                    } else {
                        "username"
                    };
                    return Err(missing_key(
                        "prometheus",
                        &c.secret,
                        missing,
                        &["token", "or username and password"],
                    ));
                }
                _ => {
                    return Err(AnalysisError::InvalidConfig {
                        field: format!("spec.provider.secretRef: Secret {}", c.secret),
                        message: "has neither a non-empty `token` nor `username` and `password`"
                            .into(),
                        accepted: "a Secret with the key token, or the keys username and password"
                            .into(),
                    });
                }
            },
        );
    }
    PrometheusProvider::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(type_: &str) -> ProviderSettings {
        ProviderSettings {
            type_: type_.into(),
            address: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_queried_provider_builds_and_others_are_named() {
        for kind in QUERIED_PROVIDERS {
            let mut s = settings(kind);
            s.region = Some("eu-west-1".into());
            s.credentials = Some(Credentials {
                secret: "keys".into(),
                data: BTreeMap::from_iter(
                    [
                        "datadog_api_key",
                        "datadog_application_key",
                        "newrelic_account_id",
                        "newrelic_query_key",
                        "dynatrace_token",
                        "sf_token_key",
                        "token",
                        "org",
                        "username",
                        "password",
                        "aws_access_key_id",
                        "aws_secret_access_key",
                        "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY",
                    ]
                    .map(|k| (k.to_string(), "v".to_string())),
                ),
            });
            let p = build(&s).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(p.kind(), *kind);
        }
        let err = build(&settings("keptn")).unwrap_err().to_string();
        assert!(
            err.contains("spec.provider.type") && err.contains("keptn"),
            "{err}"
        );
    }

    #[test]
    fn clients_are_reused_until_the_settings_change() {
        let r = ProviderRegistry::new();
        let a = r.provider("ns/t", &settings("prometheus")).unwrap();
        let b = r.provider("ns/t", &settings("prometheus")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let mut changed = settings("prometheus");
        changed.headers = vec![("X-Scope-OrgID".into(), "a".into())];
        let c = r.provider("ns/t", &changed).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn credentials_never_print_their_values() {
        let c = Credentials {
            secret: "s".into(),
            data: BTreeMap::from([("token".into(), "hunter2".into())]),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
