//! Human durations as flags and manifests write them: `500ms`, `10s`, `1m`, `1h`, `1m30s`.

use std::time::Duration;

use crate::DemoError;

/// Parses a duration such as `500ms`, `10s`, `1.5s`, `1m`, `1h` or `1m30s`. `field` names the flag
/// or field in the error, which also says what is accepted. A bare number is refused because its
/// unit would be a guess.
pub fn parse(field: &str, text: &str) -> Result<Duration, DemoError> {
    let bad = || {
        DemoError::invalid(
            field,
            format!(
                "`{text}` is not a duration; write a number with a unit: ms, s, m or h (e.g. 500ms, 10s, 1m, 1m30s)"
            ),
        )
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(bad()),
        };
        total += seconds;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 365.0 * 24.0 * 3600.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration the way [`parse`] reads it back, e.g. `1m30s` or `250ms`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
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
            assert!(err.contains("ms, s, m or h"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["250ms", "10s", "1m30s", "2h"] {
            assert_eq!(format(parse("d", text).unwrap()), text);
        }
    }
}
