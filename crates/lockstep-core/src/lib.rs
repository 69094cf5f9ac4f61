//! lockstep-core: everything lockstep decides *before* a tensor exists — the config schema, the
//! named seed streams, the run manifest, the tolerance table and the canonical file formats.
//!
//! This crate has no Burn dependency on purpose: every byte it hashes or writes must be the same
//! whichever backend later runs the job, so nothing here may ask a backend anything.

pub mod canonical;
pub mod config;
pub mod error;
pub mod manifest;
pub mod seed;
pub mod streams;
pub mod tensorfile;
pub mod tolerance;

pub use canonical::{canonical_json, sha256_hex, write_atomic};
pub use config::{Config, load_config, parse_config};
pub use error::CoreError;
pub use manifest::RunManifest;
pub use seed::SeedStream;
pub use tensorfile::{DType, TensorEntry, TensorFile};
pub use tolerance::{Tolerance, tolerance_for};
