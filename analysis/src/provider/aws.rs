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
//!    `AWS_ROLE_ARN` are exchanged at STS `AssumeRoleWithWebIdentity` for temporary keys, kept
//!    until five minutes before they expire.
//!
//! The SDK's last links, the ECS container endpoint and the EC2 instance metadata service, are
//! not read: a configuration that relies on them gets an error naming the sources above.

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
}

#[derive(Debug)]
pub(crate) struct WebIdentity {
    token_file: String,
    role_arn: String,
    session_name: String,
    /// STS's endpoint.
    sts: String,
    cached: Mutex<Option<(AwsKeys, SystemTime)>>,
}

/// Where the chain looked, for the error when it found nothing.
const CHAIN: &str = "spec.provider.secretRef with the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys); or the controller's environment AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; or a shared credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile AWS_PROFILE or default); or web identity (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, as EKS sets them for IAM roles for service accounts)";

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
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let file = var("AWS_SHARED_CREDENTIALS_FILE")
            .or_else(|| var("HOME").map(|h| format!("{h}/.aws/credentials")));
        if let Some(path) = file
            && std::path::Path::new(&path).is_file()
        {
            // A file that exists must hold the profile; read now to fail early, and at every
            // query again.
            read_profile(&path, &profile)?;
            return Ok(KeySource::File { path, profile });
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
        Err(AnalysisError::invalid(
            "spec.provider.secretRef",
            "no AWS credentials found for provider cloudwatch (the ECS container endpoint and EC2 instance metadata are not read)",
            CHAIN,
        ))
    }

    /// The keys to sign the next request with.
    pub(crate) async fn keys(&self, client: &reqwest::Client) -> Result<AwsKeys, AnalysisError> {
        match self {
            KeySource::Static(k) => Ok(k.clone()),
            KeySource::File { path, profile } => read_profile(path, profile),
            KeySource::WebIdentity(w) => w.keys(client).await,
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
        let now = SystemTime::now();
        if let Some((keys, expires)) = &*self.cached.lock().unwrap_or_else(|p| p.into_inner())
            && now + Duration::from_secs(300) < *expires
        {
            return Ok(keys.clone());
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
        let expiration = field("Expiration")?;
        let expires = expiration
            .parse::<jiff::Timestamp>()
            .map_err(|e| unavailable(format!("STS Expiration {expiration:?}: {e}")))?;
        let expires = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(expires.as_second()).unwrap_or_default());
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((keys.clone(), expires));
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
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nothing_configured_names_every_source() {
        let err = KeySource::resolve(None, &env(&[]), "eu-west-1")
            .unwrap_err()
            .to_string();
        for source in [
            "spec.provider.secretRef",
            "AWS_ACCESS_KEY_ID",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ] {
            assert!(err.contains(source), "{source}: {err}");
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
