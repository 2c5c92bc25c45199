//! Switchyard: a Kubernetes operator for phased, cohort-by-cohort migrations from a
//! legacy system to its replacement.

pub mod alerts;
pub mod analysis;
pub mod api;
pub mod cli;
pub mod controller;
pub mod crdgen;
pub mod engine;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod policies;
pub mod routing;
pub mod runtime;
pub mod writes;
