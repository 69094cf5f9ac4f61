//! One error enum for the core crate. Every variant a user can cause names the input (file, key,
//! value) and says how to fix it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(
        "{path}: cannot read config: {source}\n  fix: check the path; shipped configs live in configs/"
    )]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: invalid TOML or schema: {message}")]
    ConfigParse { path: PathBuf, message: String },

    #[error("{path}: key `{key}` = {value} is invalid: {reason}\n  fix: {fix}")]
    ConfigValue {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
        fix: String,
    },

    #[error("{path}: {what}\n  fix: {fix}")]
    BadFile {
        path: PathBuf,
        what: String,
        fix: String,
    },

    #[error("{path}: I/O error while {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
}

impl CoreError {
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        CoreError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    pub fn bad_file(
        path: impl Into<PathBuf>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        CoreError::BadFile {
            path: path.into(),
            what: what.into(),
            fix: fix.into(),
        }
    }
}
