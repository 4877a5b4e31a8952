//! Durations as Go's `time.ParseDuration` (and so Flagger) reads them, shared by every Serin crate: `10s`, `1m`, `1m30s`,
//! `1.5h`, `250ms`.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string was empty.
    #[error("empty duration")]
    Empty,
    /// A number had no unit, e.g. `60`.
    #[error("{0:?} has no unit")]
    NoUnit(String),
    /// A unit is not one of ns, us, ms, s, m, h.
    #[error("{unit:?} in {value:?} is not a unit (units: ns, us, ms, s, m, h)")]
    UnknownUnit {
        /// The whole input.
        value: String,
        /// The offending unit.
        unit: String,
    },
    /// Something other than digits, a decimal point and units.
    #[error("{0:?} is not a duration")]
    Malformed(String),
    /// A leading minus sign.
    #[error("{0:?} is negative")]
    Negative(String),
}

/// What every duration error message offers as the accepted form.
pub const DURATION_FORM: &str = "a duration like 10s, 1m, 1m30s or 1h";

/// Parses a Go duration. `0` alone is accepted (zero); negative durations are rejected.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if let Some(rest) = s.strip_prefix('-') {
        // Go accepts "-0"; nothing else negative makes sense for a timeout or interval.
        if rest.chars().all(|c| c == '0') && !rest.is_empty() {
            return Ok(Duration::ZERO);
        }
        return Err(DurationError::Negative(input.to_string()));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let malformed = || DurationError::Malformed(input.to_string());
    let mut rest = s;
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(malformed());
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        if unit.is_empty() {
            return Err(DurationError::NoUnit(input.to_string()));
        }
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => {
                return Err(DurationError::UnknownUnit {
                    value: input.to_string(),
                    unit: unit.to_string(),
                });
            }
        };
        let value: f64 = number.parse().map_err(|_| malformed())?;
        total_nanos += value * scale;
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return Err(malformed());
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// [`parse_duration`] for command-line flags (a clap `value_parser`): the error says what was
/// wrong and what is accepted, and clap prefixes it with the flag's name.
pub fn parse_flag(input: &str) -> Result<Duration, String> {
    parse_duration(input).map_err(|e| {
        format!("{e}; accepted: a number with a unit, e.g. 10s, 1m30s, 1.5m, 1h, 500ms")
    })
}

/// Formats a duration the way Flagger users write them: `1m30s`, `10s`, `1h`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 {
        return "0s".to_string();
    }
    if !total_ms.is_multiple_of(1000) {
        return format!("{total_ms}ms");
    }
    let secs = d.as_secs();
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
    fn go_durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h45m"), Ok(Duration::from_secs(9900)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("+5s"), Ok(Duration::from_secs(5)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("60"),
            Err(DurationError::NoUnit("60".into()))
        );
        assert_eq!(
            parse_duration("1m30"),
            Err(DurationError::NoUnit("1m30".into()))
        );
        assert!(
            matches!(parse_duration("5d"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "d")
        );
        assert!(matches!(
            parse_duration("1 m"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert_eq!(
            parse_duration("-5s"),
            Err(DurationError::Negative("-5s".into()))
        );
        assert_eq!(
            parse_duration("s"),
            Err(DurationError::Malformed("s".into()))
        );
        assert_eq!(
            parse_duration("1..5s"),
            Err(DurationError::Malformed("1..5s".into()))
        );
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["10s", "1m", "1m30s", "1h", "2h45m", "250ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
    }
}
