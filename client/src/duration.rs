//! Durations as people type them: `500ms`, `5s`, `1.5s`, `2m`, `1h`, or a bare number of
//! seconds.
//!
//! Every kvset command line (`kvsetctl --timeout`, `kvset-chaos run --duration`, `kvset-bench
//! --warmup`, ...) reads durations through [`parse`], so a value that works for one works for
//! all of them, and a mistake gets the same message everywhere. It lives in the SDK because
//! every one of those programs already depends on the SDK, and it needs nothing beyond `std`.
//!
//! [`parse`] allows zero (a gap, a delay); a caller for whom zero makes no sense (a timeout)
//! checks that itself, with its own words.

use std::time::Duration;

/// Why a text is not a duration. The message names the text and says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDurationError {
    /// No number in front of the unit (`fast`, `s`, an empty text).
    #[error("{0:?} is not a duration; use e.g. 500ms, 5s, 1m")]
    NotANumber(String),
    /// A unit other than `ms`, `s`, `m` (or `min`) and `h`.
    #[error("unknown unit {0:?}; use ms, s, m or h")]
    UnknownUnit(String),
    /// Negative, not finite, or too long (a billion seconds or more).
    #[error("{0:?} is not a valid duration")]
    OutOfRange(String),
}

/// Parses `500ms`, `5s`, `1.5s`, `2m` (or `2min`), `1h`, or a bare number of seconds (`3`).
/// Surrounding whitespace, and whitespace between the number and the unit, are ignored. Zero is
/// allowed.
///
/// ```
/// use std::time::Duration;
/// use kvset_client::duration;
///
/// assert_eq!(duration::parse("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(duration::parse("2m"), Ok(Duration::from_secs(120)));
/// assert!(duration::parse("5 parsecs").is_err());
/// ```
pub fn parse(text: &str) -> Result<Duration, ParseDurationError> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| ParseDurationError::NotANumber(s.to_string()))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(ParseDurationError::UnknownUnit(other.to_string())),
    };
    if !(secs >= 0.0 && secs.is_finite() && secs < 1e9) {
        return Err(ParseDurationError::OutOfRange(s.to_string()));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse(" 10 s "), Ok(Duration::from_secs(10)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO), "zero is allowed");
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            parse("fast").unwrap_err().to_string(),
            "\"fast\" is not a duration; use e.g. 500ms, 5s, 1m"
        );
        assert_eq!(
            parse("5 parsecs").unwrap_err().to_string(),
            "unknown unit \"parsecs\"; use ms, s, m or h"
        );
        assert!(matches!(parse(""), Err(ParseDurationError::NotANumber(_))));
        assert!(matches!(parse("s"), Err(ParseDurationError::NotANumber(_))));
        assert!(matches!(
            parse("1.2.3s"),
            Err(ParseDurationError::NotANumber(_))
        ));
        assert!(matches!(
            parse("1e12"),
            Err(ParseDurationError::UnknownUnit(_))
        ));
        assert!(matches!(
            parse("9999999999"),
            Err(ParseDurationError::OutOfRange(_))
        ));
    }
}
