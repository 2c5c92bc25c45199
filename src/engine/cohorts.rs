//! Which wave of a plan a cohort belongs to, when two waves name the same one.
//!
//! Two waves of one plan with the same cohort would write two routes with the same
//! matches (or two entries of the routing table for the same requests): which one a
//! request follows would be up to the router. Admission sees one object at a time and
//! cannot refuse the second wave, so the controller does: every wave but one is
//! invalid (`Valid=False`, reason `DuplicateCohort`, naming the wave that holds the
//! cohort), and an invalid wave never starts and never routes.
//!
//! The wave that holds the cohort is, in this order: one that has started (its phase
//! is not Pending) before one that has not, so that a wave already moving traffic is
//! never the one stopped; then the one created first; then the one whose name sorts
//! first. The order depends only on the waves, so every wave's decision agrees, and it
//! never changes for the wave that holds the cohort while it exists.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::observations::Problem;
use crate::api::WavePhase;

/// A wave of the plan, as far as its claim to a cohort goes.
#[derive(Clone, Debug, PartialEq)]
pub struct CohortClaim<'a> {
    /// The wave's name.
    pub name: &'a str,
    /// Its cohort: key to value.
    pub cohort: &'a BTreeMap<String, String>,
    /// Its phase as last recorded (Pending when it has no status).
    pub phase: WavePhase,
    /// Its `metadata.creationTimestamp`, if known.
    pub created: Option<Timestamp>,
}

impl CohortClaim<'_> {
    /// Lower ranks hold the cohort: started first, then older, then by name. A wave with
    /// no creation time (not yet stored) ranks after every stored wave.
    fn rank(&self) -> (bool, bool, Option<Timestamp>, &str) {
        (
            self.phase == WavePhase::Pending,
            self.created.is_none(),
            self.created,
            self.name,
        )
    }
}

/// The problem of `wave` when another wave of its plan (in `others`, which may include
/// `wave` itself) has the same cohort and holds it; `None` when `wave` holds its cohort.
pub fn duplicate_cohort(wave: &CohortClaim<'_>, others: &[CohortClaim<'_>]) -> Option<Problem> {
    others
        .iter()
        .filter(|other| other.name != wave.name && other.cohort == wave.cohort)
        .min_by(|a, b| a.rank().cmp(&b.rank()))
        .filter(|holder| holder.rank() < wave.rank())
        .map(|holder| Problem::DuplicateCohort {
            wave: holder.name.to_owned(),
            cohort: wave
                .cohort
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(","),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn at(second: i64) -> Option<Timestamp> {
        Some(Timestamp::from_second(1_700_000_000 + second).unwrap())
    }

    #[test]
    fn one_wave_per_cohort_holds_it() {
        let support = cohort(&[("team", "support")]);
        let support_emea = cohort(&[("team", "support"), ("region", "emea")]);
        let sales = cohort(&[("team", "sales")]);
        let claim = |name, cohort, phase, created| CohortClaim {
            name,
            cohort,
            phase,
            created,
        };
        use WavePhase::*;
        // (case, this wave, the plan's other waves, the wave it yields to)
        let table: Vec<(&str, CohortClaim, Vec<CohortClaim>, Option<&str>)> = vec![
            ("alone", claim("a", &support, Pending, at(0)), vec![], None),
            (
                "other cohorts only",
                claim("a", &support, Pending, at(5)),
                vec![claim("b", &sales, Progressing, at(0))],
                None,
            ),
            (
                "a cohort with more keys is another cohort (its route is more specific)",
                claim("a", &support, Pending, at(5)),
                vec![claim("b", &support_emea, Progressing, at(0))],
                None,
            ),
            (
                "the list holds the wave itself",
                claim("a", &support, Pending, at(0)),
                vec![claim("a", &support, Pending, at(0))],
                None,
            ),
            (
                "both pending: the younger yields",
                claim("b", &support, Pending, at(5)),
                vec![claim("a", &support, Pending, at(0))],
                Some("a"),
            ),
            (
                "both pending: the older holds",
                claim("a", &support, Pending, at(0)),
                vec![claim("b", &support, Pending, at(5))],
                None,
            ),
            (
                "a started wave holds against an older pending one",
                claim("old", &support, Pending, at(0)),
                vec![claim("running", &support, Progressing, at(9))],
                Some("running"),
            ),
            (
                "the started wave itself is not stopped",
                claim("running", &support, Progressing, at(9)),
                vec![claim("old", &support, Pending, at(0))],
                None,
            ),
            (
                "a completed wave still holds its cohort (its route sends it to the target)",
                claim("again", &support, Pending, at(9)),
                vec![claim("done", &support, Completed, at(0))],
                Some("done"),
            ),
            (
                "a rolled-back wave still holds it (it may be retried)",
                claim("again", &support, Pending, at(9)),
                vec![claim("back", &support, RolledBack, at(0))],
                Some("back"),
            ),
            (
                "same creation second: the name decides",
                claim("b", &support, Pending, at(0)),
                vec![claim("a", &support, Pending, at(0))],
                Some("a"),
            ),
            (
                "same creation second, the other way round",
                claim("a", &support, Pending, at(0)),
                vec![claim("b", &support, Pending, at(0))],
                None,
            ),
            (
                "an unstored wave yields to a stored one",
                claim("a", &support, Pending, None),
                vec![claim("b", &support, Pending, at(0))],
                Some("b"),
            ),
            (
                "three of a kind: each yields to the same holder",
                claim("c", &support, Pending, at(2)),
                vec![
                    claim("b", &support, Pending, at(1)),
                    claim("a", &support, Pending, at(0)),
                    claim("x", &sales, Progressing, at(0)),
                ],
                Some("a"),
            ),
            (
                "two started waves (from before this rule): the older holds",
                claim("b", &support, Paused, at(5)),
                vec![claim("a", &support, Progressing, at(0))],
                Some("a"),
            ),
        ];
        for (case, wave, others, expected) in table {
            let problem = duplicate_cohort(&wave, &others);
            let holder = match &problem {
                Some(Problem::DuplicateCohort { wave, .. }) => Some(wave.as_str()),
                Some(other) => panic!("{case}: unexpected {other:?}"),
                None => None,
            };
            assert_eq!(holder, expected, "{case}");
        }
    }

    #[test]
    fn exactly_one_wave_of_a_cohort_holds_it_whatever_the_order() {
        let support = cohort(&[("team", "support")]);
        let phases = [
            WavePhase::Pending,
            WavePhase::Progressing,
            WavePhase::Pending,
        ];
        let names = ["c", "a", "b"];
        let created = [at(1), at(1), None];
        let claims: Vec<CohortClaim> = (0..3)
            .map(|i| CohortClaim {
                name: names[i],
                cohort: &support,
                phase: phases[i],
                created: created[i],
            })
            .collect();
        let holders: Vec<&str> = claims
            .iter()
            .filter(|c| duplicate_cohort(c, &claims).is_none())
            .map(|c| c.name)
            .collect();
        assert_eq!(holders, vec!["a"]);
    }

    #[test]
    fn the_problem_names_the_other_wave_and_the_cohort() {
        let support = cohort(&[("team", "support"), ("region", "emea")]);
        let problem = duplicate_cohort(
            &CohortClaim {
                name: "b",
                cohort: &support,
                phase: WavePhase::Pending,
                created: at(5),
            },
            &[CohortClaim {
                name: "a",
                cohort: &support,
                phase: WavePhase::Pending,
                created: at(0),
            }],
        )
        .unwrap();
        assert_eq!(problem.reason(), "DuplicateCohort");
        let message = problem.message();
        assert!(message.contains("MigrationWave \"a\""), "{message}");
        assert!(message.contains("region=emea,team=support"), "{message}");
        assert!(problem.needs_polling());
    }
}
