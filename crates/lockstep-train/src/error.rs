//! One error enum for the training crate; every variant names the input at fault and the fix.

use lockstep_core::CoreError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Core(#[from] CoreError),

    #[error("{path}: {what}\n  fix: {fix}")]
    Data {
        path: PathBuf,
        what: String,
        fix: String,
    },

    #[error("{path}: {what}\n  fix: {fix}")]
    Checkpoint {
        path: PathBuf,
        what: String,
        fix: String,
    },

    #[error("{path}: {what}\n  fix: {fix}")]
    RunDir {
        path: PathBuf,
        what: String,
        fix: String,
    },

    #[error("backend {backend}: {what}\n  fix: {fix}")]
    Backend {
        backend: String,
        what: String,
        fix: String,
    },

    /// Something the workers of a multi-process job found together (each worker reports it).
    #[error("workers: {what}\n  fix: {fix}")]
    Workers { what: String, fix: String },

    /// An error every worker of a multi-process job met alike (each reports it).
    #[error("{0}")]
    Everywhere(Box<TrainError>),

    #[error(
        "step {step}: {tensor} is not finite ({value}); training stopped, the last good checkpoint is kept\n  fix: lower optimizer.lr, check the data, or resume from an earlier checkpoint"
    )]
    NonFinite {
        step: u64,
        tensor: String,
        value: f32,
    },
}

impl TrainError {
    pub fn data(path: impl Into<PathBuf>, what: impl Into<String>, fix: impl Into<String>) -> Self {
        TrainError::Data {
            path: path.into(),
            what: what.into(),
            fix: fix.into(),
        }
    }
    pub fn checkpoint(
        path: impl Into<PathBuf>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        TrainError::Checkpoint {
            path: path.into(),
            what: what.into(),
            fix: fix.into(),
        }
    }
    pub fn run_dir(
        path: impl Into<PathBuf>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        TrainError::RunDir {
            path: path.into(),
            what: what.into(),
            fix: fix.into(),
        }
    }
}
