//! Durations in the API are strings such as `90s`, `20m`, `72h` or `1h30m`, the same
//! notation as Go's `time.ParseDuration` without signs, so that `kubectl` users write what
//! they already know from other Kubernetes resources.

use std::{fmt, time::Duration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The pattern the API server enforces. Kept next to the parser so the two cannot drift;
/// a unit test checks that both accept and reject the same strings.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A duration written as a string, for example `30s`, `20m`, `72h` or `1h30m`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DurationString(String);

/// Why a duration string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a duration: {problem} (write it like 90s, 20m, 72h or 1h30m)")]
pub struct DurationParseError {
    input: String,
    problem: &'static str,
}

impl DurationString {
    /// Wraps a string without checking it; use [`DurationString::parse`] to check it.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The string as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The duration this string denotes.
    pub fn parse(&self) -> Result<Duration, DurationParseError> {
        parse_duration(&self.0)
    }
}

impl fmt::Display for DurationString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for DurationString {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// Parses `1h30m`, `90s`, `1.5h`, `250ms`: one or more number-unit pairs.
pub fn parse_duration(input: &str) -> Result<Duration, DurationParseError> {
    let fail = |problem| DurationParseError {
        input: input.to_owned(),
        problem,
    };
    if input.is_empty() {
        return Err(fail("it is empty"));
    }
    let mut rest = input;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| fail("a number has no unit"))?;
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() {
            return Err(fail("a unit has no number before it"));
        }
        let valid_number = match number.split_once('.') {
            None => true,
            Some((whole, frac)) => !whole.is_empty() && !frac.is_empty() && !frac.contains('.'),
        };
        if !valid_number {
            return Err(fail("a number is malformed"));
        }
        let value: f64 = number.parse().map_err(|_| fail("a number is malformed"))?;
        let (unit_secs, unit_len) = if after.starts_with("ms") {
            (0.001, 2)
        } else if after.starts_with('s') {
            (1.0, 1)
        } else if after.starts_with('m') {
            (60.0, 1)
        } else if after.starts_with('h') {
            (3600.0, 1)
        } else {
            return Err(fail("the unit must be ms, s, m or h"));
        };
        let part =
            Duration::try_from_secs_f64(value * unit_secs).map_err(|_| fail("it is too long"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| fail("it is too long"))?;
        rest = &after[unit_len..];
    }
    Ok(total)
}

impl JsonSchema for DurationString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DurationString".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 32,
            "x-kubernetes-validations": [{
                "rule": format!("self.matches('{}')", DURATION_PATTERN.replace('\\', "\\\\")),
                "message": "must be a duration such as 90s, 20m, 72h or 1h30m (units: ms, s, m, h)"
            }]
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("72h").unwrap(),
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_what_the_api_server_rejects() {
        let re = regex_lite::Regex::new(DURATION_PATTERN).unwrap();
        for bad in [
            "", "10", "m", "1d", "1.h", ".5h", "1h 30m", "-5m", "5M", "1..5s", "h1",
        ] {
            assert!(parse_duration(bad).is_err(), "parser accepted {bad:?}");
            assert!(!re.is_match(bad), "pattern accepted {bad:?}");
        }
        for good in ["1h30m", "90s", "0.5s", "10ms", "72h", "1h1m1s1ms"] {
            assert!(parse_duration(good).is_ok(), "parser rejected {good:?}");
            assert!(re.is_match(good), "pattern rejected {good:?}");
        }
    }

    #[test]
    fn error_message_says_what_to_write() {
        let err = parse_duration("3 days").unwrap_err().to_string();
        assert!(err.contains("\"3 days\""), "{err}");
        assert!(err.contains("like 90s, 20m, 72h or 1h30m"), "{err}");
    }
}
