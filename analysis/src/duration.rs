//! Durations as Flagger and Prometheus write them (`30s`, `1m`, `1m30s`, `500ms`, `2h`).

use std::time::Duration;

use crate::AnalysisError;

const ACCEPTED: &str = "a duration like 30s, 1m, 1m30s, 500ms, 2h or 1d";

/// Parses a duration written as one or more `<integer><unit>` parts, units `ms`, `s`, `m`, `h`,
/// `d`. `field` names the setting in error messages.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, AnalysisError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(AnalysisError::invalid(field, "empty duration", ACCEPTED));
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_ms: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(AnalysisError::invalid(
                field,
                format!("`{text}` has no number before its unit"),
                ACCEPTED,
            ));
        }
        let number: u128 = s[start..i].parse().map_err(|_| {
            AnalysisError::invalid(field, format!("`{text}` is too large"), ACCEPTED)
        })?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor_ms: u128 = match &s[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(AnalysisError::invalid(
                    field,
                    format!("`{text}` has a number without a unit"),
                    ACCEPTED,
                ));
            }
            other => {
                return Err(AnalysisError::invalid(
                    field,
                    format!("`{text}` uses unknown unit `{other}`"),
                    ACCEPTED,
                ));
            }
        };
        total_ms = number
            .checked_mul(factor_ms)
            .and_then(|v| v.checked_add(total_ms))
            .ok_or_else(|| {
                AnalysisError::invalid(field, format!("`{text}` is too large"), ACCEPTED)
            })?;
    }
    if total_ms == 0 {
        return Err(AnalysisError::invalid(
            field,
            format!("`{text}` is zero"),
            "a positive duration like 30s or 1m",
        ));
    }
    let ms = u64::try_from(total_ms)
        .map_err(|_| AnalysisError::invalid(field, format!("`{text}` is too large"), ACCEPTED))?;
    Ok(Duration::from_millis(ms))
}

/// Formats a duration the way PromQL range selectors accept it, using the largest unit that
/// divides it exactly (`1m`, `90s`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    for (unit, factor) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(factor) {
            return format!("{}{unit}", ms / factor);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flagger_and_prometheus_forms() {
        let f = "interval";
        assert_eq!(parse_duration(f, "30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration(f, "1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration(f, "1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration(f, "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration(f, "2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(
            parse_duration(f, " 1d ").unwrap(),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn rejects_bad_durations_naming_the_field() {
        for bad in [
            "",
            "10",
            "m",
            "1x",
            "1.5m",
            "0s",
            "-1m",
            "99999999999999999999999999d",
        ] {
            let err = parse_duration("spec.analysis.metrics[0].interval", bad).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("spec.analysis.metrics[0].interval"),
                "{bad:?}: {text}"
            );
            assert_eq!(err.kind(), "invalid_config");
        }
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    }
}
