//! Human durations as flags and manifests write them: `500ms`, `10s`, `1m`, `1h`, `1m30s`.

use std::time::Duration;

use serin_core::duration::{DURATION_FORM, format_duration, parse_duration};

use crate::DemoError;

/// Parses a Go duration such as `500ms`, `10s`, `1.5s`, `1m`, `1h` or `1m30s`. `field` names the
/// flag or field in the error, which also says what is accepted. A bare number is refused because
/// its unit would be a guess.
pub fn parse(field: &str, text: &str) -> Result<Duration, DemoError> {
    parse_duration(text)
        .map_err(|e| DemoError::invalid(field, format!("{e}; write {DURATION_FORM}")))
}

/// Formats a duration the way [`parse`] reads it back, e.g. `1m30s` or `250ms`.
pub fn format(d: Duration) -> String {
    format_duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_unit_and_combinations() {
        assert_eq!(parse("d", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("d", "10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("d", "1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("d", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("d", "1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("d", "1m30s").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn refuses_bare_numbers_unknown_units_and_garbage_naming_the_field() {
        for bad in ["", "10", "10x", "s", "1..2s", "-1s", "1m-3s"] {
            let err = parse("--duration", bad).unwrap_err().to_string();
            assert!(err.contains("--duration"), "{bad}: {err}");
            assert!(err.contains("a duration like"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["250ms", "10s", "1m30s", "2h"] {
            assert_eq!(format(parse("d", text).unwrap()), text);
        }
    }
}
