//! A CloudWatch stand-in that checks what it receives as AWS does: every request must carry a
//! valid AWS Signature Version 4 for a known access key, the right region and service, and a
//! current date, or it gets AWS's own error shapes. The check is written here over `ring`,
//! independently of the `aws-sigv4` signer the provider uses, so that the two implementations
//! hold each other to the protocol (and both to AWS's published test-suite vectors).

use std::time::{Duration, SystemTime};

use super::{Answer, FakeApi, Script, SeenRequest};

/// An error as AWS's JSON protocol answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// HTTP status.
    pub status: u16,
    /// The exception name (`__type`).
    pub type_: &'static str,
    /// The message.
    pub message: String,
}

impl AwsError {
    fn new(status: u16, type_: &'static str, message: impl Into<String>) -> Self {
        AwsError {
            status,
            type_,
            message: message.into(),
        }
    }

    /// The answer AWS sends for it (`application/x-amz-json-1.0`).
    pub fn answer(&self) -> Answer {
        Answer::json(
            self.status,
            serde_json::json!({"__type": self.type_, "message": self.message}).to_string(),
        )
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, data).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters kept, all else `%XX` (upper case).
fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
/// Signature=...` header.
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return None,
        }
    }
    let mut scope = credential?.split('/');
    let a = Authorization {
        access_key_id: scope.next()?,
        date: scope.next()?,
        region: scope.next()?,
        service: scope.next()?,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    };
    (scope.next()? == "aws4_request" && scope.next().is_none()).then_some(a)
}

/// `x-amz-date` (`20150830T123600Z`) as a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let t: jiff::Timestamp = format!(
        "{}-{}-{}T{}:{}:{}Z",
        s.get(0..4)?,
        s.get(4..6)?,
        s.get(6..8)?,
        s.get(9..11)?,
        s.get(11..13)?,
        s.get(13..15)?
    )
    .parse()
    .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.as_second()).ok()?))
}

/// Checks `req`'s SigV4 signature as AWS would for `service` in `region` at `now`. `keys` are
/// the known `(access key id, secret access key, session token)`s.
pub fn check_sigv4(
    req: &SeenRequest,
    keys: &[(String, String, Option<String>)],
    region: &str,
    service: &str,
    now: SystemTime,
) -> Result<(), AwsError> {
    let header = |name: &str| -> Option<String> {
        let values: Vec<String> = req
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    let Some(authorization) = header("authorization") else {
        return Err(AwsError::new(
            400,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let Some(auth) = parse_authorization(&authorization) else {
        return Err(AwsError::new(
            400,
            "IncompleteSignatureException",
            format!(
                "Authorization header requires Credential, SignedHeaders and Signature: {authorization}"
            ),
        ));
    };
    let Some((_, secret, token)) = keys.iter().find(|(id, _, _)| id == auth.access_key_id) else {
        return Err(AwsError::new(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    };
    if header("x-amz-security-token") != *token {
        return Err(AwsError::new(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if auth.region != region || auth.service != service {
        return Err(AwsError::new(
            403,
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to a valid region and service: expected {region}/{service}, got {}/{}",
                auth.region, auth.service
            ),
        ));
    }
    let Some(amz_date) = header("x-amz-date") else {
        return Err(AwsError::new(
            400,
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        ));
    };
    let Some(signed_at) =
        parse_amz_date(&amz_date).filter(|_| amz_date.get(..8) == Some(auth.date))
    else {
        return Err(AwsError::new(
            403,
            "InvalidSignatureException",
            format!(
                "X-Amz-Date {amz_date} does not match the credential date {}",
                auth.date
            ),
        ));
    };
    let skew = now
        .duration_since(signed_at)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap_or_default();
    if skew > Duration::from_secs(300) {
        return Err(AwsError::new(
            403,
            "InvalidSignatureException",
            format!("Signature expired: {amz_date} is more than 5 minutes from the server's time"),
        ));
    }
    for required in ["host", "x-amz-date"].into_iter().chain(
        req.headers
            .contains_key("x-amz-security-token")
            .then_some("x-amz-security-token"),
    ) {
        if !auth.signed_headers.contains(&required) {
            return Err(AwsError::new(
                403,
                "InvalidSignatureException",
                format!("'{required}' must be a signed header"),
            ));
        }
    }
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        canonical_headers.push_str(&format!("{name}:{}\n", header(name).unwrap_or_default()));
    }
    let path = if req.path.is_empty() { "/" } else { &req.path };
    let canonical_uri = path
        .split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/");
    let mut pairs: Vec<(String, String)> = req
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k)),
                uri_encode(&percent_decode(v)),
            )
        })
        .collect();
    pairs.sort();
    let canonical_query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request = format!(
        "{}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{}\n{}",
        req.method,
        auth.signed_headers.join(";"),
        sha256_hex(req.body.as_bytes())
    );
    let scope = format!("{}/{region}/{service}/aws4_request", auth.date);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex(&hmac(&key, string_to_sign.as_bytes()));
    if expected != auth.signature {
        return Err(AwsError::new(
            403,
            "InvalidSignatureException",
            format!(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.\n\nThe Canonical String for this request should have been\n'{canonical_request}'\n\nThe String-to-Sign should have been\n'{string_to_sign}'"
            ),
        ));
    }
    Ok(())
}

/// A CloudWatch `GetMetricData` endpoint for `region`: a request signed with one of `keys` for
/// the service `monitoring`, with CloudWatch's JSON-protocol target and content type, gets the
/// next scripted answer; anything else gets AWS's error for it.
pub async fn fake_cloudwatch(
    keys: Vec<(String, String, Option<String>)>,
    region: &str,
    script: Vec<Answer>,
) -> FakeApi {
    let region = region.to_string();
    let script = Script::new(script);
    FakeApi::serve(move |req| {
        if let Err(e) = check_sigv4(req, &keys, &region, "monitoring", SystemTime::now()) {
            return e.answer();
        }
        if req.method != "POST"
            || req.header("x-amz-target") != Some("GraniteServiceVersion20100801.GetMetricData")
            || req.header("content-type") != Some("application/x-amz-json-1.0")
        {
            return AwsError::new(
                400,
                "UnknownOperationException",
                format!(
                    "expected POST with X-Amz-Target GraniteServiceVersion20100801.GetMetricData and application/x-amz-json-1.0, got {} {:?} {:?}",
                    req.method,
                    req.header("x-amz-target"),
                    req.header("content-type")
                ),
            )
            .answer();
        }
        script.next()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE: (&str, &str) = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");

    fn suite_request(
        method: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &str,
        signature: &str,
        signed: &str,
    ) -> SeenRequest {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers.iter().copied().chain([
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
        ]) {
            map.append(
                http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        map.insert(
            "authorization",
            http::HeaderValue::from_str(&format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={signature}"
            ))
            .unwrap(),
        );
        SeenRequest {
            method: method.into(),
            path: "/".into(),
            query: query.into(),
            headers: map,
            body: body.into(),
        }
    }

    fn at_suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn check(req: &SeenRequest) -> Result<(), AwsError> {
        let keys = [(SUITE.0.to_string(), SUITE.1.to_string(), None)];
        check_sigv4(req, &keys, "us-east-1", "service", at_suite_time())
    }

    #[test]
    fn the_published_test_suite_requests_verify() {
        // get-vanilla
        check(&suite_request(
            "GET",
            "",
            &[],
            "",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "host;x-amz-date",
        ))
        .unwrap();
        // get-vanilla-query-order-key-case
        check(&suite_request(
            "GET",
            "Param2=value2&Param1=value1",
            &[],
            "",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            "host;x-amz-date",
        ))
        .unwrap();
        // get-header-value-trim
        check(&suite_request(
            "GET",
            "",
            &[("My-Header1", " value1"), ("My-Header2", "\"a   b   c\"")],
            "",
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            "host;my-header1;my-header2;x-amz-date",
        ))
        .unwrap();
        // post-x-www-form-urlencoded
        check(&suite_request(
            "POST",
            "",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            "Param1=value1",
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
            "content-type;host;x-amz-date",
        ))
        .unwrap();
    }

    #[test]
    fn a_changed_request_a_wrong_key_or_an_old_date_is_refused_as_aws_does() {
        let vanilla = || {
            suite_request(
                "GET",
                "",
                &[],
                "",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
                "host;x-amz-date",
            )
        };
        let mut changed = vanilla();
        changed.query = "Param1=value1".into();
        assert_eq!(
            check(&changed).unwrap_err().type_,
            "InvalidSignatureException"
        );
        let wrong_secret = [(SUITE.0.to_string(), "other".to_string(), None)];
        assert_eq!(
            check_sigv4(
                &vanilla(),
                &wrong_secret,
                "us-east-1",
                "service",
                at_suite_time()
            )
            .unwrap_err()
            .type_,
            "InvalidSignatureException"
        );
        let unknown = [("AKIDOTHER".to_string(), SUITE.1.to_string(), None)];
        assert_eq!(
            check_sigv4(
                &vanilla(),
                &unknown,
                "us-east-1",
                "service",
                at_suite_time()
            )
            .unwrap_err()
            .type_,
            "UnrecognizedClientException"
        );
        let late = at_suite_time() + Duration::from_secs(301);
        let keys = [(SUITE.0.to_string(), SUITE.1.to_string(), None)];
        let err = check_sigv4(&vanilla(), &keys, "us-east-1", "service", late).unwrap_err();
        assert!(err.message.contains("Signature expired"), "{err:?}");
        let err =
            check_sigv4(&vanilla(), &keys, "eu-west-1", "service", at_suite_time()).unwrap_err();
        assert!(err.message.contains("scoped"), "{err:?}");
        let mut unsigned = vanilla();
        unsigned.headers.remove("authorization");
        assert_eq!(
            check(&unsigned).unwrap_err().type_,
            "MissingAuthenticationTokenException"
        );
    }
}
