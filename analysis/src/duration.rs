//! Durations as Flagger and Prometheus write them (`30s`, `1m`, `1m30s`, `500ms`, `2h`).

use std::time::Duration;

use serin_core::duration::{DURATION_FORM, parse_duration as parse_go};

use crate::AnalysisError;

/// Parses a Go duration (the form Flagger's spec uses) for an analysis setting. `field` names the
/// setting in error messages. Zero and sub-millisecond windows are refused: a PromQL range and a
/// scrape spacing need a positive whole number of milliseconds.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, AnalysisError> {
    let d =
        parse_go(text).map_err(|e| AnalysisError::invalid(field, e.to_string(), DURATION_FORM))?;
    if d.is_zero() {
        return Err(AnalysisError::invalid(
            field,
            format!("`{text}` is zero"),
            "a positive duration like 30s or 1m",
        ));
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(AnalysisError::invalid(
            field,
            format!("`{text}` is finer than a millisecond"),
            DURATION_FORM,
        ));
    }
    Ok(d)
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
            parse_duration(f, " 1.5m ").unwrap(),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn rejects_bad_durations_naming_the_field() {
        for bad in [
            "",
            "10",
            "m",
            "1x",
            "1d",
            "1500us",
            "0s",
            "-1m",
            "99999999999999999999999999h",
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
