//! Property tests of freeze windows (`engine::freeze`): random schedules, durations, time
//! zones with daylight saving (including Lord Howe's half hour) and random instants, many
//! of them close to a clock change.

use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use proptest::prelude::*;
use switchyard::{
    api::{DurationString, FreezeWindow},
    engine::freeze::{self, FreezeError, FreezeState, HORIZON, ParsedWindow},
};

const ZONES: [&str; 5] = [
    "UTC",
    "Asia/Kolkata",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
];

/// One cron field over `lo..=hi`: `*`, a value, a list, a range, or a step.
fn field(lo: u32, hi: u32, star_weight: u32) -> impl Strategy<Value = String> {
    let max_step = (hi - lo).max(2);
    prop_oneof![
        star_weight => Just("*".to_owned()),
        4 => (lo..=hi).prop_map(|n| n.to_string()),
        2 => prop::collection::vec(lo..=hi, 2..=4).prop_map(|mut values| {
            values.sort_unstable();
            values.dedup();
            values.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }),
        1 => (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        2 => (2..=max_step).prop_map(|step| format!("*/{step}")),
        1 => (lo..=hi, lo..=hi, 2..=max_step)
            .prop_map(|(a, b, step)| format!("{}-{}/{step}", a.min(b), a.max(b))),
    ]
}

fn schedule() -> impl Strategy<Value = String> {
    (
        field(0, 59, 1),
        field(0, 23, 2),
        field(1, 31, 8),
        field(1, 12, 8),
        field(0, 7, 8),
    )
        .prop_map(|(minute, hour, dom, month, dow)| format!("{minute} {hour} {dom} {month} {dow}"))
}

/// A schedule with one minute and one hour: croner's "fixed-time" kind.
fn fixed_time_schedule() -> impl Strategy<Value = String> {
    (
        0..=59u32,
        0..=23u32,
        field(1, 31, 8),
        field(1, 12, 8),
        field(0, 7, 8),
    )
        .prop_map(|(minute, hour, dom, month, dow)| format!("{minute} {hour} {dom} {month} {dow}"))
}

fn zone() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&ZONES[..])
}

/// 1 minute to 100 hours, in whole seconds.
fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        (1..=6000u32).prop_map(|m| format!("{m}m")),
        (60..=360_000u32).prop_map(|s| format!("{s}s")),
    ]
}

fn window_strategy(schedule: impl Strategy<Value = String>) -> impl Strategy<Value = FreezeWindow> {
    (schedule, duration(), zone(), 0..100u32).prop_map(|(schedule, duration, zone, n)| {
        FreezeWindow {
            name: format!("w{n}"),
            schedule,
            duration: DurationString::new(duration),
            // UTC is also what no time zone means.
            time_zone: (zone != "UTC" || n % 2 == 0).then(|| zone.to_owned()),
        }
    })
}

fn from_second(s: i64, nanos: i32) -> Timestamp {
    Timestamp::new(s, nanos).unwrap()
}

/// Instants from 2020 to 2035: anywhere, on a minute, or within four hours of one of
/// the clock changes of a listed time zone.
fn instant() -> impl Strategy<Value = Timestamp> {
    let start = "2020-01-01T00:00:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .as_second();
    let end = "2035-01-01T00:00:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .as_second();
    prop_oneof![
        (start..end, prop_oneof![Just(0), 0..1_000_000_000i32])
            .prop_map(|(s, nanos)| from_second(s, nanos)),
        (start / 60..end / 60).prop_map(|m| from_second(m * 60, 0)),
        (
            zone(),
            start..end,
            0..3usize,
            -4 * 3600..4 * 3600i64,
            0..2i32
        )
            .prop_map(|(zone, from, nth, offset, nanos)| {
                let tz = TimeZone::get(zone).unwrap();
                let base = from_second(from, 0);
                let change = tz
                    .following(base)
                    .nth(nth)
                    .map_or(base, |transition| transition.timestamp());
                // On the second, or just before it.
                from_second(change.as_second() + offset, 0)
                    - SignedDuration::from_nanos(nanos.into())
            }),
    ]
}

/// Parses the windows, checking that a schedule the generator made is either accepted or
/// rejected as a schedule (for example `0 0 31 2 *`, which never fires).
fn parse_all(windows: &[FreezeWindow]) -> Vec<ParsedWindow> {
    windows
        .iter()
        .filter_map(|w| match freeze::parse(w) {
            Ok(parsed) => Some(parsed),
            Err(FreezeError::BadSchedule { .. }) => None,
            Err(e) => panic!("{w:?}: {e}"),
        })
        .collect()
}

fn at_fraction(from: Timestamp, to: Timestamp, fraction: f64) -> Timestamp {
    let span = to.duration_since(from).as_secs_f64();
    let offset = SignedDuration::from_secs_f64(span * fraction);
    (from + offset).clamp(from, to - SignedDuration::from_nanos(1))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn freeze_state_is_consistent(
        windows in prop::collection::vec(window_strategy(schedule()), 1..=3),
        now in instant(),
        fraction in 0.0..1.0f64,
    ) {
        let windows = parse_all(&windows);
        let state = freeze::evaluate(&windows, now);
        match &state {
            FreezeState::Open { window, until } => {
                // (1) It ends after now.
                prop_assert!(*until > now, "{state:?} at {now}");
                // The named window is open now and ends last among those open.
                let ends: Vec<_> = windows.iter().map(|w| (w.name(), w.open_until(now))).collect();
                let latest = ends.iter().filter_map(|(_, end)| *end).max().unwrap();
                prop_assert!(
                    ends.iter().any(|(name, end)| name == window && *end == Some(latest)),
                    "{state:?} at {now}: {ends:?}"
                );
                // (2) At `until` the stretch is over, or a later end was found beyond
                // the search's limits.
                match freeze::evaluate(&windows, *until) {
                    FreezeState::Closed { .. } => {}
                    FreezeState::Open { until: later, .. } => prop_assert!(
                        later > *until,
                        "{state:?} at {now}, then Open until {later}"
                    ),
                }
                // The stretch has no hole: open just before `until` and anywhere
                // between now and then.
                let before = *until - SignedDuration::from_nanos(1);
                prop_assert!(
                    matches!(freeze::evaluate(&windows, before), FreezeState::Open { .. }),
                    "{state:?} at {now}, but not open at {before}"
                );
                let between = at_fraction(now, *until, fraction);
                prop_assert!(
                    matches!(freeze::evaluate(&windows, between), FreezeState::Open { .. }),
                    "{state:?} at {now}, but not open at {between}"
                );
            }
            FreezeState::Closed { next_open: Some(next) } => {
                // (3) The next opening is ahead, within the horizon, and opens a window.
                prop_assert!(*next > now, "{state:?} at {now}");
                prop_assert!(*next <= now + HORIZON, "{state:?} at {now}");
                prop_assert!(
                    matches!(freeze::evaluate(&windows, *next), FreezeState::Open { .. }),
                    "{state:?} at {now}, but not open at {next}"
                );
                // Nothing opens in between.
                let between = at_fraction(now, *next, fraction);
                prop_assert_eq!(
                    freeze::evaluate(&windows, between),
                    state.clone(),
                    "at {} and at {}", now, between
                );
            }
            FreezeState::Closed { next_open: None } => {
                for w in &windows {
                    prop_assert!(
                        w.next_opening(now).is_none_or(|next| next > now + HORIZON),
                        "{} opens at {:?}", w.name(), w.next_opening(now)
                    );
                }
            }
        }
    }

    #[test]
    fn forward_and_backward_searches_agree(
        window in window_strategy(schedule()),
        now in instant(),
    ) {
        let Some(window) = parse_all(&[window]).pop() else { return Ok(()) };
        if let Some(next) = window.next_opening(now) {
            prop_assert!(next > now);
            prop_assert_eq!(window.last_opening(next), Some(next));
            let before = window.last_opening(next - SignedDuration::from_nanos(1));
            prop_assert!(before.is_none_or(|b| b <= now), "{:?} between {} and {}", before, now, next);
        }
        if let Some(last) = window.last_opening(now) {
            prop_assert!(last <= now);
            prop_assert_eq!(window.next_opening(last - SignedDuration::from_nanos(1)), Some(last));
            let after = window.next_opening(last);
            prop_assert!(after.is_none_or(|a| a > now), "{:?} between {} and {}", after, last, now);
            // Open exactly while within the duration of the last opening.
            let end = last + window.duration();
            prop_assert_eq!(window.open_until(now), (end > now).then_some(end));
        }
    }

    #[test]
    fn a_fixed_time_opens_at_most_once_a_day(
        window in window_strategy(fixed_time_schedule()),
        now in instant(),
    ) {
        let Some(window) = parse_all(&[window]).pop() else { return Ok(()) };
        let zone = window.time_zone().clone();
        let mut previous: Option<Timestamp> = None;
        let mut at = now;
        for _ in 0..4 {
            let Some(next) = window.next_opening(at) else { break };
            if let Some(previous) = previous {
                prop_assert!(
                    previous.to_zoned(zone.clone()).date() < next.to_zoned(zone.clone()).date(),
                    "{} opened at {} and again at {}", window.schedule(), previous, next
                );
            }
            previous = Some(next);
            at = next;
        }
    }
}
