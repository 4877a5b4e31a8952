//! AWS credentials and request signing for the CloudWatch provider.
//!
//! Signing is AWS Signature Version 4 by `aws-sigv4`, AWS's own maintained signer (the one its
//! Rust SDK uses), so the canonical request, the header canonicalisation and the key derivation
//! are not re-implemented here. Tests hold it to AWS's published SigV4 test-suite vectors.
//!
//! Credentials are looked up in this order, the first that is configured wins:
//!
//! 1. the template's `secretRef` Secret, keys `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
//!    optionally `AWS_SESSION_TOKEN` (the lower-case spellings of the shared credentials file,
//!    `aws_access_key_id`, ..., are read too). Flagger reads no Secret for CloudWatch; Serin adds
//!    it so that one controller can query several accounts;
//! 2. the controller's environment, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!    `AWS_SESSION_TOKEN` (the first link of the SDK's default chain, which Flagger uses);
//! 3. the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`),
//!    profile `AWS_PROFILE` or `default`, read again at every query so that rotated keys apply;
//! 4. web identity (EKS IAM roles for service accounts): `AWS_WEB_IDENTITY_TOKEN_FILE` and
//!    `AWS_ROLE_ARN` are exchanged at STS `AssumeRoleWithWebIdentity` for temporary keys;
//! 5. the container credentials endpoint (ECS task roles, EKS Pod Identity):
//!    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (on `169.254.170.2`) or
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI`, with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN` as its `Authorization`;
//! 6. the EC2 instance metadata service, IMDSv2 (the node's instance role), at
//!    `AWS_EC2_METADATA_SERVICE_ENDPOINT` or `http://169.254.169.254`, unless
//!    `AWS_EC2_METADATA_DISABLED=true`.
//!
//! Temporary keys from 4 to 6 are kept until five minutes before they expire. As in the SDK,
//! links 1 to 5 are chosen by configuration when the provider is built, and the instance
//! metadata service, the fallback, is only known to be there or not when it is asked: its failure
//! is an error naming every source.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::registry::Credentials;
use crate::AnalysisError;

/// Secret (and environment) key of the access key id.
pub const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// Secret (and environment) key of the secret access key.
pub const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// Secret (and environment) key of the session token of temporary credentials.
pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

const SECRET_KEYS: &[&str] = &[ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN];

/// What the credential chain may read of the controller's environment: a lookup of environment
/// variables (the process environment in production, a map in tests).
pub type Environment = dyn Fn(&str) -> Option<String> + Send + Sync;

/// One set of AWS keys.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsKeys {
    /// The access key id (`AKIA...`, `ASIA...`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token of temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsKeys {
    // Never print the secret or the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AwsKeys({}, <secret redacted>)", self.access_key_id)
    }
}

/// Where a provider's keys come from (decided once, when the provider is built).
#[derive(Debug)]
pub(crate) enum KeySource {
    /// A Secret or the environment: fixed keys.
    Static(AwsKeys),
    /// A shared credentials file, read at every query.
    File { path: String, profile: String },
    /// Web identity exchanged at STS, cached until shortly before expiry.
    WebIdentity(WebIdentity),
    /// The container credentials endpoint (ECS, EKS Pod Identity), cached.
    Container(Container),
    /// The EC2 instance metadata service (IMDSv2), cached.
    Imds(Imds),
}

/// Temporary keys and when they expire.
type Cache = Mutex<Option<(AwsKeys, SystemTime)>>;

/// Cached keys while more than five minutes of their life is left.
fn cached(cache: &Cache) -> Option<AwsKeys> {
    let guard = cache.lock().unwrap_or_else(|p| p.into_inner());
    guard
        .as_ref()
        .filter(|(_, expires)| SystemTime::now() + Duration::from_secs(300) < *expires)
        .map(|(k, _)| k.clone())
}

fn remember(cache: &Cache, keys: &AwsKeys, expires: SystemTime) {
    *cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((keys.clone(), expires));
}

/// An RFC 3339 expiry (`2024-01-01T00:00:00Z`) as a time.
fn expiry(text: &str) -> Result<SystemTime, String> {
    let t = text
        .parse::<jiff::Timestamp>()
        .map_err(|e| format!("expiration {text:?}: {e}"))?;
    Ok(SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(t.as_second()).unwrap_or_default()))
}

/// The JSON both the container endpoint and IMDS answer with.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonCredentials {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

impl JsonCredentials {
    fn keys(body: &str) -> Result<(AwsKeys, SystemTime), String> {
        let c: JsonCredentials =
            serde_json::from_str(body).map_err(|e| format!("not a credentials answer: {e}"))?;
        if let Some(code) = c.code.as_deref().filter(|c| *c != "Success") {
            return Err(format!("{code}: {}", c.message.unwrap_or_default()));
        }
        let (Some(access_key_id), Some(secret_access_key), Some(expiration)) =
            (c.access_key_id, c.secret_access_key, c.expiration)
        else {
            return Err("the answer lacks AccessKeyId, SecretAccessKey or Expiration".into());
        };
        Ok((
            AwsKeys {
                access_key_id,
                secret_access_key,
                session_token: c.token,
            },
            expiry(&expiration)?,
        ))
    }
}

pub(crate) struct Container {
    uri: String,
    token: Option<String>,
    token_file: Option<String>,
    cached: Cache,
}

impl std::fmt::Debug for Container {
    // Never print the authorization token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Container({}, <token redacted>)", self.uri)
    }
}

impl Container {
    async fn keys(&self, client: &reqwest::Client) -> Result<AwsKeys, AnalysisError> {
        if let Some(k) = cached(&self.cached) {
            return Ok(k);
        }
        let failed = |message: String| AnalysisError::Unavailable {
            provider: "cloudwatch",
            address: self.uri.clone(),
            message: format!("container credentials: {message}"),
            source: None,
        };
        let mut request = client.get(&self.uri);
        let token = match &self.token_file {
            // Read at every fetch: the agent rotates the file.
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        AnalysisError::invalid(
                            format!("the container authorization token file {path}"),
                            format!("cannot be read: {e}"),
                            "the file AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE names",
                        )
                    })?
                    .trim()
                    .to_string(),
            ),
            None => self.token.clone(),
        };
        if let Some(t) = token {
            request = request.header("Authorization", t);
        }
        let response = request.send().await.map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}: {}", body.trim())));
        }
        let (keys, expires) = JsonCredentials::keys(&body).map_err(failed)?;
        remember(&self.cached, &keys, expires);
        Ok(keys)
    }
}

#[derive(Debug)]
pub(crate) struct Imds {
    endpoint: String,
    cached: Cache,
}

/// How long IMDS may take per call: off EC2 nothing answers, and the SDK gives up after 1 s too.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

impl Imds {
    async fn keys(&self, client: &reqwest::Client) -> Result<AwsKeys, AnalysisError> {
        if let Some(k) = cached(&self.cached) {
            return Ok(k);
        }
        let failed = |message: String| {
            AnalysisError::invalid(
                "spec.provider.secretRef",
                format!(
                    "no AWS credentials found for provider cloudwatch: none is configured, and the EC2 instance metadata service at {} {message}",
                    self.endpoint
                ),
                CHAIN,
            )
        };
        let text = |r: reqwest::RequestBuilder| async {
            let response = r
                .timeout(IMDS_TIMEOUT)
                .send()
                .await
                .map_err(|e| format!("did not answer: {e}"))?;
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|e| format!("broke off: {e}"))?;
            if status.is_success() {
                Ok(body)
            } else {
                Err(format!("answered HTTP {status}: {}", body.trim()))
            }
        };
        // IMDSv2: a session token first, then the role's name, then its keys.
        let token = text(
            client
                .put(format!("{}/latest/api/token", self.endpoint))
                .header("X-aws-ec2-metadata-token-ttl-seconds", "21600"),
        )
        .await
        .map_err(failed)?;
        let base = format!(
            "{}/latest/meta-data/iam/security-credentials/",
            self.endpoint
        );
        let roles = text(
            client
                .get(&base)
                .header("X-aws-ec2-metadata-token", token.trim()),
        )
        .await
        .map_err(failed)?;
        let Some(role) = roles.lines().map(str::trim).find(|l| !l.is_empty()) else {
            return Err(failed("lists no instance role".into()));
        };
        let body = text(
            client
                .get(format!("{base}{role}"))
                .header("X-aws-ec2-metadata-token", token.trim()),
        )
        .await
        .map_err(failed)?;
        let (keys, expires) =
            JsonCredentials::keys(&body).map_err(|m| failed(format!("role {role}: {m}")))?;
        remember(&self.cached, &keys, expires);
        Ok(keys)
    }
}

#[derive(Debug)]
pub(crate) struct WebIdentity {
    token_file: String,
    role_arn: String,
    session_name: String,
    /// STS's endpoint.
    sts: String,
    cached: Cache,
}

/// Where the chain looked, for the error when it found nothing.
const CHAIN: &str = "spec.provider.secretRef with the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys); or the controller's environment AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; or a shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile AWS_PROFILE or default); or web identity (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, as EKS sets them for IAM roles for service accounts); or the container credentials endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI: ECS task roles, EKS Pod Identity); or the EC2 instance metadata service (the node's instance role)";

fn first_of(c: &Credentials, key: &str) -> Option<String> {
    c.optional(key)
        .or_else(|| c.optional(&key.to_ascii_lowercase()))
}

impl KeySource {
    /// Decides where the keys come from, in the documented order. `region` picks the regional
    /// STS endpoint for web identity.
    pub(crate) fn resolve(
        credentials: Option<&Credentials>,
        env: &Environment,
        region: &str,
    ) -> Result<Self, AnalysisError> {
        if let Some(c) = credentials {
            let key = |k: &str| {
                first_of(c, k).ok_or_else(|| AnalysisError::InvalidConfig {
                    field: format!("spec.provider.secretRef: Secret {} key {k}", c.secret),
                    message: "missing or empty".into(),
                    accepted: format!(
                        "for provider cloudwatch a Secret with the keys {} ({} optional)",
                        SECRET_KEYS[..2].join(", "),
                        SESSION_TOKEN
                    ),
                })
            };
            return Ok(KeySource::Static(AwsKeys {
                access_key_id: key(ACCESS_KEY_ID)?,
                secret_access_key: key(SECRET_ACCESS_KEY)?,
                session_token: first_of(c, SESSION_TOKEN),
            }));
        }
        let var = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        match (var(ACCESS_KEY_ID), var(SECRET_ACCESS_KEY)) {
            (Some(access_key_id), Some(secret_access_key)) => {
                return Ok(KeySource::Static(AwsKeys {
                    access_key_id,
                    secret_access_key,
                    session_token: var(SESSION_TOKEN),
                }));
            }
            (Some(_), None) | (None, Some(_)) => {
                let (set, unset) = if var(ACCESS_KEY_ID).is_some() {
                    (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
                } else {
                    (SECRET_ACCESS_KEY, ACCESS_KEY_ID)
                };
                return Err(AnalysisError::invalid(
                    format!("the controller's environment variable {unset}"),
                    format!("{set} is set but {unset} is not"),
                    "both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither",
                ));
            }
            (None, None) => {}
        }
        let named_profile = var("AWS_PROFILE");
        let profile = named_profile.clone().unwrap_or_else(|| "default".into());
        let file = var("AWS_SHARED_CREDENTIALS_FILE")
            .or_else(|| var("HOME").map(|h| format!("{h}/.aws/credentials")));
        if let Some(path) = file
            && std::path::Path::new(&path).is_file()
        {
            // Read now to fail early (and at every query again). A profile named by
            // AWS_PROFILE must be there; without one, a file lacking `default` is passed over
            // for the next source, as the SDK does.
            match read_profile(&path, &profile) {
                Ok(_) => return Ok(KeySource::File { path, profile }),
                Err(e) if named_profile.is_some() || profile_present(&path, &profile) => {
                    return Err(e);
                }
                Err(_) => {}
            }
        }
        if let (Some(token_file), Some(role_arn)) =
            (var("AWS_WEB_IDENTITY_TOKEN_FILE"), var("AWS_ROLE_ARN"))
        {
            let sts = var("AWS_ENDPOINT_URL_STS")
                .or_else(|| var("AWS_ENDPOINT_URL"))
                .unwrap_or_else(|| format!("https://sts.{region}.{}", dns_suffix(region)));
            return Ok(KeySource::WebIdentity(WebIdentity {
                token_file,
                role_arn,
                session_name: var("AWS_ROLE_SESSION_NAME")
                    .unwrap_or_else(|| "serin-cloudwatch".into()),
                sts: sts.trim_end_matches('/').to_string(),
                cached: Mutex::new(None),
            }));
        }
        let relative = var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
        if let Some(uri) = relative
            .map(|r| format!("http://169.254.170.2{r}"))
            .or_else(|| var("AWS_CONTAINER_CREDENTIALS_FULL_URI"))
        {
            return Ok(KeySource::Container(Container {
                uri,
                token: var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
                token_file: var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
                cached: Mutex::new(None),
            }));
        }
        if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(AnalysisError::invalid(
                "spec.provider.secretRef",
                "no AWS credentials found for provider cloudwatch (and the EC2 instance metadata service is disabled by AWS_EC2_METADATA_DISABLED)",
                CHAIN,
            ));
        }
        Ok(KeySource::Imds(Imds {
            endpoint: var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .unwrap_or_else(|| "http://169.254.169.254".into())
                .trim_end_matches('/')
                .to_string(),
            cached: Mutex::new(None),
        }))
    }

    /// The keys to sign the next request with.
    pub(crate) async fn keys(&self, client: &reqwest::Client) -> Result<AwsKeys, AnalysisError> {
        match self {
            KeySource::Static(k) => Ok(k.clone()),
            KeySource::File { path, profile } => read_profile(path, profile),
            KeySource::WebIdentity(w) => w.keys(client).await,
            KeySource::Container(c) => c.keys(client).await,
            KeySource::Imds(i) => i.keys(client).await,
        }
    }
}

/// The DNS suffix of AWS endpoints in `region` (the China partition differs).
pub(crate) fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

/// Whether the file at `path` has a `[profile]` section at all.
fn profile_present(path: &str, profile: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| {
        text.lines().any(|l| {
            l.trim()
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .map(str::trim)
                == Some(profile)
        })
    })
}

/// Reads `profile` of the INI-style shared credentials file at `path`.
fn read_profile(path: &str, profile: &str) -> Result<AwsKeys, AnalysisError> {
    let field = format!("the shared credentials file {path}");
    let text = std::fs::read_to_string(path).map_err(|e| {
        AnalysisError::invalid(field.clone(), format!("cannot be read: {e}"), CHAIN)
    })?;
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_string());
            continue;
        }
        if let (Some(section), Some((k, v))) = (&current, line.split_once('=')) {
            sections
                .entry(section.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let Some(values) = sections.get(profile) else {
        return Err(AnalysisError::invalid(
            format!("{field} profile [{profile}]"),
            "not in the file",
            format!(
                "one of its profiles ({}), chosen with AWS_PROFILE",
                sections.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let key = |k: &str| {
        values
            .get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| {
                AnalysisError::invalid(
                    format!("{field} profile [{profile}] key {k}"),
                    "missing or empty",
                    "aws_access_key_id and aws_secret_access_key (aws_session_token optional)",
                )
            })
    };
    Ok(AwsKeys {
        access_key_id: key("aws_access_key_id")?,
        secret_access_key: key("aws_secret_access_key")?,
        session_token: values.get("aws_session_token").cloned(),
    })
}

impl WebIdentity {
    async fn keys(&self, client: &reqwest::Client) -> Result<AwsKeys, AnalysisError> {
        if let Some(k) = cached(&self.cached) {
            return Ok(k);
        }
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            AnalysisError::invalid(
                format!("the web identity token file {}", self.token_file),
                format!("cannot be read: {e}"),
                "the projected service account token EKS mounts (AWS_WEB_IDENTITY_TOKEN_FILE)",
            )
        })?;
        let unavailable = |message: String| AnalysisError::Unavailable {
            provider: "cloudwatch",
            address: self.sts.clone(),
            message,
            source: None,
        };
        // AssumeRoleWithWebIdentity is the one STS call that is not signed: the token is the
        // proof of identity.
        let response = client
            .post(format!("{}/", self.sts))
            .form(&[
                ("Action", "AssumeRoleWithWebIdentity"),
                ("Version", "2011-06-15"),
                ("RoleArn", self.role_arn.as_str()),
                ("RoleSessionName", self.session_name.as_str()),
                ("WebIdentityToken", token.trim()),
            ])
            .send()
            .await
            .map_err(|e| unavailable(format!("STS AssumeRoleWithWebIdentity: {e}")))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| unavailable(format!("STS AssumeRoleWithWebIdentity: {e}")))?;
        if !status.is_success() {
            let code = xml_text(&body, "Code").unwrap_or_default();
            let message = xml_text(&body, "Message").unwrap_or_else(|| body.trim().to_string());
            return Err(unavailable(format!(
                "STS AssumeRoleWithWebIdentity for {} answered HTTP {status}: {code} {message}",
                self.role_arn
            )));
        }
        let field = |name: &str| {
            xml_text(&body, name).ok_or_else(|| {
                unavailable(format!(
                    "STS AssumeRoleWithWebIdentity answer has no {name}"
                ))
            })
        };
        let keys = AwsKeys {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
        };
        let expires = expiry(&field("Expiration")?).map_err(unavailable)?;
        remember(&self.cached, &keys, expires);
        Ok(keys)
    }
}

/// The text of the first `<name>` element of an XML answer (STS answers are flat and their
/// values need no unescaping beyond the five predefined entities).
fn xml_text(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = start + body[start..].find(&format!("</{name}>"))?;
    Some(
        body[start..end]
            .trim()
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// A request to sign: `url` is the full, already encoded URL; `headers` are the other headers
/// to sign (at least `content-type`).
pub(crate) struct Unsigned<'a> {
    pub(crate) method: &'a str,
    pub(crate) url: &'a str,
    pub(crate) headers: &'a [(&'a str, &'a str)],
    pub(crate) body: &'a [u8],
}

/// The headers that sign `request` (`x-amz-date`, `authorization` and, with temporary keys,
/// `x-amz-security-token`), by SigV4 for `service` in `region` at `time`.
pub(crate) fn sign_headers(
    keys: &AwsKeys,
    region: &str,
    service: &str,
    time: SystemTime,
    request: &Unsigned<'_>,
) -> Result<Vec<(&'static str, String)>, AnalysisError> {
    let Unsigned {
        method,
        url,
        headers,
        body,
    } = *request;
    let failed = |e: &dyn std::fmt::Display| {
        AnalysisError::invalid(
            "spec.provider",
            format!("cannot sign the request to {url}: {e}"),
            "a valid region, address and AWS keys",
        )
    };
    let identity = aws_credential_types::Credentials::new(
        &keys.access_key_id,
        &keys.secret_access_key,
        keys.session_token.clone(),
        None,
        "serin",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| failed(&e))?;
    let (instructions, _signature) = sign(request, &params).map_err(|e| failed(&e))?.into_parts();
    let (headers, _params) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name(), h.value().to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's SigV4 test suite: its credentials, date, region and service.
    const SUITE_KEY: &str = "AKIDEXAMPLE";
    const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const SUITE_TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

    /// 2015-08-30T12:36:00Z.
    fn suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn suite_authorization(
        token: Option<&str>,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> String {
        let keys = AwsKeys {
            access_key_id: SUITE_KEY.into(),
            secret_access_key: SUITE_SECRET.into(),
            session_token: token.map(str::to_string),
        };
        let signed = sign_headers(
            &keys,
            "us-east-1",
            "service",
            suite_time(),
            &Unsigned {
                method,
                url,
                headers,
                body,
            },
        )
        .unwrap();
        let get = |n: &str| {
            signed
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("x-amz-date").as_deref(), Some("20150830T123600Z"));
        assert_eq!(get("x-amz-security-token").as_deref(), token);
        get("authorization").unwrap()
    }

    const CRED: &str =
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";

    #[test]
    fn signatures_match_the_published_sigv4_test_suite() {
        let host = [("host", "example.amazonaws.com")];
        // get-vanilla
        assert_eq!(
            suite_authorization(None, "GET", "https://example.amazonaws.com/", &host, b""),
            format!(
                "{CRED}, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
        // get-vanilla-query-order-key-case
        assert_eq!(
            suite_authorization(
                None,
                "GET",
                "https://example.amazonaws.com/?Param2=value2&Param1=value1",
                &host,
                b""
            ),
            format!(
                "{CRED}, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            )
        );
        // get-header-value-trim
        assert_eq!(
            suite_authorization(
                None,
                "GET",
                "https://example.amazonaws.com/",
                &[
                    ("host", "example.amazonaws.com"),
                    ("My-Header1", " value1"),
                    ("My-Header2", "\"a   b   c\""),
                ],
                b""
            ),
            format!(
                "{CRED}, SignedHeaders=host;my-header1;my-header2;x-amz-date, Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"
            )
        );
        // post-x-www-form-urlencoded
        assert_eq!(
            suite_authorization(
                None,
                "POST",
                "https://example.amazonaws.com/",
                &[
                    ("host", "example.amazonaws.com"),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                b"Param1=value1"
            ),
            format!(
                "{CRED}, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
            )
        );
        // post-sts-token/post-sts-header-before: the session token is signed.
        assert_eq!(
            suite_authorization(
                Some(SUITE_TOKEN),
                "POST",
                "https://example.amazonaws.com/",
                &host,
                b""
            ),
            format!(
                "{CRED}, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
            )
        );
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + Send + Sync + use<> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    fn secret(pairs: &[(&str, &str)]) -> Credentials {
        Credentials {
            secret: "monitoring/aws".into(),
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn static_keys(s: KeySource) -> AwsKeys {
        match s {
            KeySource::Static(k) => k,
            other => panic!("expected fixed keys, got {other:?}"),
        }
    }

    #[test]
    fn the_secret_wins_over_the_environment_and_names_a_missing_key() {
        let e = env(&[(ACCESS_KEY_ID, "ENV"), (SECRET_ACCESS_KEY, "envsecret")]);
        let s = secret(&[(ACCESS_KEY_ID, "SECRET\n"), (SECRET_ACCESS_KEY, "s")]);
        let k = static_keys(KeySource::resolve(Some(&s), &e, "eu-west-1").unwrap());
        assert_eq!(k.access_key_id, "SECRET");
        assert_eq!(k.session_token, None);
        // The shared-file spelling of the keys is read too.
        let s = secret(&[
            ("aws_access_key_id", "LOWER"),
            ("aws_secret_access_key", "s"),
            ("aws_session_token", "t"),
        ]);
        let k = static_keys(KeySource::resolve(Some(&s), &e, "eu-west-1").unwrap());
        assert_eq!(
            (k.access_key_id.as_str(), k.session_token.as_deref()),
            ("LOWER", Some("t"))
        );
        let s = secret(&[(ACCESS_KEY_ID, "A")]);
        let err = KeySource::resolve(Some(&s), &e, "eu-west-1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Secret monitoring/aws key AWS_SECRET_ACCESS_KEY"),
            "{err}"
        );
    }

    #[test]
    fn the_environment_is_read_and_half_a_pair_is_named() {
        let e = env(&[
            (ACCESS_KEY_ID, "ENV"),
            (SECRET_ACCESS_KEY, "envsecret"),
            (SESSION_TOKEN, "tok"),
        ]);
        let k = static_keys(KeySource::resolve(None, &e, "eu-west-1").unwrap());
        assert_eq!(
            (k.access_key_id.as_str(), k.session_token.as_deref()),
            ("ENV", Some("tok"))
        );
        let e = env(&[(ACCESS_KEY_ID, "ENV")]);
        let err = KeySource::resolve(None, &e, "eu-west-1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("AWS_SECRET_ACCESS_KEY") && err.contains("is not"),
            "{err}"
        );
    }

    #[test]
    fn the_shared_credentials_file_is_read_per_profile_at_every_query() {
        let dir = std::env::temp_dir().join(format!("serin-aws-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials");
        std::fs::write(
            &path,
            "# comment\n[default]\naws_access_key_id = DEF\naws_secret_access_key = d\n\n[prod]\nAWS_ACCESS_KEY_ID=PROD\naws_secret_access_key=p\naws_session_token = t\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let source = KeySource::resolve(
            None,
            &env(&[("AWS_SHARED_CREDENTIALS_FILE", p), ("AWS_PROFILE", "prod")]),
            "eu-west-1",
        )
        .unwrap();
        let client = crate::provider::http_client_builder().build().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let k = rt.block_on(source.keys(&client)).unwrap();
        assert_eq!(
            (k.access_key_id.as_str(), k.session_token.as_deref()),
            ("PROD", Some("t"))
        );
        // Rotated keys apply at the next query.
        std::fs::write(
            &path,
            "[prod]\naws_access_key_id=NEW\naws_secret_access_key=n\n",
        )
        .unwrap();
        assert_eq!(
            rt.block_on(source.keys(&client)).unwrap().access_key_id,
            "NEW"
        );
        let err = KeySource::resolve(
            None,
            &env(&[
                ("AWS_SHARED_CREDENTIALS_FILE", p),
                ("AWS_PROFILE", "staging"),
            ]),
            "eu-west-1",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("profile [staging]") && err.contains("prod"),
            "{err}"
        );
        // Without AWS_PROFILE, a file lacking [default] is passed over for the next source.
        let next = KeySource::resolve(
            None,
            &env(&[
                ("AWS_SHARED_CREDENTIALS_FILE", p),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ]),
            "eu-west-1",
        )
        .unwrap_err()
        .to_string();
        assert!(next.contains("no AWS credentials found"), "{next}");
        // A [default] missing its secret key is named, not passed over.
        std::fs::write(&path, "[default]\naws_access_key_id=A\n").unwrap();
        let err = KeySource::resolve(
            None,
            &env(&[("AWS_SHARED_CREDENTIALS_FILE", p)]),
            "eu-west-1",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("profile [default] key aws_secret_access_key"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nothing_configured_names_every_source() {
        let err = KeySource::resolve(
            None,
            &env(&[("AWS_EC2_METADATA_DISABLED", "true")]),
            "eu-west-1",
        )
        .unwrap_err()
        .to_string();
        for source in [
            "spec.provider.secretRef",
            "AWS_ACCESS_KEY_ID",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "EC2 instance metadata",
        ] {
            assert!(err.contains(source), "{source}: {err}");
        }
        // Otherwise the instance metadata service is the last resort, asked at query time.
        let source = KeySource::resolve(None, &env(&[]), "eu-west-1").unwrap();
        assert!(
            matches!(&source, KeySource::Imds(i) if i.endpoint == "http://169.254.169.254"),
            "{source:?}"
        );
    }

    #[test]
    fn no_source_prints_a_secret() {
        let sources = [
            KeySource::resolve(
                Some(&secret(&[
                    (ACCESS_KEY_ID, "AKIA"),
                    (SECRET_ACCESS_KEY, "hunter2"),
                    (SESSION_TOKEN, "hunter3"),
                ])),
                &env(&[]),
                "eu-west-1",
            )
            .unwrap(),
            KeySource::resolve(
                None,
                &env(&[
                    (
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                        "http://127.0.0.1:9/creds",
                    ),
                    ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "hunter4"),
                ]),
                "eu-west-1",
            )
            .unwrap(),
        ];
        for s in sources {
            let printed = format!("{s:?}");
            assert!(!printed.contains("hunter"), "{printed}");
        }
    }

    #[test]
    fn xml_text_reads_sts_fields() {
        let body = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><SessionToken>a&amp;b</SessionToken><AccessKeyId>ASIA1</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        assert_eq!(xml_text(body, "SessionToken").as_deref(), Some("a&b"));
        assert_eq!(xml_text(body, "AccessKeyId").as_deref(), Some("ASIA1"));
        assert_eq!(xml_text(body, "Expiration"), None);
    }
}
