//! Checkpoints: canonical safetensors files holding everything needed to continue bitwise.
//!
//! Tensors (all F32, row-major, shapes as the model uses them):
//! - `model.<param>`: weights. Linear weights are `[d_in, d_out]` (`y = x @ W + b`), conv weights
//!   `[c_out, c_in, k, k]`, biases `[d]`.
//! - `optim.<slot>.<param>`: optimizer moments (`m`/`v` for Adam/AdamW, `momentum` for SGD).
//!
//! - `input.pixel_scale`, `input.mean`, `input.std` (F64, `[1]`): the normalisation fitted on
//!   the training split (`x = ((raw / pixel_scale) - mean) / std`, in f64, then rounded to f32),
//!   so inference needs no training data.
//!
//! Metadata (strings): `lockstep.format`, `lockstep.identity` (canonical JSON `RunIdentity`:
//! config, config hash, seed, dataset hashes, version), `lockstep.state` (canonical JSON
//! `TrainState`: step, epoch, position in the epoch, schedule position, stream positions),
//! `lockstep.inference` (canonical JSON `InputSpec`: input shape and stored dtype, normalisation
//! mode, class count and names) and `lockstep.checksum` (see `lockstep_core::tensorfile`). No
//! timestamps, paths, hosts, backend or device names: the bytes are a function of the
//! computation only.
//!
//! Format v1 (before the inference fields) still loads: training resumes from it, and inference
//! falls back to recomputing the normalisation from the training data, saying so when it is
//! missing.

use crate::TrainError;
use lockstep_core::canonical_json;
use lockstep_core::manifest::RunIdentity;
use lockstep_core::tensorfile::{DType, TensorEntry, TensorFile};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "lockstep-checkpoint-v2";
/// The format before the inference fields; read, never written.
pub const FORMAT_V1: &str = "lockstep-checkpoint-v1";

/// How a model's inputs look and are normalised: everything inference needs besides the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// `[channels, height, width]` of one input.
    pub shape: [usize; 3],
    /// How raw inputs are stored in the data files: `"u8"` (IDX images) or `"f32"` (CSV).
    pub dtype: String,
    /// `"unit"` (`raw / pixel_scale`) or `"standardize"` (then `(x - mean) / std`).
    pub normalize: String,
    pub classes: usize,
    /// Class names by index, when the dataset defines them (empty otherwise).
    pub class_names: Vec<String>,
}

/// `InputSpec` plus the normalisation statistics (stored as F64 tensors `input.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct Inference {
    pub spec: InputSpec,
    pub pixel_scale: f64,
    pub mean: f64,
    pub std: f64,
}

const INPUT_TENSORS: [&str; 3] = ["input.pixel_scale", "input.mean", "input.std"];

impl Inference {
    fn tensors(&self) -> [(&'static str, TensorEntry); 3] {
        let t = |v: f64| TensorEntry {
            dtype: DType::F64,
            shape: vec![1],
            data: v.to_le_bytes().to_vec(),
        };
        [
            (INPUT_TENSORS[0], t(self.pixel_scale)),
            (INPUT_TENSORS[1], t(self.mean)),
            (INPUT_TENSORS[2], t(self.std)),
        ]
    }

    /// Decode from a file's metadata and `input.*` tensors (removed from `tensors`).
    pub(crate) fn take(
        metadata: &BTreeMap<String, String>,
        tensors: &mut BTreeMap<String, TensorEntry>,
        path: &Path,
    ) -> Result<Option<Self>, TrainError> {
        let bad = |what: String| {
            TrainError::checkpoint(
                path,
                what,
                "use a checkpoint written by this version of lockstep",
            )
        };
        let Some(json) = metadata.get("lockstep.inference") else {
            return match INPUT_TENSORS.iter().find(|n| tensors.contains_key(**n)) {
                Some(n) => Err(bad(format!(
                    "holds tensor {n:?} but no lockstep.inference metadata"
                ))),
                None => Ok(None),
            };
        };
        let spec: InputSpec = serde_json::from_str(json)
            .map_err(|e| bad(format!("lockstep.inference metadata is unreadable: {e}")))?;
        let mut stat = |name: &str| -> Result<f64, TrainError> {
            let t = tensors
                .remove(name)
                .ok_or_else(|| bad(format!("has lockstep.inference but no tensor {name:?}")))?;
            let v = (t.dtype == DType::F64 && t.shape == [1])
                .then(|| f64::from_le_bytes(t.data[..8].try_into().expect("8 bytes")))
                .ok_or_else(|| bad(format!("tensor {name:?} must be F64 of shape [1]")))?;
            if !v.is_finite() {
                return Err(bad(format!("tensor {name:?} is not finite ({v})")));
            }
            Ok(v)
        };
        let inf = Inference {
            pixel_scale: stat(INPUT_TENSORS[0])?,
            mean: stat(INPUT_TENSORS[1])?,
            std: stat(INPUT_TENSORS[2])?,
            spec,
        };
        if inf.pixel_scale <= 0.0 || inf.std <= 0.0 {
            return Err(bad(format!(
                "input.pixel_scale {} and input.std {} must be positive",
                inf.pixel_scale, inf.std
            )));
        }
        Ok(Some(inf))
    }

    /// Add the metadata entry and `input.*` tensors to a file being written.
    pub(crate) fn put(
        &self,
        metadata: &mut BTreeMap<String, String>,
        tensors: &mut BTreeMap<String, TensorEntry>,
    ) {
        metadata.insert("lockstep.inference".to_string(), canonical_json(&self.spec));
        for (n, t) in self.tensors() {
            tensors.insert(n.to_string(), t);
        }
    }
}

/// Where training stands; with the tensors, enough to continue bit for bit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken so far (also the schedule position and Adam's `t`).
    pub step: u64,
    /// Epoch the next batch belongs to.
    pub epoch: u64,
    /// Index of the next batch within that epoch's order.
    pub batch_in_epoch: u64,
    pub total_steps: u64,
    /// Learning rate used for the last step taken.
    pub last_lr: f32,
    /// Stream name → 32-bit words consumed (decimal string: u128 does not fit JSON numbers).
    pub streams: BTreeMap<String, String>,
}

/// A checkpoint in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub identity: RunIdentity,
    pub state: TrainState,
    /// `model.*` and `optim.*` tensors by full name.
    pub tensors: BTreeMap<String, TensorEntry>,
    /// What inference needs besides the weights; `None` in a format-v1 checkpoint.
    pub inference: Option<Inference>,
}

impl Checkpoint {
    pub fn to_file(&self) -> TensorFile {
        let mut metadata = BTreeMap::new();
        metadata.insert("lockstep.format".to_string(), FORMAT.to_string());
        metadata.insert(
            "lockstep.identity".to_string(),
            canonical_json(&self.identity),
        );
        metadata.insert("lockstep.state".to_string(), canonical_json(&self.state));
        let mut tensors = self.tensors.clone();
        if let Some(inf) = &self.inference {
            inf.put(&mut metadata, &mut tensors);
        } else {
            // Only a v1 checkpoint read back lacks these; it is written back as v1.
            metadata.insert("lockstep.format".to_string(), FORMAT_V1.to_string());
        }
        TensorFile { tensors, metadata }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_file().to_bytes_with_checksum()
    }

    pub fn write(&self, path: &Path) -> Result<(), TrainError> {
        self.to_file().write_atomic(path).map_err(TrainError::from)
    }

    /// Read, verify (byte-exact canonical form, checksum, format, dtypes) and decode.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let bytes = read_bounded(path)?;
        Self::from_bytes(&bytes, path)
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, TrainError> {
        let mut file = TensorFile::from_bytes(bytes, path)?;
        file.verify_checksum(path)?;
        if file.to_bytes() != bytes {
            return Err(TrainError::checkpoint(
                path,
                "is not in lockstep's canonical layout (rewritten by another program?)",
                "use the checkpoint as lockstep wrote it",
            ));
        }
        let bad = |what: String| {
            TrainError::checkpoint(
                path,
                what,
                "use a checkpoint written by this version of lockstep",
            )
        };
        let v1 = match file.metadata.get("lockstep.format") {
            Some(f) if f == FORMAT => false,
            Some(f) if f == FORMAT_V1 => true,
            other => return Err(bad(format!("format is {other:?}, expected {FORMAT:?}"))),
        };
        let identity: RunIdentity = serde_json::from_str(
            file.metadata
                .get("lockstep.identity")
                .map(String::as_str)
                .unwrap_or(""),
        )
        .map_err(|e| bad(format!("lockstep.identity metadata is unreadable: {e}")))?;
        let state: TrainState = serde_json::from_str(
            file.metadata
                .get("lockstep.state")
                .map(String::as_str)
                .unwrap_or(""),
        )
        .map_err(|e| bad(format!("lockstep.state metadata is unreadable: {e}")))?;
        let inference = Inference::take(&file.metadata, &mut file.tensors, path)?;
        if inference.is_none() != v1 {
            return Err(bad(format!(
                "format {} but {} lockstep.inference metadata",
                if v1 { FORMAT_V1 } else { FORMAT },
                if v1 { "has" } else { "no" }
            )));
        }
        if let Some((name, t)) = file.tensors.iter().find(|(_, t)| t.dtype != DType::F32) {
            return Err(bad(format!(
                "tensor {name:?} has dtype {}, lockstep checkpoints hold F32 only",
                t.dtype.name()
            )));
        }
        Ok(Checkpoint {
            identity,
            state,
            tensors: file.tensors,
            inference,
        })
    }

    /// The f32 values of tensor `name`, checked against the expected shape and for NaN/Inf, with
    /// subnormals flushed to signed zero.
    pub fn tensor(&self, name: &str, shape: &[usize], path: &Path) -> Result<Vec<f32>, TrainError> {
        let t = self.tensors.get(name).ok_or_else(|| {
            TrainError::checkpoint(
                path,
                format!("has no tensor {name:?} (checkpoint of a different model?)"),
                "resume with the config the checkpoint was trained with",
            )
        })?;
        if t.shape != shape {
            return Err(TrainError::checkpoint(
                path,
                format!(
                    "tensor {name:?} has shape {:?}, the model needs {shape:?} (different model shape)",
                    t.shape
                ),
                "resume with the config the checkpoint was trained with",
            ));
        }
        let values = t.to_f32().expect("dtype checked at load");
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(TrainError::checkpoint(
                path,
                format!("tensor {name:?} holds a non-finite value ({bad})"),
                "use a checkpoint from before the run diverged (lockstep never writes one with NaN/Inf)",
            ));
        }
        // lockstep's kernels flush subnormals (lockstep_kernels::arith): a tensor holding one
        // loads flushed, in memory only — the file is not touched.
        Ok(lockstep_kernels::arith::flush_all(&values))
    }
}

/// Read a file refusing directories, with an error that names it.
fn read_bounded(path: &Path) -> Result<Vec<u8>, TrainError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| TrainError::checkpoint(path, format!("cannot open: {e}"), "check the path"))?;
    if meta.is_dir() {
        return Err(TrainError::checkpoint(
            path,
            "is a directory, not a checkpoint file",
            "pass a .safetensors file (e.g. RUN/final.safetensors)",
        ));
    }
    std::fs::read(path)
        .map_err(|e| TrainError::checkpoint(path, format!("cannot read: {e}"), "check permissions"))
}

/// `RUN/checkpoints/step-0000123.safetensors`.
pub fn checkpoint_path(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints")
        .join(format!("step-{step:07}.safetensors"))
}

/// The newest `step-*.safetensors` in `RUN/checkpoints` by step number.
pub fn latest_checkpoint(run: &Path) -> Option<(u64, PathBuf)> {
    let dir = std::fs::read_dir(run.join("checkpoints")).ok()?;
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse::<u64>()
                .ok()?;
            Some((step, e.path()))
        })
        .max_by_key(|(s, _)| *s)
}
