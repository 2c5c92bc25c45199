//! The wave series: how many waves are in each phase, per namespace, and rollbacks by
//! namespace and cause, always; each wave's own phase and target weight only with
//! `--per-wave-metrics`, because those are ten series or more per wave (100,000 at
//! 10,000 waves) and the same detail is in each wave's status, Events and `kubectl wave`.
//!
//! A namespace's series exist while the leader knows a wave in it; a wave's own series
//! while the wave exists. A replica that stops leading drops them all, so only the
//! leader reports waves.

use std::{collections::HashMap, sync::Mutex};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{PHASES, RollbackCause, phase_name};
use crate::api::WavePhase;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespacePhaseLabels {
    namespace: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceCauseLabels {
    namespace: String,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaveLabels {
    namespace: String,
    wave: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WavePhaseLabels {
    namespace: String,
    wave: String,
    phase: &'static str,
}

/// The per-wave families, registered only when asked for.
struct PerWave {
    phase: Family<WavePhaseLabels, Gauge>,
    target_weight: Family<WaveLabels, Gauge>,
}

/// What the counts are made from: each known wave's phase, and how many waves each
/// namespace has.
#[derive(Default)]
struct Known {
    phases: HashMap<(String, String), WavePhase>,
    per_namespace: HashMap<String, usize>,
}

pub(super) struct WaveSeries {
    waves: Family<NamespacePhaseLabels, Gauge>,
    rollbacks: Family<NamespaceCauseLabels, Counter>,
    per_wave: Option<PerWave>,
    known: Mutex<Known>,
}

impl WaveSeries {
    pub(super) fn register(registry: &mut Registry, per_wave: bool) -> Self {
        let waves = Family::default();
        let rollbacks = Family::default();
        registry.register(
            "waves",
            "How many MigrationWaves are in each phase, by namespace",
            Family::clone(&waves),
        );
        registry.register(
            "rollbacks",
            "Waves rolled back, by namespace and cause",
            Family::clone(&rollbacks),
        );
        let per_wave = per_wave.then(|| {
            let per_wave = PerWave {
                phase: Family::default(),
                target_weight: Family::default(),
            };
            registry.register(
                "wave_phase",
                "1 for the phase each MigrationWave is in, 0 for the other phases (--per-wave-metrics)",
                Family::clone(&per_wave.phase),
            );
            registry.register(
                "wave_target_weight",
                "The percentage of the wave's cohort routed to the target (--per-wave-metrics)",
                Family::clone(&per_wave.target_weight),
            );
            per_wave
        });
        Self {
            waves,
            rollbacks,
            per_wave,
            known: Mutex::default(),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, namespace: &str, phase: WavePhase) -> Gauge {
        self.waves
            .get_or_create(&NamespacePhaseLabels {
                namespace: namespace.to_owned(),
                phase: phase_name(phase),
            })
            .clone()
    }

    pub(super) fn observe(&self, namespace: &str, wave: &str, phase: WavePhase, weight: i32) {
        {
            let mut known = self.known();
            let before = known
                .phases
                .insert((namespace.to_owned(), wave.to_owned()), phase);
            match before {
                None => {
                    let waves = known.per_namespace.entry(namespace.to_owned()).or_default();
                    if *waves == 0 {
                        // Every phase of the namespace, at 0 until a wave is in it.
                        for each in PHASES {
                            self.count(namespace, each);
                        }
                    }
                    *waves += 1;
                    self.count(namespace, phase).inc();
                }
                Some(before) if before != phase => {
                    self.count(namespace, before).dec();
                    self.count(namespace, phase).inc();
                }
                Some(_) => {}
            }
        }
        let Some(per_wave) = &self.per_wave else {
            return;
        };
        for each in PHASES {
            per_wave
                .phase
                .get_or_create(&WavePhaseLabels {
                    namespace: namespace.to_owned(),
                    wave: wave.to_owned(),
                    phase: phase_name(each),
                })
                .set(i64::from(each == phase));
        }
        per_wave
            .target_weight
            .get_or_create(&WaveLabels {
                namespace: namespace.to_owned(),
                wave: wave.to_owned(),
            })
            .set(i64::from(weight));
    }

    pub(super) fn rollback(&self, namespace: &str, cause: RollbackCause) {
        self.rollbacks
            .get_or_create(&NamespaceCauseLabels {
                namespace: namespace.to_owned(),
                cause: cause.as_str(),
            })
            .inc();
    }

    pub(super) fn forget(&self, namespace: &str, wave: &str) {
        {
            let mut known = self.known();
            if let Some(phase) = known
                .phases
                .remove(&(namespace.to_owned(), wave.to_owned()))
            {
                self.count(namespace, phase).dec();
                let waves = known.per_namespace.entry(namespace.to_owned()).or_default();
                *waves = waves.saturating_sub(1);
                if *waves == 0 {
                    known.per_namespace.remove(namespace);
                    self.remove_namespace(namespace);
                }
            }
        }
        self.remove_wave(namespace, wave);
    }

    pub(super) fn forget_all(&self) {
        let known = std::mem::take(&mut *self.known());
        for namespace in known.per_namespace.keys() {
            self.remove_namespace(namespace);
        }
        for (namespace, wave) in known.phases.keys() {
            self.remove_wave(namespace, wave);
        }
        // Rollbacks of waves this replica never observed (none today) go too.
        self.rollbacks.clear();
    }

    fn remove_namespace(&self, namespace: &str) {
        for phase in PHASES {
            self.waves.remove(&NamespacePhaseLabels {
                namespace: namespace.to_owned(),
                phase: phase_name(phase),
            });
        }
        for cause in RollbackCause::ALL {
            self.rollbacks.remove(&NamespaceCauseLabels {
                namespace: namespace.to_owned(),
                cause: cause.as_str(),
            });
        }
    }

    fn remove_wave(&self, namespace: &str, wave: &str) {
        let Some(per_wave) = &self.per_wave else {
            return;
        };
        for phase in PHASES {
            per_wave.phase.remove(&WavePhaseLabels {
                namespace: namespace.to_owned(),
                wave: wave.to_owned(),
                phase: phase_name(phase),
            });
        }
        per_wave.target_weight.remove(&WaveLabels {
            namespace: namespace.to_owned(),
            wave: wave.to_owned(),
        });
    }
}
