//! Durations in the API are strings such as `90s`, `20m`, `72h` or `1h30m`, the same
//! notation as Go's `time.ParseDuration` without signs, so that `kubectl` users write what
//! they already know from other Kubernetes resources.

use std::{fmt, time::Duration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The pattern the API server enforces. Kept next to the parser so the two cannot drift;
/// a unit test checks that both accept and reject the same strings.
///
/// Whole numbers have at most [`MAX_HOUR_DIGITS`] digits before `h` and at most
/// [`MAX_OTHER_DIGITS`] before `m`, `s` or `ms`. With the length limit of
/// [`MAX_DURATION_LENGTH`] characters this bounds every string the pattern accepts below
/// about 670,000 hours, far inside the range of the API server's CEL `duration()` (Go's
/// `time.Duration`, about 2,562,047 hours): the bound rules of each field (see
/// [`bounds_rule`]) can never overflow, so an absurd duration is refused with a message,
/// not with an evaluation error.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,5}(\.[0-9]+)?h|[0-9]{1,7}(\.[0-9]+)?(ms|s|m))+$";

/// The longest duration string the API server accepts.
pub const MAX_DURATION_LENGTH: usize = 32;
/// At most this many digits before the decimal point of an `h` number (99999h, 11 years).
pub const MAX_HOUR_DIGITS: usize = 5;
/// At most this many digits before the decimal point of an `m`, `s` or `ms` number.
pub const MAX_OTHER_DIGITS: usize = 7;

/// The longest step or freeze window: 366 days, a year with its leap day.
pub const MAX_SPAN: &str = "8784h";
/// The shortest step or freeze window, and the shortest analysis interval: status
/// timestamps have whole seconds, so anything shorter could not be told from zero.
pub const MIN_SPAN: &str = "1s";
/// The longest analysis interval: a metric looked at less often than hourly guards
/// nothing a release manager could not check by hand.
pub const MAX_INTERVAL: &str = "1h";

/// A CEL rule for one duration field: at least `min` and at most `max` (both in the
/// API's notation), with a message that names the field. It only compares strings the
/// pattern accepts (the pattern's own rule reports the others), and those parse in
/// range, so the rule never fails to evaluate.
pub fn bounds_rule(field: &str, min: &str, max: &str, why: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!(
        "!(self.size() <= {MAX_DURATION_LENGTH} && self.matches('{}')) || \
         (duration(self) >= duration('{min}') && duration(self) <= duration('{max}'))",
        cel_pattern()
    ))
    .message(kube::core::Message::Message(format!(
        "{field} must be at least {min} and at most {max}{why}"
    )))
}

/// [`DURATION_PATTERN`] as a CEL single-quoted string literal's content.
fn cel_pattern() -> String {
    DURATION_PATTERN.replace('\\', "\\\\")
}

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
        let (unit_secs, unit_len, max_digits) = if after.starts_with("ms") {
            (0.001, 2, MAX_OTHER_DIGITS)
        } else if after.starts_with('s') {
            (1.0, 1, MAX_OTHER_DIGITS)
        } else if after.starts_with('m') {
            (60.0, 1, MAX_OTHER_DIGITS)
        } else if after.starts_with('h') {
            (3600.0, 1, MAX_HOUR_DIGITS)
        } else {
            return Err(fail("the unit must be ms, s, m or h"));
        };
        if number.split('.').next().map_or(0, str::len) > max_digits {
            return Err(fail(
                "a number has too many digits (at most 99999h, or 9999999 m, s or ms)",
            ));
        }
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
            "maxLength": MAX_DURATION_LENGTH,
            "x-kubernetes-validations": [{
                "rule": format!("self.matches('{}')", cel_pattern()),
                "message": "must be a duration such as 90s, 20m, 72h or 1h30m (units: ms, s, m, h; at most 99999h)"
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
            "",
            "10",
            "m",
            "1d",
            "1.h",
            ".5h",
            "1h 30m",
            "-5m",
            "5M",
            "1..5s",
            "h1",
            "99999999999999999999h",
            "100000h",
            "10000000m",
            "10000000ms",
        ] {
            assert!(parse_duration(bad).is_err(), "parser accepted {bad:?}");
            assert!(!re.is_match(bad), "pattern accepted {bad:?}");
        }
        for good in [
            "1h30m",
            "90s",
            "0.5s",
            "10ms",
            "72h",
            "1h1m1s1ms",
            "99999h",
            "9999999s",
            "1.25h",
        ] {
            assert!(parse_duration(good).is_ok(), "parser rejected {good:?}");
            assert!(re.is_match(good), "pattern rejected {good:?}");
        }
    }

    #[test]
    fn whatever_the_pattern_accepts_is_far_inside_go_durations() {
        // The API server's CEL duration() is Go's time.Duration: about 2,562,047h. The
        // largest value per character the pattern allows is a 7-digit number of
        // minutes; a string of the longest length made of those stays far below.
        let worst = "9999999m".repeat(MAX_DURATION_LENGTH / 8);
        assert_eq!(worst.len(), MAX_DURATION_LENGTH);
        let re = regex_lite::Regex::new(DURATION_PATTERN).unwrap();
        assert!(re.is_match(&worst));
        let go_max = Duration::from_nanos(i64::MAX as u64);
        assert!(parse_duration(&worst).unwrap() < go_max / 3, "{worst}");
        let hours = "99999.999h".repeat(3) + "9h";
        assert!(hours.len() <= MAX_DURATION_LENGTH && re.is_match(&hours));
        assert!(parse_duration(&hours).unwrap() < go_max / 3);
    }

    #[test]
    fn bounds_are_durations_the_pattern_accepts() {
        let re = regex_lite::Regex::new(DURATION_PATTERN).unwrap();
        for bound in [MIN_SPAN, MAX_SPAN, MAX_INTERVAL] {
            assert!(
                re.is_match(bound) && parse_duration(bound).is_ok(),
                "{bound}"
            );
        }
        assert!(parse_duration(MIN_SPAN).unwrap() < parse_duration(MAX_INTERVAL).unwrap());
        assert!(parse_duration(MAX_INTERVAL).unwrap() < parse_duration(MAX_SPAN).unwrap());
    }

    #[test]
    fn error_message_says_what_to_write() {
        let err = parse_duration("3 days").unwrap_err().to_string();
        assert!(err.contains("\"3 days\""), "{err}");
        assert!(err.contains("like 90s, 20m, 72h or 1h30m"), "{err}");
    }
}
