//! Freeze windows: when a plan may make no forward progress.
//!
//! A [`FreezeWindow`] opens each time its five-field cron schedule fires, read in its
//! time zone, and stays open for its duration. While any window is open, no wave moves
//! forward (rollbacks are always allowed). This module is pure: [`parse`] checks a
//! window once, and [`evaluate`] says whether a freeze is in force at a given `now` and
//! until when, with no clock and no I/O.
//!
//! # Schedules
//!
//! Schedules are read by the [`croner`] crate, which follows POSIX/Vixie cron:
//!
//! - exactly five fields: minute (0-59), hour (0-23), day-of-month (1-31), month (1-12
//!   or `JAN`-`DEC`) and day-of-week (0-7 or `SUN`-`SAT`; 0 and 7 are Sunday);
//! - `*`, lists (`1,15`), ranges (`1-5`) and steps (`*/15`, `0-30/10`). A step needs `*`
//!   or a range before it: write `5-59/5`, not `5/5`;
//! - when both day fields are restricted (neither is exactly `*`), a day matches if
//!   *either* matches, as in POSIX cron: `0 0 1 * MON` fires on the 1st and on every
//!   Monday. (A field such as `*/2` counts as restricted; Vixie cron would treat it as
//!   `*` because it starts with one.) A `+` before the day-of-week field asks for both;
//! - croner's extensions `L` (last day, or last given weekday), `W` (nearest weekday),
//!   `#` (nth weekday) and `?` (same as `*`) are accepted.
//!
//! Month and day names are accepted only in their own fields (croner alone would read
//! `0 0 * * JAN` as Mondays), and a schedule that never fires on any date, such as
//! `0 0 30 2 *`, is rejected rather than silently never freezing.
//!
//! # Time zones and daylight saving
//!
//! The time zone is an IANA name looked up in the copy of the time zone database that is
//! built into the binary (jiff's bundled tzdb), so the answer does not depend on the
//! machine's `/usr/share/zoneinfo` and works in images that have none. No time zone
//! means UTC.
//!
//! A window opens at instants on the absolute time line and stays open for exactly its
//! duration of real time: a `2h` window that opens just before a clock change closes
//! two real hours later, whatever the wall clock says then. When the schedule meets a
//! clock change, the opening instants are what croner computes, which follows the Open
//! Cron Pattern Specification (and Vixie cron for the common cases):
//!
//! - **Fixed-time schedules** (a single minute and a single hour, such as `30 2 * * *`):
//!   - when the clock springs forward over the scheduled time (02:30 does not exist),
//!     the window opens once, at the first instant after the gap (03:00 in
//!     `Europe/Berlin` on the last Sunday of March);
//!   - when the clock falls back and the scheduled time happens twice, the window opens
//!     once, at the first of the two instants (02:30 CEST, not again at 02:30 CET).
//! - **Other schedules** (wildcards, steps, lists or ranges in the minute or hour, such
//!   as `*/30 * * * *` or `30 1,2 * * *`): each real instant whose wall clock time
//!   matches is one occurrence. Scheduled times inside a spring-forward gap do not
//!   happen and are skipped; in a repeated hour, a matching time opens the window on
//!   both passes, so an interval schedule keeps its real-time rhythm (and a window of
//!   `*/30` for 30m stays continuously open through the night the clock goes back).
//!
//! Either way a window opens at most once per occurrence, and overlapping openings
//! simply keep it open. (Vixie cron differs for lists and ranges of explicit times such
//! as `30 1,2 * * *`: it runs them once in a repeated hour and catches up on times
//! skipped by a gap. Croner, and so this module, treats them as interval schedules.)
//!
//! # Durations
//!
//! A window is open over the half-open interval `[start, start + duration)`: at
//! `start + duration` it has closed. A zero duration is rejected as
//! [`FreezeError::BadDuration`], since such a window could never be open and is surely a
//! mistake; so is a duration longer than [`MAX_DURATION`].
//!
//! # Horizons
//!
//! [`evaluate`] looks at most [`HORIZON`] ahead: a window that next opens later than that
//! is reported as not opening at all (it is seen once it comes within the horizon).
//! When windows overlap or chain, the frozen stretch is followed until it ends, but no
//! further than the horizon and no more than [`MAX_CHAIN_STEPS`] extensions (schedules
//! such as every day at 00:00 for 30h never end). Then `until` is where the search
//! stopped: the freeze is certainly in force until then, and evaluating again at
//! `until` finds it still open and follows it further.

use std::{sync::LazyLock, time::Duration};

use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};
use jiff::{
    SignedDuration, Timestamp,
    tz::{TimeZone, TimeZoneDatabase},
};

use crate::api::FreezeWindow;

/// How far ahead [`evaluate`] looks for the next opening, and how far it follows a
/// frozen stretch: 400 days, so a window that opens once a year is always seen.
pub const HORIZON: SignedDuration = SignedDuration::from_hours(400 * 24);

/// The longest duration a window may have: 366 days. A longer freeze is a paused plan.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// How many times [`evaluate`] extends a frozen stretch by overlapping or chained
/// openings before it stops and reports the end reached so far.
pub const MAX_CHAIN_STEPS: usize = 1000;

/// The names of the five fields, in order, for messages.
const FIELD_NAMES: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

/// The values each field takes, for messages.
const FIELD_VALUES: [&str; 5] = [
    "0-59",
    "0-23",
    "1-31",
    "1-12 or JAN-DEC",
    "0-7 or SUN-SAT (0 and 7 are Sunday)",
];

/// What to write instead, appended to schedule errors.
const SCHEDULE_HINT: &str = "write five fields, minute hour day-of-month month day-of-week, \
                             for example `0 0 28 3,6,9,12 *`";

/// The time zone database built into the binary, so that lookups do no I/O and do not
/// depend on the machine.
static TZDB: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// A freeze window whose schedule, duration and time zone have been checked.
#[derive(Clone, Debug)]
pub struct ParsedWindow {
    name: String,
    schedule: String,
    cron: Cron,
    duration: SignedDuration,
    zone: TimeZone,
}

/// Why a window cannot be used. Messages name the window and say what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FreezeError {
    /// The time zone is not an IANA time zone name.
    #[error(
        "freeze window {window:?}: time zone {zone:?} is not a known IANA time zone; \
         use a name such as `Europe/Berlin` or `Asia/Kolkata`, or leave timeZone out for UTC"
    )]
    UnknownTimeZone {
        /// The window's name.
        window: String,
        /// The time zone as written.
        zone: String,
    },
    /// The schedule is not a usable five-field cron expression.
    #[error("freeze window {window:?}: schedule {schedule:?} is not usable: {detail}")]
    BadSchedule {
        /// The window's name.
        window: String,
        /// The schedule as written.
        schedule: String,
        /// What is wrong with it and what to write instead.
        detail: String,
    },
    /// The duration cannot be read, or is zero or too long.
    #[error("freeze window {window:?}: {detail}")]
    BadDuration {
        /// The window's name.
        window: String,
        /// What is wrong with it and what to write instead.
        detail: String,
    },
}

/// Checks a window's duration, time zone and schedule, in that order.
pub fn parse(window: &FreezeWindow) -> Result<ParsedWindow, FreezeError> {
    let duration = parse_duration(window)?;
    let zone = parse_zone(window)?;
    let cron = parse_schedule(&window.schedule).map_err(|detail| FreezeError::BadSchedule {
        window: window.name.clone(),
        schedule: window.schedule.clone(),
        detail,
    })?;
    Ok(ParsedWindow {
        name: window.name.clone(),
        schedule: window.schedule.clone(),
        cron,
        duration,
        zone,
    })
}

fn parse_duration(window: &FreezeWindow) -> Result<SignedDuration, FreezeError> {
    let bad = |detail: String| FreezeError::BadDuration {
        window: window.name.clone(),
        detail,
    };
    let duration = window
        .duration
        .parse()
        .map_err(|e| bad(format!("duration {e}")))?;
    if duration.is_zero() {
        return Err(bad(format!(
            "duration {:?} is zero, so the window would never be open; \
             give it a length such as 2h, or remove the window",
            window.duration.as_str()
        )));
    }
    if duration > MAX_DURATION {
        return Err(bad(format!(
            "duration {:?} is longer than the limit of 366 days (8784h); \
             for a freeze that long, pause the plan instead",
            window.duration.as_str()
        )));
    }
    SignedDuration::try_from(duration).map_err(|e| bad(format!("duration is out of range: {e}")))
}

fn parse_zone(window: &FreezeWindow) -> Result<TimeZone, FreezeError> {
    match &window.time_zone {
        None => Ok(TimeZone::UTC),
        Some(zone) => TZDB.get(zone).map_err(|_| FreezeError::UnknownTimeZone {
            window: window.name.clone(),
            zone: zone.clone(),
        }),
    }
}

/// Parses a five-field schedule, or says what is wrong with it.
fn parse_schedule(schedule: &str) -> Result<Cron, String> {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "it has {} field{}, but a schedule has exactly five; {SCHEDULE_HINT}",
            fields.len(),
            if fields.len() == 1 { "" } else { "s" }
        ));
    }
    for (index, field) in fields.iter().enumerate() {
        check_names(index, field)?;
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build();
    let cron = parser.parse(schedule).map_err(|whole| {
        // Croner's messages do not say which field is wrong: parse each field alone to
        // find it.
        for (index, field) in fields.iter().enumerate() {
            let mut alone = ["*"; 5];
            alone[index] = field;
            if let Err(e) = parser.parse(&alone.join(" ")) {
                let e = e.to_string();
                let problem = e.strip_prefix("Component error: ").unwrap_or(&e);
                return format!(
                    "the {} field `{field}` is invalid ({}); it takes values {}, lists such \
                     as 1,15, ranges such as 1-5 and steps such as */15 or 0-30/10",
                    FIELD_NAMES[index],
                    problem.trim_end_matches('.'),
                    FIELD_VALUES[index],
                );
            }
        }
        format!("{whole}; {SCHEDULE_HINT}")
    })?;
    if !fires_ever(&cron) {
        return Err(
            "it never fires, because no date matches it (such as 30 February); \
             check the day-of-month, month and day-of-week fields"
                .to_owned(),
        );
    }
    Ok(cron)
}

/// Rejects letters outside the names a field takes. Croner replaces month and day names
/// anywhere in the pattern, so `0 0 * * JAN` would otherwise mean Mondays.
fn check_names(index: usize, field: &str) -> Result<(), String> {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS_AND_LAST: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "L"];
    let (allowed, takes): (&[&str], &str) = match index {
        2 => (&["L", "W", "LW"], "only numbers, `L` and `W`"),
        3 => (&MONTHS, "only numbers and month names JAN-DEC"),
        4 => (&DAYS_AND_LAST, "only numbers, day names SUN-SAT and `L`"),
        _ => (&[], "only numbers"),
    };
    let upper = field.to_ascii_uppercase();
    for word in upper.split(|c: char| !c.is_ascii_alphabetic()) {
        if word.is_empty() || allowed.contains(&word) {
            continue;
        }
        return Err(format!(
            "the {} field `{field}` contains `{word}`, but that field takes {takes}; \
             {SCHEDULE_HINT}",
            FIELD_NAMES[index]
        ));
    }
    Ok(())
}

/// Whether a schedule matches any date at all. The Gregorian calendar repeats every 400
/// years, so a schedule that matches nothing in 400 years matches nothing ever.
fn fires_ever(cron: &Cron) -> bool {
    let start = jiff::civil::date(2000, 1, 1).at(0, 0, 0, 0);
    cron.find_next_occurrence(&start, true)
        .is_ok_and(|first| first.year() < 2400)
}

impl ParsedWindow {
    /// The window's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schedule as written.
    pub fn schedule(&self) -> &str {
        &self.schedule
    }

    /// How long the window stays open each time it opens.
    pub fn duration(&self) -> SignedDuration {
        self.duration
    }

    /// The time zone the schedule is read in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The latest instant at or before `at` at which the window opens, if any.
    pub fn last_opening(&self, at: Timestamp) -> Option<Timestamp> {
        let mut from = at.to_zoned(self.zone.clone());
        let mut inclusive = true;
        // Croner answers at or before `from`; the loop only guards against an answer
        // after `at`, which would be a bug there.
        for _ in 0..4 {
            let found = self.cron.find_previous_occurrence(&from, inclusive).ok()?;
            if found.timestamp() <= at {
                return Some(found.timestamp());
            }
            from = found;
            inclusive = false;
        }
        None
    }

    /// The first instant strictly after `after` at which the window opens, if any.
    pub fn next_opening(&self, after: Timestamp) -> Option<Timestamp> {
        let mut from = after.to_zoned(self.zone.clone());
        for _ in 0..4 {
            let found = self.cron.find_next_occurrence(&from, false).ok()?;
            if found.timestamp() > after {
                return Some(found.timestamp());
            }
            from = found;
        }
        None
    }

    /// If the window is open at `at`, when the latest opening that covers `at` closes.
    ///
    /// This is one window's own openings only; [`evaluate`] follows a frozen stretch
    /// across openings and windows.
    pub fn open_until(&self, at: Timestamp) -> Option<Timestamp> {
        let start = self.last_opening(at)?;
        let end = plus(start, self.duration);
        (end > at).then_some(end)
    }
}

/// Whether a freeze is in force at `now`.
#[derive(Debug, Clone, PartialEq)]
pub enum FreezeState {
    /// A window is open; `until` is when no window is open any more (if windows
    /// overlap or chain, the end of the whole frozen stretch, followed at most as far
    /// as [`HORIZON`] and [`MAX_CHAIN_STEPS`] allow). `window` names the window that is
    /// open now (the one that ends last if several; the first listed of those if tied).
    Open {
        /// The window open now.
        window: String,
        /// When no window is open any more.
        until: Timestamp,
    },
    /// No window is open; `next_open` is when the next one opens (None if never, or
    /// later than [`HORIZON`] from now).
    Closed {
        /// When the next window opens.
        next_open: Option<Timestamp>,
    },
}

/// Whether a freeze is in force at `now`, and until when or from when.
pub fn evaluate(windows: &[ParsedWindow], now: Timestamp) -> FreezeState {
    let mut open: Option<(&ParsedWindow, Timestamp)> = None;
    for window in windows {
        if let Some(end) = window.open_until(now)
            && open.is_none_or(|(_, latest)| end > latest)
        {
            open = Some((window, end));
        }
    }
    let limit = plus(now, HORIZON);
    match open {
        Some((window, end)) => FreezeState::Open {
            window: window.name.clone(),
            until: follow_stretch(windows, end, limit),
        },
        None => FreezeState::Closed {
            next_open: windows
                .iter()
                .filter_map(|window| window.next_opening(now))
                .filter(|&start| start <= limit)
                .min(),
        },
    }
}

/// Extends a frozen stretch that lasts at least until `until` by every opening that
/// starts before it ends, until no opening extends it, it passes `limit`, or
/// [`MAX_CHAIN_STEPS`] extensions were made.
fn follow_stretch(windows: &[ParsedWindow], mut until: Timestamp, limit: Timestamp) -> Timestamp {
    for _ in 0..MAX_CHAIN_STEPS {
        if until > limit {
            break;
        }
        let mut extended = false;
        for window in windows {
            // An opening at `until` itself chains: the window is open at that instant.
            if let Some(end) = window.open_until(until) {
                until = end;
                extended = true;
            }
        }
        if !extended {
            break;
        }
    }
    until
}

/// `t + d`, saturating at the end of time.
fn plus(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DurationString;

    fn window(name: &str, schedule: &str, duration: &str, zone: Option<&str>) -> FreezeWindow {
        FreezeWindow {
            name: name.to_owned(),
            schedule: schedule.to_owned(),
            duration: DurationString::new(duration),
            time_zone: zone.map(str::to_owned),
        }
    }

    fn parsed(schedule: &str, duration: &str, zone: Option<&str>) -> ParsedWindow {
        parse(&window("w", schedule, duration, zone)).unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn open(window: &str, until: &str) -> FreezeState {
        FreezeState::Open {
            window: window.to_owned(),
            until: ts(until),
        }
    }

    fn closed(next_open: Option<&str>) -> FreezeState {
        FreezeState::Closed {
            next_open: next_open.map(ts),
        }
    }

    fn schedule_error(schedule: &str) -> String {
        match parse(&window("nightly", schedule, "1h", None)) {
            Err(FreezeError::BadSchedule { detail, .. }) => detail,
            other => panic!("{schedule:?} gave {other:?}"),
        }
    }

    // The DESIGN example: quarter-end freezes, 96h from the 28th at 00:00 IST.
    #[test]
    fn quarter_end_in_kolkata() {
        let w = [parse(&window(
            "quarter-end",
            "0 0 28 3,6,9,12 *",
            "96h",
            Some("Asia/Kolkata"),
        ))
        .unwrap()];
        let opens = "2026-03-27T18:30:00Z";
        let closes = "2026-03-31T18:30:00Z";
        assert_eq!(
            evaluate(&w, ts("2026-03-27T18:29:59Z")),
            closed(Some(opens))
        );
        assert_eq!(
            evaluate(&w, ts("2026-03-27T18:29:59.999999999Z")),
            closed(Some(opens))
        );
        assert_eq!(evaluate(&w, ts(opens)), open("quarter-end", closes));
        assert_eq!(
            evaluate(&w, ts("2026-03-29T12:00:00Z")),
            open("quarter-end", closes)
        );
        assert_eq!(
            evaluate(&w, ts("2026-03-31T18:29:59.999Z")),
            open("quarter-end", closes)
        );
        // At 1 April 00:00 IST it has closed; the next opens on 28 June 00:00 IST.
        assert_eq!(
            evaluate(&w, ts(closes)),
            closed(Some("2026-06-27T18:30:00Z"))
        );
        assert_eq!(
            evaluate(&w, ts("2026-01-15T00:00:00Z")),
            closed(Some(opens))
        );
        // Across the year end: December's window, then March's.
        assert_eq!(
            evaluate(&w, ts("2026-12-30T00:00:00Z")),
            open("quarter-end", "2026-12-31T18:30:00Z")
        );
        assert_eq!(
            evaluate(&w, ts("2027-01-01T00:00:00Z")),
            closed(Some("2027-03-27T18:30:00Z"))
        );
    }

    #[test]
    fn no_time_zone_means_utc() {
        let w = parsed("0 0 28 3,6,9,12 *", "96h", None);
        assert_eq!(w.time_zone(), &TimeZone::UTC);
        assert_eq!(
            evaluate(&[w], ts("2026-03-28T00:00:00Z")),
            open("w", "2026-04-01T00:00:00Z")
        );
    }

    #[test]
    fn long_windows_are_found_days_after_they_opened() {
        // Every Friday 18:00 for 96h: open until Tuesday 18:00.
        let w = [parsed("0 18 * * FRI", "96h", None)];
        // 2026-05-01 is a Friday.
        assert_eq!(
            evaluate(&w, ts("2026-05-04T17:59:59Z")),
            open("w", "2026-05-05T18:00:00Z")
        );
        assert_eq!(
            evaluate(&w, ts("2026-05-05T18:00:00Z")),
            closed(Some("2026-05-08T18:00:00Z"))
        );
    }

    #[test]
    fn no_windows_never_freeze() {
        assert_eq!(evaluate(&[], ts("2026-05-04T00:00:00Z")), closed(None));
    }

    #[test]
    fn overlapping_windows_report_the_one_that_ends_last() {
        let windows = [
            parse(&window("short", "0 10 * * *", "1h", None)).unwrap(),
            parse(&window("long", "30 9 * * *", "3h", None)).unwrap(),
        ];
        // 10:15: both open; `long` ends at 12:30.
        assert_eq!(
            evaluate(&windows, ts("2026-05-04T10:15:00Z")),
            open("long", "2026-05-04T12:30:00Z")
        );
        // 09:45: only `long` is open.
        assert_eq!(
            evaluate(&windows, ts("2026-05-04T09:45:00Z")),
            open("long", "2026-05-04T12:30:00Z")
        );
    }

    #[test]
    fn chained_windows_extend_the_stretch() {
        let windows = [
            parse(&window("first", "0 8 * * *", "2h", None)).unwrap(),
            parse(&window("second", "0 10 * * *", "2h", None)).unwrap(),
            parse(&window("third", "30 11 * * *", "1h", None)).unwrap(),
            // Opens after the stretch has ended: not part of it.
            parse(&window("later", "0 13 * * *", "1h", None)).unwrap(),
        ];
        // `first` is open now; `second` opens the instant it closes, `third` overlaps.
        assert_eq!(
            evaluate(&windows, ts("2026-05-04T09:00:00Z")),
            open("first", "2026-05-04T12:30:00Z")
        );
        assert_eq!(
            evaluate(&windows, ts("2026-05-04T12:30:00Z")),
            closed(Some("2026-05-04T13:00:00Z"))
        );
    }

    #[test]
    fn a_window_that_never_closes_stops_at_the_horizon() {
        // Every day at 00:00 for 30h: always open.
        let w = [parsed("0 0 * * *", "30h", None)];
        let now = ts("2026-05-04T12:00:00Z");
        let FreezeState::Open { until, .. } = evaluate(&w, now) else {
            panic!("not open")
        };
        assert!(until > plus(now, HORIZON), "{until}");
        assert!(until <= plus(plus(now, HORIZON), SignedDuration::from_hours(30)));
        assert!(
            matches!(evaluate(&w, until), FreezeState::Open { until: later, .. } if later > until)
        );
    }

    #[test]
    fn a_dense_window_that_never_closes_stops_after_the_step_budget() {
        // Every minute for a minute: always open, one minute further per step.
        let w = [parsed("* * * * *", "1m", None)];
        let now = ts("2026-05-04T12:00:30Z");
        let FreezeState::Open { until, .. } = evaluate(&w, now) else {
            panic!("not open")
        };
        assert_eq!(
            until,
            ts("2026-05-04T12:01:00Z") + SignedDuration::from_mins(1000)
        );
        assert!(
            matches!(evaluate(&w, until), FreezeState::Open { until: later, .. } if later > until)
        );
    }

    #[test]
    fn next_opening_beyond_the_horizon_is_none() {
        // 29 February: the next after 1 March 2025 is in 2028, beyond 400 days.
        let w = [parsed("0 0 29 2 *", "1h", None)];
        assert_eq!(evaluate(&w, ts("2025-03-01T00:00:00Z")), closed(None));
        assert_eq!(
            evaluate(&w, ts("2027-03-01T00:00:00Z")),
            closed(Some("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn spring_forward_over_the_scheduled_time_opens_once_after_the_gap() {
        // Berlin, 29 March 2026: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let w = parsed("30 2 * * *", "2h", Some("Europe/Berlin"));
        // The day before: 02:30 CET = 01:30Z.
        assert_eq!(
            w.next_opening(ts("2026-03-28T00:00:00Z")),
            Some(ts("2026-03-28T01:30:00Z"))
        );
        // On the day: at 03:00 CEST = 01:00Z, and only then.
        assert_eq!(
            w.next_opening(ts("2026-03-28T01:30:00Z")),
            Some(ts("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            w.next_opening(ts("2026-03-29T01:00:00Z")),
            Some(ts("2026-03-30T00:30:00Z"))
        );
        // Two real hours, though the wall clock shows 03:00 to 05:00.
        let ws = [w];
        assert_eq!(
            evaluate(&ws, ts("2026-03-29T00:59:59Z")),
            closed(Some("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            evaluate(&ws, ts("2026-03-29T01:00:00Z")),
            open("w", "2026-03-29T03:00:00Z")
        );
    }

    #[test]
    fn fall_back_over_the_scheduled_time_opens_once_at_the_first_instant() {
        // Berlin, 25 October 2026: 03:00 CEST goes back to 02:00 CET; 02:30 happens at
        // 00:30Z and again at 01:30Z.
        let w = parsed("30 2 * * *", "2h", Some("Europe/Berlin"));
        assert_eq!(
            w.next_opening(ts("2026-10-24T12:00:00Z")),
            Some(ts("2026-10-25T00:30:00Z"))
        );
        // Not again at 02:30 CET: the next opening is the next day's 02:30 CET.
        assert_eq!(
            w.next_opening(ts("2026-10-25T00:30:00Z")),
            Some(ts("2026-10-26T01:30:00Z"))
        );
        assert_eq!(
            w.last_opening(ts("2026-10-25T02:00:00Z")),
            Some(ts("2026-10-25T00:30:00Z"))
        );
        // Open for exactly two real hours, through the repeated hour.
        let ws = [w];
        for at in [
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T02:29:59Z",
        ] {
            assert_eq!(
                evaluate(&ws, ts(at)),
                open("w", "2026-10-25T02:30:00Z"),
                "{at}"
            );
        }
        assert_eq!(
            evaluate(&ws, ts("2026-10-25T02:30:00Z")),
            closed(Some("2026-10-26T01:30:00Z"))
        );
    }

    #[test]
    fn new_york_clock_changes() {
        // 8 March 2026: 02:00 EST jumps to 03:00 EDT.
        let w = parsed("30 2 * * *", "1h", Some("America/New_York"));
        assert_eq!(
            w.next_opening(ts("2026-03-08T00:00:00Z")),
            Some(ts("2026-03-08T07:00:00Z"))
        );
        assert_eq!(
            evaluate(&[w], ts("2026-03-08T07:30:00Z")),
            open("w", "2026-03-08T08:00:00Z")
        );
        // 1 November 2026: 02:00 EDT goes back to 01:00 EST; 01:30 happens at 05:30Z
        // and 06:30Z.
        let w = parsed("30 1 * * *", "90m", Some("America/New_York"));
        assert_eq!(
            w.next_opening(ts("2026-11-01T00:00:00Z")),
            Some(ts("2026-11-01T05:30:00Z"))
        );
        assert_eq!(
            w.next_opening(ts("2026-11-01T05:30:00Z")),
            Some(ts("2026-11-02T06:30:00Z"))
        );
        assert_eq!(
            evaluate(&[w], ts("2026-11-01T06:45:00Z")),
            open("w", "2026-11-01T07:00:00Z")
        );
    }

    #[test]
    fn interval_schedules_keep_their_real_time_rhythm_across_clock_changes() {
        // Every hour at :30 in Berlin, on the night the clock goes back: 02:30 CEST and
        // 02:30 CET are both real occurrences, an hour apart.
        let w = parsed("30 * * * *", "10m", Some("Europe/Berlin"));
        let mut at = ts("2026-10-24T23:00:00Z");
        let mut starts = vec![];
        for _ in 0..4 {
            at = w.next_opening(at).unwrap();
            starts.push(at.to_string());
        }
        assert_eq!(
            starts,
            [
                "2026-10-24T23:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:30:00Z"
            ]
        );
        // On the night it springs forward, 02:30 does not exist and is skipped.
        let mut at = ts("2026-03-28T23:00:00Z");
        let mut starts = vec![];
        for _ in 0..3 {
            at = w.next_opening(at).unwrap();
            starts.push(at.to_string());
        }
        assert_eq!(
            starts,
            [
                "2026-03-28T23:30:00Z",
                "2026-03-29T00:30:00Z",
                "2026-03-29T01:30:00Z"
            ]
        );
        // A continuous freeze stays continuous through the repeated hour.
        let w = [parsed("*/30 * * * *", "30m", Some("Europe/Berlin"))];
        for at in [
            "2026-10-25T00:45:00Z",
            "2026-10-25T01:15:00Z",
            "2026-10-25T01:45:00Z",
        ] {
            assert!(
                matches!(evaluate(&w, ts(at)), FreezeState::Open { .. }),
                "{at}"
            );
        }
    }

    #[test]
    fn a_list_of_hours_is_an_interval_schedule_for_clock_changes() {
        // Croner treats `30 1,2` like any schedule that is not a single time of day: on
        // the night the clock goes back, 02:30 opens the window on both passes; on the
        // night it springs forward, the missing 02:30 is skipped.
        let w = parsed("30 1,2 * * *", "10m", Some("Europe/Berlin"));
        let mut at = ts("2026-10-24T12:00:00Z");
        let mut starts = vec![];
        for _ in 0..3 {
            at = w.next_opening(at).unwrap();
            starts.push(at.to_string());
        }
        assert_eq!(
            starts,
            [
                "2026-10-24T23:30:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:30:00Z"
            ]
        );
        assert_eq!(
            w.next_opening(ts("2026-03-29T00:00:00Z")),
            Some(ts("2026-03-29T00:30:00Z"))
        );
        assert_eq!(
            w.next_opening(ts("2026-03-29T00:30:00Z")),
            Some(ts("2026-03-29T23:30:00Z"))
        );
    }

    #[test]
    fn a_half_hour_clock_change_in_lord_howe() {
        // Lord Howe Island, 5 April 2026: 02:00 (+11) goes back to 01:30 (+10:30), so
        // 01:45 happens twice; a fixed time opens once.
        let w = parsed("45 1 * * *", "1h", Some("Australia/Lord_Howe"));
        let first = w.next_opening(ts("2026-04-04T12:00:00Z")).unwrap();
        assert_eq!(first, ts("2026-04-04T14:45:00Z"));
        assert_eq!(w.next_opening(first), Some(ts("2026-04-05T15:15:00Z")));
    }

    #[test]
    fn unknown_time_zones_are_named() {
        let err = parse(&window("nightly", "0 0 * * *", "1h", Some("Mars/Olympus"))).unwrap_err();
        assert_eq!(
            err,
            FreezeError::UnknownTimeZone {
                window: "nightly".to_owned(),
                zone: "Mars/Olympus".to_owned()
            }
        );
        let message = err.to_string();
        assert!(message.contains("\"nightly\""), "{message}");
        assert!(message.contains("\"Mars/Olympus\""), "{message}");
        assert!(message.contains("Europe/Berlin"), "{message}");
    }

    #[test]
    fn time_zone_names_are_iana_names() {
        for zone in [
            "UTC",
            "Asia/Kolkata",
            "asia/kolkata",
            "Asia/Calcutta",
            "Etc/GMT+5",
        ] {
            assert!(
                parse(&window("w", "0 0 * * *", "1h", Some(zone))).is_ok(),
                "{zone}"
            );
        }
        for zone in ["", "Local", "CEST", "+05:30", "Europe/Berlin "] {
            assert!(
                matches!(
                    parse(&window("w", "0 0 * * *", "1h", Some(zone))),
                    Err(FreezeError::UnknownTimeZone { .. })
                ),
                "{zone}"
            );
        }
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        let detail = schedule_error("every friday");
        assert!(detail.contains("it has 2 fields"), "{detail}");
        assert!(detail.contains("0 0 28 3,6,9,12 *"), "{detail}");

        let detail = schedule_error("61 * * * *");
        assert!(
            detail.contains("the minute field `61` is invalid"),
            "{detail}"
        );

        let detail = schedule_error("0 25 * * *");
        assert!(
            detail.contains("the hour field `25` is invalid"),
            "{detail}"
        );

        let detail = schedule_error("0 0 0 28 3 *");
        assert!(detail.contains("it has 6 fields"), "{detail}");

        let detail = schedule_error("@daily");
        assert!(detail.contains("it has 1 field,"), "{detail}");

        let detail = schedule_error("0 0 * * JAN");
        assert!(
            detail.contains("the day-of-week field `JAN` contains `JAN`"),
            "{detail}"
        );

        let detail = schedule_error("0 0 * MON *");
        assert!(detail.contains("the month field"), "{detail}");

        let detail = schedule_error("5/5 * * * *");
        assert!(
            detail.contains("the minute field `5/5` is invalid"),
            "{detail}"
        );

        let detail = schedule_error("0 0 30 2 *");
        assert!(detail.contains("never fires"), "{detail}");

        let err = parse(&window("nightly", "61 * * * *", "1h", None)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("freeze window \"nightly\": schedule \"61 * * * *\""),
            "{message}"
        );
    }

    #[test]
    fn good_schedules_parse() {
        for schedule in [
            "0 0 28 3,6,9,12 *",
            "*/15 9-17 * * MON-FRI",
            "0 0 * * 7",
            "0 0 L * *",
            "0 0 * * 5L",
            "0 0 * * FRI#2",
            "0 0 1 jan *",
            "  0  0 * * *  ",
            "0 0 29 2 *",
            "0-30/10 * * * *",
        ] {
            assert!(
                parse(&window("w", schedule, "1h", None)).is_ok(),
                "{schedule}"
            );
        }
    }

    #[test]
    fn both_day_fields_restricted_means_either() {
        // The 1st of the month or any Monday. 2026-06-01 is a Monday, 2026-07-01 a
        // Wednesday.
        let w = parsed("0 0 1 * MON", "1h", None);
        assert_eq!(
            w.next_opening(ts("2026-06-01T00:00:00Z")),
            Some(ts("2026-06-08T00:00:00Z"))
        );
        assert_eq!(
            w.next_opening(ts("2026-06-29T00:00:00Z")),
            Some(ts("2026-07-01T00:00:00Z"))
        );
        // With a wildcard day-of-month, only the weekday counts.
        let w = parsed("0 0 * * MON", "1h", None);
        assert_eq!(
            w.next_opening(ts("2026-06-29T00:00:00Z")),
            Some(ts("2026-07-06T00:00:00Z"))
        );
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        let detail = |duration| match parse(&window("nightly", "0 0 * * *", duration, None)) {
            Err(FreezeError::BadDuration { window, detail }) => {
                assert_eq!(window, "nightly");
                detail
            }
            other => panic!("{duration:?} gave {other:?}"),
        };
        assert!(detail("0s").contains("is zero"), "{}", detail("0s"));
        assert!(detail("0h0m").contains("is zero"));
        assert!(
            detail("3 days").contains("like 90s, 20m, 72h or 1h30m"),
            "{}",
            detail("3 days")
        );
        assert!(detail("9000h").contains("366 days"), "{}", detail("9000h"));
        assert!(parse(&window("w", "0 0 * * *", "8784h", None)).is_ok());
        assert!(parse(&window("w", "0 0 * * *", "250ms", None)).is_ok());
    }

    #[test]
    fn sub_second_durations_and_instants() {
        let w = [parsed("0 12 * * *", "250ms", None)];
        assert_eq!(
            evaluate(&w, ts("2026-05-04T12:00:00.1Z")),
            open("w", "2026-05-04T12:00:00.25Z")
        );
        assert_eq!(
            evaluate(&w, ts("2026-05-04T12:00:00.25Z")),
            closed(Some("2026-05-05T12:00:00Z"))
        );
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let w = [
            parsed("* * * * *", "1m", None),
            parsed("0 0 28 3,6,9,12 *", "96h", Some("Asia/Kolkata")),
        ];
        for at in [
            Timestamp::MIN,
            Timestamp::MAX,
            ts("4999-12-31T23:59:59Z"),
            ts("0001-01-01T00:00:00Z"),
        ] {
            let _ = evaluate(&w, at);
        }
    }
}
