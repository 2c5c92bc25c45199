//! The validate stage, between observe and decide: whether a wave and its plan hold
//! together, and, when they do, the route the wave's routers are told. Pure: the
//! controller reads the objects and the Services, and these functions say what is wrong
//! ([`Problem`]s, which become the wave's conditions) or build the route.

use super::observations::Problem;
use super::route::{RouterConfig, WaveRoute};
use crate::api::{CutoverPlanSpec, MigrationWaveSpec, ServiceRef};

/// What the wave `wave` asks of its plan `plan_name` that the plan does not give: the
/// plan must list the wave, define each of its cohort keys, and name a maintenance
/// backend if the wave has a quiet step.
pub fn plan_problems(
    wave: &str,
    spec: &MigrationWaveSpec,
    plan_name: &str,
    plan: &CutoverPlanSpec,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !plan.waves.iter().any(|w| w.name == wave) {
        problems.push(Problem::NotInPlan {
            plan: plan_name.to_owned(),
        });
    }
    for key in spec.cohort.keys() {
        if !plan.cohort_keys.contains_key(key) {
            problems.push(Problem::UnknownCohortKey {
                key: key.clone(),
                known: plan.cohort_keys.keys().cloned().collect(),
            });
        }
    }
    if has_quiet(spec) && plan.maintenance.is_none() {
        problems.push(Problem::MaintenanceNotConfigured);
    }
    problems
}

fn has_quiet(spec: &MigrationWaveSpec) -> bool {
    spec.steps.iter().any(|s| s.quiet.is_some())
}

/// The Services the wave needs, by role: legacy and target, and maintenance when the
/// wave has a quiet step and the plan names one. The controller checks that they exist.
pub fn needed_backends<'a>(
    spec: &MigrationWaveSpec,
    plan: &'a CutoverPlanSpec,
) -> Vec<(&'static str, &'a ServiceRef)> {
    let mut backends = vec![
        ("legacy", &plan.legacy.service),
        ("target", &plan.target.service),
    ];
    if has_quiet(spec)
        && let Some(maintenance) = &plan.maintenance
    {
        backends.push(("maintenance", &maintenance.service));
    }
    backends
}

/// The wave a route is built for, as the API server names it.
#[derive(Clone, Copy, Debug)]
pub struct WaveIdentity<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// The route of `wave` under its plan `plan_name`: its router (the plan's Gateway API
/// settings, else its routing table), the cohort's request headers, and the backends.
/// A plan that no router could carry out (no router set, or a legacy-access header that
/// is also a cohort header) is a problem of the wave, which waits for the plan to
/// change, not a routing failure retried forever.
pub fn route(
    wave: WaveIdentity<'_>,
    spec: &MigrationWaveSpec,
    plan_name: &str,
    plan: &CutoverPlanSpec,
) -> Result<WaveRoute, Problem> {
    let router = match (&plan.routing.gateway_api, &plan.routing.config_map) {
        (Some(gateway), _) => RouterConfig::GatewayApi {
            parent_refs: gateway.parent_refs.clone(),
            hostnames: gateway.hostnames.clone(),
        },
        (None, Some(config_map)) => RouterConfig::ConfigMap {
            name: config_map.name.clone(),
        },
        (None, None) => {
            return Err(Problem::InvalidSpec {
                message: "the plan sets no router".into(),
            });
        }
    };
    let route = WaveRoute {
        namespace: wave.namespace.to_owned(),
        wave: wave.name.to_owned(),
        wave_uid: wave.uid.to_owned(),
        plan: plan_name.to_owned(),
        cohort: spec.cohort.clone(),
        cohort_headers: spec
            .cohort
            .iter()
            .filter_map(|(key, value)| {
                plan.cohort_keys
                    .get(key)
                    .map(|k| (k.header.clone(), value.clone()))
            })
            .collect(),
        legacy: plan.legacy.service.clone(),
        target: plan.target.service.clone(),
        maintenance: plan.maintenance.as_ref().map(|m| m.service.clone()),
        legacy_access: plan.legacy_access.clone(),
        router,
    };
    if let Some(header) = route.legacy_access_clash() {
        return Err(Problem::InvalidSpec {
            message: super::route::legacy_access_clash(header),
        });
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn plan(extra: Value) -> CutoverPlanSpec {
        let mut spec = json!({
            "legacy": {"service": {"name": "crm-legacy", "port": 80}},
            "target": {"service": {"name": "crm-next", "port": 8080}},
            "routing": {"gatewayAPI": {"parentRefs": [{"name": "edge"}]}},
            "cohortKeys": {"team": {"header": "x-crm-team"}, "region": {"header": "x-crm-region"}},
            "waves": [{"name": "support-emea"}],
        });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(spec).unwrap()
    }

    fn wave(cohort: Value, steps: Value) -> MigrationWaveSpec {
        serde_json::from_value(json!({"plan": "crm", "cohort": cohort, "steps": steps})).unwrap()
    }

    const IDENTITY: WaveIdentity<'static> = WaveIdentity {
        namespace: "crm",
        name: "support-emea",
        uid: "uid-1",
    };

    #[test]
    fn a_wave_that_fits_its_plan_has_no_problems_and_its_route() {
        let plan = plan(json!({}));
        let wave = wave(
            json!({"team": "support", "region": "emea"}),
            json!([{"setWeight": 50}]),
        );
        assert!(plan_problems("support-emea", &wave, "crm", &plan).is_empty());
        assert_eq!(
            needed_backends(&wave, &plan)
                .iter()
                .map(|(role, s)| (*role, s.name.as_str()))
                .collect::<Vec<_>>(),
            [("legacy", "crm-legacy"), ("target", "crm-next")]
        );
        let route = route(IDENTITY, &wave, "crm", &plan).unwrap();
        assert_eq!(
            route.cohort_headers.into_iter().collect::<Vec<_>>(),
            [
                ("x-crm-region".to_owned(), "emea".to_owned()),
                ("x-crm-team".to_owned(), "support".to_owned())
            ]
        );
        assert!(matches!(route.router, RouterConfig::GatewayApi { .. }));
        assert_eq!(
            (route.wave.as_str(), route.wave_uid.as_str()),
            ("support-emea", "uid-1")
        );
    }

    #[test]
    fn every_mismatch_with_the_plan_is_named() {
        let plan = plan(json!({"waves": [{"name": "other"}]}));
        let wave = wave(
            json!({"team": "support", "country": "fr"}),
            json!([{"quiet": {"duration": "5m"}}]),
        );
        let problems = plan_problems("support-emea", &wave, "crm", &plan);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(matches!(&problems[0], Problem::NotInPlan { plan } if plan == "crm"));
        assert!(
            matches!(&problems[1], Problem::UnknownCohortKey { key, known } if key == "country" && known == &["region", "team"])
        );
        assert_eq!(problems[2], Problem::MaintenanceNotConfigured);
        // No maintenance backend to look for when the plan names none.
        assert_eq!(needed_backends(&wave, &plan).len(), 2);
    }

    #[test]
    fn a_quiet_step_needs_the_maintenance_backend() {
        let plan = plan(json!({"maintenance": {"service": {"name": "crm-maint", "port": 81}}}));
        let quiet = wave(
            json!({"team": "support"}),
            json!([{"quiet": {"duration": "5m"}}]),
        );
        assert!(plan_problems("support-emea", &quiet, "crm", &plan).is_empty());
        assert_eq!(needed_backends(&quiet, &plan)[2].1.name, "crm-maint");
        let loud = wave(json!({"team": "support"}), json!([{"setWeight": 10}]));
        assert_eq!(needed_backends(&loud, &plan).len(), 2);
    }

    #[test]
    fn a_plan_no_router_can_carry_out_is_a_problem() {
        let wave = wave(json!({"team": "support"}), json!([{"setWeight": 10}]));
        let table = plan(json!({"routing": {"configMap": {"name": "crm-routing"}}}));
        assert_eq!(
            route(IDENTITY, &wave, "crm", &table).unwrap().router,
            RouterConfig::ConfigMap {
                name: "crm-routing".into()
            }
        );
        let clash = plan(json!({"legacyAccess": {"header": "X-CRM-Team", "value": "true"}}));
        let Err(Problem::InvalidSpec { message }) = route(IDENTITY, &wave, "crm", &clash) else {
            panic!("a legacy-access header that is a cohort header is refused");
        };
        assert!(
            message.contains("X-CRM-Team is also a cohort header"),
            "{message}"
        );
    }
}
