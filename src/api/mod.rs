//! The `switchyard.dev/v1alpha1` API: `CutoverPlan` and `MigrationWave`.
//!
//! The CRDs in `crds/` are generated from these types (`switchyard crds`), so every doc
//! comment here is what `kubectl explain` shows.

mod common;
mod duration;
mod plan;
pub mod rules;
mod wave;

pub use common::*;
pub use duration::*;
pub use plan::*;
pub use wave::*;

/// The API group of both kinds.
pub const GROUP: &str = "switchyard.dev";
/// The API version of both kinds.
pub const VERSION: &str = "v1alpha1";
