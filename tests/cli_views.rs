//! Snapshots of what `kubectl wave` shows (`list`, `get`, `plan`) for fixed fixtures
//! at a fixed time. `cargo insta review` (or INSTA_UPDATE=always) accepts changes.

use jiff::Timestamp;
use serde::Deserialize;
use switchyard::api::{CutoverPlan, MigrationWave};
use switchyard::cli::{Style, view};

const NOW: &str = "2026-03-02T12:00:00Z";

fn fixtures() -> (Vec<CutoverPlan>, Vec<MigrationWave>) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cli/crm.yaml"
    ))
    .unwrap();
    let (mut plans, mut waves) = (Vec::new(), Vec::new());
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document).unwrap();
        match value["kind"].as_str() {
            Some("CutoverPlan") => plans.push(serde_yaml::from_value(value).unwrap()),
            Some("MigrationWave") => waves.push(serde_yaml::from_value(value).unwrap()),
            other => panic!("unexpected kind {other:?}"),
        }
    }
    (plans, waves)
}

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn wave<'a>(waves: &'a [MigrationWave], name: &str) -> &'a MigrationWave {
    waves
        .iter()
        .find(|w| w.metadata.name.as_deref() == Some(name))
        .unwrap()
}

#[test]
fn list_view() {
    let (plans, waves) = fixtures();
    let rows = view::list_rows(&plans, &waves, now());
    insta::assert_snapshot!(view::list_table(&rows, false, Style::PLAIN));
}

#[test]
fn list_view_all_namespaces_as_json() {
    let (plans, waves) = fixtures();
    let rows = view::list_rows(&plans, &waves, now());
    insta::assert_json_snapshot!(rows);
}

#[test]
fn get_view_awaiting_approval() {
    let (plans, waves) = fixtures();
    insta::assert_snapshot!(view::wave_view(
        wave(&waves, "marketing-amer"),
        plans.first(),
        now(),
        Style::PLAIN
    ));
}

#[test]
fn get_view_paused_by_a_person() {
    let (plans, waves) = fixtures();
    insta::assert_snapshot!(view::wave_view(
        wave(&waves, "sales-emea"),
        plans.first(),
        now(),
        Style::PLAIN
    ));
}

#[test]
fn get_view_completed() {
    let (plans, waves) = fixtures();
    insta::assert_snapshot!(view::wave_view(
        wave(&waves, "marketing-emea"),
        plans.first(),
        now(),
        Style::PLAIN
    ));
}

#[test]
fn get_view_rolled_back_without_its_plan() {
    let (_, waves) = fixtures();
    insta::assert_snapshot!(view::wave_view(
        wave(&waves, "billing-pilot"),
        None,
        now(),
        Style::PLAIN
    ));
}

#[test]
fn plan_view() {
    let (plans, waves) = fixtures();
    insta::assert_snapshot!(view::plan_view(&plans[0], &waves, now(), Style::PLAIN));
}

#[test]
fn colors_are_only_escape_codes_around_the_same_text() {
    let (plans, waves) = fixtures();
    let plain = view::plan_view(&plans[0], &waves, now(), Style::PLAIN);
    let colored = view::plan_view(&plans[0], &waves, now(), Style::COLOR);
    assert_ne!(plain, colored, "colors were asked for");
    let stripped = regex_lite::Regex::new("\x1b\\[[0-9;]*m")
        .unwrap()
        .replace_all(&colored, "");
    assert_eq!(stripped, plain);
}
