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

/// A fresh self-signed CA and a serving certificate for `service.namespace.svc`, valid from a
/// year before `year` (clock skew) for ten years.
pub fn generate_certificate(
    service: &str,
    namespace: &str,
    year: i32,
) -> Result<CertBundle, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, date_time_ymd,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{service} CA"));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = date_time_ymd(year - 1, 1, 1);
    ca.not_after = date_time_ymd(year + 10, 1, 1);
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
    leaf.not_before = date_time_ymd(year - 1, 1, 1);
    leaf.not_after = date_time_ymd(year + 10, 1, 1);
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca)?;
    Ok(CertBundle {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
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

/// Reads the serving certificate from its Secret, creating the Secret when missing.
pub async fn ensure_certificate(
    client: &Client,
    opts: &InjectorOptions,
    year: i32,
) -> Result<CertBundle, InjectorError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &opts.namespace);
    let what = format!("Secret {}/{}", opts.namespace, opts.secret);
    match secrets.get(&opts.secret).await {
        Ok(s) => return bundle_of(&s, opts),
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(api_err(format!("reading {what}"))(e)),
    }
    let fresh = generate_certificate(&opts.service, &opts.namespace, year)?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(opts.secret.clone()),
            namespace: Some(opts.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "serin".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_string(),
                ByteString(fresh.cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(fresh.key_pem.clone().into_bytes()),
            ),
            (
                "ca.crt".to_string(),
                ByteString(fresh.ca_pem.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    };
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

/// TLS settings serving `bundle`.
pub fn tls_config(
    bundle: &CertBundle,
    opts: &InjectorOptions,
) -> Result<Arc<rustls::ServerConfig>, InjectorError> {
    let bad = |problem: String| InjectorError::BadSecret {
        namespace: opts.namespace.clone(),
        name: opts.secret.clone(),
        problem,
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(bundle.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("tls.crt is not a PEM certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes())
        .map_err(|e| bad(format!("tls.key is not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            bad(format!(
                "tls.crt and tls.key do not make a serving certificate: {e}"
            ))
        })?;
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

/// `serin injector`: certificate, caBundle, then serve until `shutdown`.
pub async fn run(
    client: Client,
    opts: InjectorOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), InjectorError> {
    let year = jiff::Zoned::now().year().into();
    let bundle = ensure_certificate(&client, &opts, year).await?;
    ensure_ca_bundle(&client, &opts, &bundle.ca_pem).await?;
    let tls = tls_config(&bundle, &opts)?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| InjectorError::Bind {
            addr: opts.listen,
            source,
        })?;
    tracing::info!(listen = %opts.listen, "serin injector serving POST /inject over TLS");
    let injector = Arc::new(Injector {
        config: opts.inject.clone(),
        namespaces: Arc::new(ApiNamespaces(client)),
        metrics: InjectorMetrics::default(),
    });
    serve(listener, tls, injector, shutdown).await;
    Ok(())
}
