//! `kubectl wave`: the release manager's view of waves and plans, and the actions they
//! take on them (approve, pause, resume, roll back, retry, pass a gate).
//!
//! The views ([`view`]) and the checks and patches behind each action ([`act`]) are pure
//! functions of the objects and the time, so they are tested on fixtures; [`commands`]
//! talks to the API server.

pub mod act;
pub mod commands;
pub mod view;

use jiff::{SignedDuration, Timestamp};

/// Terminal styling: ANSI colors when writing to a terminal, plain text otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    color: bool,
}

/// A color (or weight) a piece of output is shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// Headings and the current step.
    Bold,
    /// Done, healthy, passing.
    Good,
    /// Waiting on someone, held, no data.
    Warn,
    /// Rolled back, breached, failing.
    Bad,
    /// Moving on its own.
    Active,
    /// Secondary detail.
    Dim,
}

impl Style {
    /// Plain text.
    pub const PLAIN: Style = Style { color: false };
    /// ANSI colors.
    pub const COLOR: Style = Style { color: true };

    /// Colors only when `is_terminal` and the user has not set `NO_COLOR`.
    pub fn for_terminal(is_terminal: bool) -> Self {
        Style {
            color: is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    /// Whether colors are on.
    pub fn colored(self) -> bool {
        self.color
    }

    /// `text` in `tone`.
    pub fn paint(self, tone: Tone, text: &str) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match tone {
            Tone::Bold => "1",
            Tone::Good => "32",
            Tone::Warn => "33",
            Tone::Bad => "31",
            Tone::Active => "36",
            Tone::Dim => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// `text` padded to `width` columns, then painted, so that colors keep columns aligned.
    pub fn pad(self, tone: Tone, text: &str, width: usize) -> String {
        let padding = width.saturating_sub(text.chars().count());
        format!("{}{}", self.paint(tone, text), " ".repeat(padding))
    }
}

/// A span of time as people read it on a dashboard: `3d4h`, `5h12m`, `4m30s`, `12s`.
pub fn span(d: SignedDuration) -> String {
    let secs = d.as_secs().max(0);
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m{seconds}s"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

/// `in 5m12s` or `5m12s ago`, from `now` to `at`.
pub fn relative(now: Timestamp, at: Timestamp) -> String {
    let d = at.duration_since(now);
    if d.is_negative() {
        format!("{} ago", span(-d))
    } else {
        format!("in {}", span(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_keep_two_units() {
        assert_eq!(span(SignedDuration::from_secs(12)), "12s");
        assert_eq!(span(SignedDuration::from_secs(270)), "4m30s");
        assert_eq!(span(SignedDuration::from_secs(5 * 3600 + 720)), "5h12m");
        assert_eq!(span(SignedDuration::from_secs(72 * 3600)), "3d0h");
        assert_eq!(span(SignedDuration::from_secs(-5)), "0s");
    }

    #[test]
    fn relative_times_say_which_way() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        assert_eq!(relative(now, later), "in 5m0s");
        assert_eq!(relative(later, now), "5m0s ago");
    }

    #[test]
    fn colors_only_when_asked() {
        assert_eq!(Style::PLAIN.paint(Tone::Bad, "x"), "x");
        assert_eq!(Style::COLOR.paint(Tone::Bad, "x"), "\x1b[31mx\x1b[0m");
        assert_eq!(Style::COLOR.pad(Tone::Good, "ab", 4), "\x1b[32mab\x1b[0m  ");
    }
}
