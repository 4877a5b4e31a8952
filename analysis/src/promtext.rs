//! A small parser for the Prometheus text exposition format (version 0.0.4), enough to read
//! `serin-proxy`'s (and Linkerd's) `/metrics`: comments, labels with escapes, special floats and
//! optional timestamps. `# HELP` / `# TYPE` lines are skipped: the names say what a series is.

use crate::AnalysisError;

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, including any `_bucket` / `_count` / `_sum` suffix.
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The sample value (may be NaN or infinite).
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a whole exposition page.
pub fn parse(text: &str) -> Result<Vec<Sample>, AnalysisError> {
    let mut samples = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        samples.push(parse_line(line).map_err(|message| AnalysisError::Parse {
            line: index + 1,
            message,
        })?);
    }
    Ok(samples)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let mut chars = line.char_indices().peekable();
    match chars.peek() {
        Some((_, c)) if is_name_start(*c) => {}
        _ => return Err(format!("expected a metric name, found `{line}`")),
    }
    let mut name_end = line.len();
    while let Some(&(i, c)) = chars.peek() {
        if !is_name_char(c) {
            name_end = i;
            break;
        }
        chars.next();
    }
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after)?;
        labels = parsed;
        rest = remaining;
    }
    let mut fields = rest.split_whitespace();
    let value_text = fields
        .next()
        .ok_or_else(|| format!("`{name}` has no value"))?;
    let value = parse_float(value_text).ok_or_else(|| format!("`{value_text}` is not a number"))?;
    if let Some(ts) = fields.next()
        && ts.parse::<i64>().is_err()
    {
        return Err(format!("`{ts}` is not a timestamp"));
    }
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected `{extra}` after the timestamp"));
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

type Labels = Vec<(String, String)>;

fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let name_len = s
            .char_indices()
            .find(|&(i, c)| {
                !(if i == 0 {
                    is_name_start(c)
                } else {
                    is_name_char(c)
                }) || c == ':'
            })
            .map(|(i, _)| i)
            .unwrap_or(s.len());
        if name_len == 0 {
            return Err(format!("expected a label name at `{s}`"));
        }
        let key = s[..name_len].to_string();
        s = s[name_len..].trim_start();
        s = s
            .strip_prefix('=')
            .ok_or_else(|| format!("expected `=` after label `{key}`"))?
            .trim_start();
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("expected `\"` to open the value of label `{key}`"))?;
        let mut value = String::new();
        let mut iter = s.char_indices();
        let end = loop {
            match iter.next() {
                None => return Err(format!("unterminated value of label `{key}`")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match iter.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => return Err(format!("unterminated value of label `{key}`")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key, value));
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("expected `,` or `}}` after a label at `{s}`"));
        }
    }
}

/// Parses a sample value: a float, `+Inf`, `-Inf` or `NaN` (case-insensitive specials).
pub fn parse_float(text: &str) -> Option<f64> {
    match text.to_ascii_lowercase().as_str() {
        "+inf" | "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => text.parse::<f64>().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_linkerd_style_page() {
        let page = r#"
# HELP request_total Total count of HTTP requests.
# TYPE request_total counter
request_total{direction="outbound",authority="podinfo:9898",dst_service="podinfo-canary"} 42
response_total{direction="outbound",dst_service="podinfo-canary",classification="failure",status_code="503"} 3 1700000000000
response_latency_ms_bucket{direction="outbound",dst_service="podinfo-canary",le="+Inf"} 42
weird{msg="a \"quoted\" \\ value\nnext"} NaN
no_labels 1.5e3
"#;
        let samples = parse(page).unwrap();
        assert_eq!(samples.len(), 5);
        assert_eq!(samples[0].name, "request_total");
        assert_eq!(samples[0].label("dst_service"), Some("podinfo-canary"));
        assert_eq!(samples[0].value, 42.0);
        assert_eq!(samples[1].label("status_code"), Some("503"));
        assert_eq!(samples[2].label("le"), Some("+Inf"));
        assert_eq!(samples[3].label("msg"), Some("a \"quoted\" \\ value\nnext"));
        assert!(samples[3].value.is_nan());
        assert_eq!(samples[4].value, 1500.0);
        assert!(samples[4].labels.is_empty());
    }

    #[test]
    fn reports_the_line_of_a_bad_sample() {
        for (page, line) in [
            ("ok 1\nbroken{a=\"1\" 2\n", 2),
            ("ok 1\n\nx{a=1} 2\n", 3),
            ("x notanumber\n", 1),
            ("x 1 notatimestamp\n", 1),
            ("{a=\"b\"} 1\n", 1),
            ("x{a=\"unterminated} 1\n", 1),
            ("x\n", 1),
        ] {
            match parse(page) {
                Err(AnalysisError::Parse { line: got, .. }) => assert_eq!(got, line, "{page:?}"),
                other => panic!("{page:?}: expected a parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn parses_special_floats() {
        assert_eq!(parse_float("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_float("-Inf"), Some(f64::NEG_INFINITY));
        assert!(parse_float("NaN").unwrap().is_nan());
        assert_eq!(parse_float("0.25"), Some(0.25));
        assert_eq!(parse_float("x"), None);
    }
}
