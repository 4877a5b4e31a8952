//! `serin injector`: the sidecar-injection admission webhook, served over TLS.
//!
//! At start it makes sure its serving certificate exists: Secret `serin-injector-tls`
//! (`kubernetes.io/tls`: `tls.crt`, `tls.key`, `ca.crt`) in `serin-system`, created with a
//! self-signed CA and a certificate for `serin-injector.serin-system.svc` when missing (a
//! replica that loses the create race reads the winner's), and that the
//! MutatingWebhookConfiguration `serin-injector`'s `inject.serin.dev` webhook trusts that CA
//! (`caBundle`, patched only when different). `serin install` therefore writes no certificate
//! and its output stays deterministic. Then it answers `POST /inject` with
//! [`crate::admission::Injector`], and `/metrics`, `/ready`, `/live`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;

use crate::admission::{Injector, InjectorMetrics, NamespaceAnnotations};
use crate::inject::InjectConfig;

/// Largest AdmissionReview body read (a pod spec is far smaller; the API server caps at 3 MiB).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Where the injector lives and what it serves.
#[derive(Debug, Clone)]
pub struct InjectorOptions {
    /// HTTPS listener (the Service's port 443 targets container port 8443).
    pub listen: SocketAddr,
    /// Serin's namespace.
    pub namespace: String,
    /// The Service in front of the injector (the certificate's DNS names derive from it).
    pub service: String,
    /// The Secret holding the serving certificate.
    pub secret: String,
    /// The MutatingWebhookConfiguration to keep the caBundle of.
    pub webhook_configuration: String,
    /// The webhook entry in it.
    pub webhook: String,
    /// What goes into pods.
    pub inject: InjectConfig,
    /// How long a generated certificate (CA and serving certificate) is valid, in days.
    pub cert_lifetime_days: i64,
    /// How often the Secret is read again: to renew a certificate with less than a third of
    /// its lifetime left, and to serve a certificate another replica renewed.
    pub cert_check_interval: std::time::Duration,
}

impl Default for InjectorOptions {
    fn default() -> Self {
        InjectorOptions {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            namespace: "serin-system".into(),
            service: "serin-injector".into(),
            secret: "serin-injector-tls".into(),
            webhook_configuration: "serin-injector".into(),
            webhook: "inject.serin.dev".into(),
            inject: InjectConfig::default(),
            cert_lifetime_days: 365,
            cert_check_interval: std::time::Duration::from_secs(3600),
        }
    }
}

/// Why the injector could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum InjectorError {
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Api {
        /// Which call.
        what: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The certificate could not be generated.
    #[error("cannot generate the serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The Secret holds no usable certificate.
    #[error("Secret {namespace}/{name}: {problem}")]
    BadSecret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What is wrong (missing key, not PEM, key does not match).
        problem: String,
    },
    /// The TLS settings could not be built.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A CA and the serving certificate it signed, PEM-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBundle {
    /// The CA certificate (the webhook's caBundle).
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
}

/// The DNS names the API server may use for the Service.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_string(),
    ]
}

/// A fresh self-signed CA and a serving certificate for `service.namespace.svc`, valid from the
/// day before `now` (clock skew) for `lifetime_days` days after it.
pub fn generate_certificate(
    service: &str,
    namespace: &str,
    now: jiff::Timestamp,
    lifetime_days: i64,
) -> Result<CertBundle, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, date_time_ymd,
    };
    // rcgen takes calendar days; a day of slack on each side costs nothing here.
    let day = |offset: i64| {
        let d = now
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
            .checked_add(jiff::Span::new().days(offset))
            .unwrap_or(jiff::civil::Date::MAX);
        date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    let (not_before, not_after) = (day(-1), day(lifetime_days));
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{service} CA"));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    let names = dns_names(service, namespace);
    let mut leaf = CertificateParams::new(names.clone())?;
    leaf.distinguished_name
        .push(DnType::CommonName, names[0].clone());
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca)?;
    Ok(CertBundle {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// When the serving certificate of `bundle` expires.
pub fn not_after(bundle: &CertBundle) -> Result<jiff::Timestamp, String> {
    validity(&bundle.cert_pem).map(|(_, end)| end)
}

/// The validity (not before, not after) of the first certificate of `cert_pem` (`tls.crt`).
pub fn validity(cert_pem: &str) -> Result<(jiff::Timestamp, jiff::Timestamp), String> {
    let der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .ok_or("tls.crt holds no PEM certificate")?
        .map_err(|e| format!("tls.crt is not a PEM certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("tls.crt is not a readable X.509 certificate: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| {
        jiff::Timestamp::from_second(t.timestamp())
            .map_err(|e| format!("tls.crt validity out of range: {e}"))
    };
    Ok((
        at(cert.validity().not_before)?,
        at(cert.validity().not_after)?,
    ))
}

/// Whether `bundle` is to be renewed at `now`: less than a third of `lifetime_days` left
/// (or already expired, or unreadable).
pub fn renewal_due(bundle: &CertBundle, now: jiff::Timestamp, lifetime_days: i64) -> bool {
    let margin = jiff::SignedDuration::from_hours(24 * lifetime_days / 3);
    match not_after(bundle) {
        Ok(end) => now.duration_until(end) < margin,
        Err(e) => {
            tracing::warn!(error = %e, "the serving certificate cannot be read; renewing it");
            true
        }
    }
}

/// The first PEM block of `pem` (a CA bundle's newest certificate).
fn first_pem(pem: &str) -> &str {
    const END: &str = "-----END CERTIFICATE-----";
    pem.find(END).map_or(pem, |i| &pem[..i + END.len()])
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> InjectorError {
    let what = what.into();
    move |source| InjectorError::Api { what, source }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn bundle_of(secret: &Secret, opts: &InjectorOptions) -> Result<CertBundle, InjectorError> {
    let bad = |problem: String| InjectorError::BadSecret {
        namespace: opts.namespace.clone(),
        name: opts.secret.clone(),
        problem,
    };
    let data = secret.data.clone().unwrap_or_default();
    let get = |k: &str| -> Result<String, InjectorError> {
        let v = data.get(k).ok_or_else(|| {
            bad(format!(
                "no `{k}` key (expected tls.crt, tls.key and ca.crt)"
            ))
        })?;
        String::from_utf8(v.0.clone()).map_err(|_| bad(format!("`{k}` is not PEM text")))
    };
    Ok(CertBundle {
        ca_pem: get("ca.crt")?,
        cert_pem: get("tls.crt")?,
        key_pem: get("tls.key")?,
    })
}

/// The Secret holding `bundle` (`resource_version` set for a replace).
fn tls_secret(
    opts: &InjectorOptions,
    bundle: &CertBundle,
    resource_version: Option<String>,
) -> Secret {
    let data = |pem: &str| ByteString(pem.as_bytes().to_vec());
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(opts.secret.clone()),
            namespace: Some(opts.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "serin".to_string(),
            )])),
            resource_version,
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), data(&bundle.cert_pem)),
            ("tls.key".to_string(), data(&bundle.key_pem)),
            ("ca.crt".to_string(), data(&bundle.ca_pem)),
        ])),
        ..Secret::default()
    }
}

/// Reads the serving certificate from its Secret, creating the Secret when missing.
pub async fn ensure_certificate(
    client: &Client,
    opts: &InjectorOptions,
    now: jiff::Timestamp,
) -> Result<CertBundle, InjectorError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &opts.namespace);
    let what = format!("Secret {}/{}", opts.namespace, opts.secret);
    match secrets.get(&opts.secret).await {
        Ok(s) => return bundle_of(&s, opts),
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(api_err(format!("reading {what}"))(e)),
    }
    let fresh = generate_certificate(&opts.service, &opts.namespace, now, opts.cert_lifetime_days)?;
    let secret = tls_secret(opts, &fresh, None);
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %opts.secret, ns = %opts.namespace, "created the injector's serving certificate");
            Ok(fresh)
        }
        // Another replica created it first: use theirs, so every replica serves one CA.
        Err(e) if is_status(&e, 409) => {
            let s = secrets
                .get(&opts.secret)
                .await
                .map_err(api_err(format!("reading {what} after a create conflict")))?;
            bundle_of(&s, opts)
        }
        Err(e) => Err(api_err(format!("creating {what}"))(e)),
    }
}

/// Makes the webhook trust `ca_pem`. Returns whether a patch was sent (false: already so, or
/// the configuration is not installed yet, which is logged).
pub async fn ensure_ca_bundle(
    client: &Client,
    opts: &InjectorOptions,
    ca_pem: &str,
) -> Result<bool, InjectorError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let what = format!(
        "MutatingWebhookConfiguration {}",
        opts.webhook_configuration
    );
    let cfg = match api.get(&opts.webhook_configuration).await {
        Ok(c) => c,
        Err(e) if is_status(&e, 404) => {
            tracing::warn!(
                webhook = %opts.webhook_configuration,
                "the webhook configuration is not installed (serin install writes it); pods are not injected until it is"
            );
            return Ok(false);
        }
        Err(e) => return Err(api_err(format!("reading {what}"))(e)),
    };
    let wanted = ByteString(ca_pem.as_bytes().to_vec());
    let mut ops = Vec::new();
    for (i, w) in cfg.webhooks.iter().flatten().enumerate() {
        if w.name != opts.webhook || w.client_config.ca_bundle.as_ref() == Some(&wanted) {
            continue;
        }
        // The test keeps the patch from landing on another entry if the list changed since.
        ops.push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": w.name}));
        ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": wanted}));
    }
    if ops.is_empty() {
        return Ok(false);
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(|e| {
            InjectorError::BadSecret {
                namespace: opts.namespace.clone(),
                name: opts.secret.clone(),
                problem: format!("caBundle patch: {e}"),
            }
        })?;
    api.patch(
        &opts.webhook_configuration,
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
    .map_err(api_err(format!("patching the caBundle of {what}")))?;
    tracing::info!(webhook = %opts.webhook_configuration, name = %cfg.name_any(), "caBundle set");
    Ok(true)
}

/// One certificate check: reads the Secret (creating it when missing), renews the certificate
/// when [`renewal_due`], and returns the bundle to serve when it differs from `served`.
///
/// Renewal keeps every replica trusted throughout: the new CA is added to the webhook's
/// `caBundle` (beside the old one, which the Secret's `ca.crt` keeps until the next renewal)
/// before the Secret is replaced, so replicas still serving the old certificate stay trusted
/// until they read the new one. The replace carries the Secret's resourceVersion: a replica
/// that loses that race (409) serves the winner's certificate.
pub async fn refresh_certificate(
    client: &Client,
    opts: &InjectorOptions,
    now: jiff::Timestamp,
    served: &CertBundle,
) -> Result<Option<CertBundle>, InjectorError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &opts.namespace);
    let what = format!("Secret {}/{}", opts.namespace, opts.secret);
    let (mut current, version) = match secrets.get(&opts.secret).await {
        Ok(s) => (bundle_of(&s, opts)?, s.metadata.resource_version),
        // Deleted by hand: made again, as at start.
        Err(e) if is_status(&e, 404) => (ensure_certificate(client, opts, now).await?, None),
        Err(e) => return Err(api_err(format!("reading {what}"))(e)),
    };
    // The caBundle already sent in this check, if any.
    let mut trusted = None;
    if version.is_some() && renewal_due(&current, now, opts.cert_lifetime_days) {
        let mut fresh =
            generate_certificate(&opts.service, &opts.namespace, now, opts.cert_lifetime_days)?;
        fresh.ca_pem = format!("{}{}\n", fresh.ca_pem, first_pem(&current.ca_pem));
        ensure_ca_bundle(client, opts, &fresh.ca_pem).await?;
        trusted = Some(fresh.ca_pem.clone());
        let secret = tls_secret(opts, &fresh, version);
        match secrets
            .replace(&opts.secret, &PostParams::default(), &secret)
            .await
        {
            Ok(_) => {
                tracing::info!(secret = %opts.secret, ns = %opts.namespace, "renewed the injector's serving certificate");
                current = fresh;
            }
            Err(e) if is_status(&e, 409) => {
                let s = secrets
                    .get(&opts.secret)
                    .await
                    .map_err(api_err(format!("reading {what} after a replace conflict")))?;
                current = bundle_of(&s, opts)?;
            }
            Err(e) => return Err(api_err(format!("replacing {what}"))(e)),
        }
    }
    if current == *served {
        return Ok(None);
    }
    if trusted.as_ref() != Some(&current.ca_pem) {
        ensure_ca_bundle(client, opts, &current.ca_pem).await?;
    }
    Ok(Some(current))
}

/// The serving certificate, swappable while connections are accepted: a renewed certificate
/// is served from the next handshake on, without a restart.
#[derive(Debug)]
pub struct ServingCert(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl ServingCert {
    /// Serves `bundle`.
    pub fn new(bundle: &CertBundle, opts: &InjectorOptions) -> Result<ServingCert, InjectorError> {
        Ok(ServingCert(std::sync::RwLock::new(certified_key(
            bundle, opts,
        )?)))
    }

    /// Serves `bundle` from now on.
    pub fn set(&self, bundle: &CertBundle, opts: &InjectorOptions) -> Result<(), InjectorError> {
        let key = certified_key(bundle, opts)?;
        // A poisoned lock only means a writer panicked mid-assignment of an Arc: the value is whole.
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn certified_key(
    bundle: &CertBundle,
    opts: &InjectorOptions,
) -> Result<Arc<rustls::sign::CertifiedKey>, InjectorError> {
    let bad = |problem: String| InjectorError::BadSecret {
        namespace: opts.namespace.clone(),
        name: opts.secret.clone(),
        problem,
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(bundle.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("tls.crt is not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(bad("tls.crt holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes())
        .map_err(|e| bad(format!("tls.key is not a PEM private key: {e}")))?;
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad(format!("tls.key cannot sign: {e}")))?;
    let ck = rustls::sign::CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|e| {
        bad(format!(
            "tls.crt and tls.key do not make a serving certificate: {e}"
        ))
    })?;
    Ok(Arc::new(ck))
}

/// Namespace annotations straight from the API server.
pub struct ApiNamespaces(pub Client);

#[async_trait::async_trait]
impl NamespaceAnnotations for ApiNamespaces {
    async fn annotations(&self, namespace: &str) -> Result<BTreeMap<String, String>, String> {
        let api: Api<Namespace> = Api::all(self.0.clone());
        api.get(namespace)
            .await
            .map(|n| n.metadata.annotations.unwrap_or_default())
            .map_err(|e| e.to_string())
    }
}

/// TLS settings serving whatever `cert` holds at each handshake.
pub fn tls_config(cert: Arc<ServingCert>) -> Result<Arc<rustls::ServerConfig>, InjectorError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| InjectorError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    Ok(Arc::new(cfg))
}

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// Answers one HTTP request (after TLS).
pub async fn handle(
    injector: &Injector,
    registry: &prometheus_client::registry::Registry,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/inject") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body (at most {MAX_BODY} bytes): {e}\n"),
                        TEXT,
                    );
                }
            };
            let answer = injector.review(&body).await;
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST);
            match serde_json::to_vec(&answer.review) {
                Ok(b) => text(status, b, "application/json"),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode the review: {e}\n"),
                    TEXT,
                ),
            }
        }
        (_, "/inject") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an AdmissionReview\n",
            TEXT,
        ),
        (&Method::GET, "/metrics") => {
            let mut s = String::new();
            match prometheus_client::encoding::text::encode(&mut s, registry) {
                Ok(()) => text(
                    StatusCode::OK,
                    s,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"), TEXT),
            }
        }
        (&Method::GET, "/ready" | "/live") => text(StatusCode::OK, "ok\n", TEXT),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try POST /inject, /metrics, /ready or /live\n",
            TEXT,
        ),
    }
}

/// Serves the webhook on `listener` with `tls` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    injector: Arc<Injector>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut registry = prometheus_client::registry::Registry::default();
    injector.metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let injector = injector.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let stream = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let injector = injector.clone();
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(handle(&injector, &registry, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// `serin injector`: binds `opts.listen`, then [`run_on`].
pub async fn run(
    client: Client,
    opts: InjectorOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), InjectorError> {
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| InjectorError::Bind {
            addr: opts.listen,
            source,
        })?;
    run_on(client, opts, listener, shutdown).await
}

/// The injector on `listener`: certificate and caBundle first, then it serves until
/// `shutdown` while it keeps the Namespace cache and the uninjected-pods gauge
/// ([`crate::uninjected`]) and checks the certificate every `cert_check_interval`.
pub async fn run_on(
    client: Client,
    opts: InjectorOptions,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), InjectorError> {
    let now = jiff::Timestamp::now();
    let mut bundle = ensure_certificate(&client, &opts, now).await?;
    // A certificate due for renewal, or expired (the injector was down past its expiry, or the
    // Secret was restored from a backup), is renewed before serving: served, the API server
    // would refuse it and admit every pod without the proxy until the first hourly check.
    if renewal_due(&bundle, now, opts.cert_lifetime_days)
        && let Some(fresh) = refresh_certificate(&client, &opts, now, &bundle).await?
    {
        bundle = fresh;
    }
    ensure_ca_bundle(&client, &opts, &bundle.ca_pem).await?;
    let cert = Arc::new(ServingCert::new(&bundle, &opts)?);
    let tls = tls_config(cert.clone())?;
    let metrics = InjectorMetrics::default();
    let (namespaces, watches) =
        crate::uninjected::watch(client.clone(), metrics.uninjected.clone());
    let injector = Arc::new(Injector {
        config: opts.inject.clone(),
        namespaces: Arc::new(namespaces),
        metrics,
    });
    let listen = listener.local_addr().ok();
    tracing::info!(listen = ?listen, "serin injector serving POST /inject over TLS");
    tokio::select! {
        () = serve(listener, tls, injector, shutdown) => {}
        () = watches => {}
        () = keep_certificate(client, opts, cert, bundle) => {}
    }
    Ok(())
}

/// Checks the certificate every `cert_check_interval` and serves what the Secret holds.
async fn keep_certificate(
    client: Client,
    opts: InjectorOptions,
    cert: Arc<ServingCert>,
    mut served: CertBundle,
) {
    let mut tick = tokio::time::interval(opts.cert_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and the certificate was just read (and renewed if due).
    tick.tick().await;
    loop {
        tick.tick().await;
        match refresh_certificate(&client, &opts, jiff::Timestamp::now(), &served).await {
            Ok(Some(fresh)) => match cert.set(&fresh, &opts) {
                Ok(()) => {
                    tracing::info!(secret = %opts.secret, "serving the renewed certificate");
                    served = fresh;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the renewed certificate cannot be served; keeping the current one")
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "certificate check failed; retrying at the next interval")
            }
        }
    }
}
