//! lockstep-train: models, data, the training loop, checkpoints — the part that uses Burn.
//!
//! Library first: the `lockstep` binary is a thin layer over `run::train`, `run::resume` and
//! `checkpoint::Checkpoint`.

pub mod backend;
pub mod checkpoint;
pub mod conformance;
pub mod data;
pub mod diff;
pub mod error;
pub mod export;
pub mod gpt;
pub mod model;
pub mod nn;
pub mod opset;
pub mod optim;
pub mod plot;
pub mod predict;
pub mod run;
pub mod runfiles;
pub mod sample;
pub mod task;
pub mod text;
pub mod tracking;
pub mod verify;
pub mod workers;

pub use error::TrainError;
pub use run::{BuildInfo, RunOptions, RunSummary, resume, train};

pub use predict::Predictor;
