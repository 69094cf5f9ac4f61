//! The run manifest: what a run was (config, seed, data) and where it ran (code, toolchain,
//! backend, device). Written as canonical JSON to `RUN/manifest.json`.
//!
//! Only the *identity* part (`RunIdentity`) goes into checkpoints, because a checkpoint's bytes
//! must not depend on where it was computed: the same job on ndarray and on wgpu with lockstep's
//! kernels writes byte-identical checkpoints. Placement facts (backend, adapter, threads, git,
//! toolchain) live in `manifest.json` only.

use crate::config::Config;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the computation is: identical for the same job wherever it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    pub lockstep_version: String,
    pub config: Config,
    pub config_hash: String,
    pub seed: u64,
    /// Data file name → SHA-256 of its bytes as read (compressed bytes for .gz).
    pub datasets: BTreeMap<String, String>,
}

/// Where and with what the run was computed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// "ndarray", "flex" or "wgpu".
    pub backend: String,
    /// Free-form device facts: adapter name, vendor, driver, API, threads, arithmetic profile.
    pub device: BTreeMap<String, String>,
    pub threads: usize,
    pub git_sha: Option<String>,
    pub git_dirty: Option<bool>,
    pub cargo_lock_sha256: String,
    pub rustc: String,
    /// Worker processes that started the run (`mpirun -n N`; 1 without MPI). Placement, not
    /// identity: a resume may use any count dividing `train.shards` (recorded in `timing.jsonl`).
    #[serde(default = "one_worker")]
    pub workers: usize,
}

fn one_worker() -> usize {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    pub identity: RunIdentity,
    pub placement: Placement,
}
