//! `lockstep export`: an inference checkpoint with the weights converted to f16 or bf16 by the
//! `half` crate (IEEE round-to-nearest-even, `f16::from_f32` / `bf16::from_f32`). Only `model.*`
//! tensors are kept, plus the input description and normalisation statistics (`input.*`, F64,
//! exactly as in the checkpoint), so `lockstep predict EXPORT INPUTS` needs nothing else; the
//! file is canonical safetensors with a checksum, like every checkpoint, with
//! `lockstep.format = lockstep-inference-v1`, `lockstep.dtype` and `lockstep.inference`.

use crate::TrainError;
use crate::checkpoint::{Checkpoint, Inference};
use lockstep_core::canonical_json;
use lockstep_core::tensorfile::{DType, TensorEntry, TensorFile};
use std::collections::BTreeMap;
use std::path::Path;

pub const FORMAT: &str = "lockstep-inference-v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F16,
    Bf16,
}

impl Precision {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f16" => Some(Precision::F16),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Convert `RUN/final.safetensors` and write it to `out` (refusing to overwrite).
pub fn export(run: &Path, precision: Precision, out: &Path) -> Result<(), TrainError> {
    if out.exists() {
        return Err(TrainError::run_dir(
            out,
            "already exists; nothing was written",
            "choose another --out",
        ));
    }
    let ck = Checkpoint::read(&run.join("final.safetensors"))?;
    let mut tensors = BTreeMap::new();
    for (name, t) in ck.tensors.iter().filter(|(n, _)| n.starts_with("model.")) {
        let v = t.to_f32().expect("checkpoints hold f32");
        let (dtype, data): (DType, Vec<u8>) = match precision {
            Precision::F16 => (
                DType::F16,
                v.iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
            Precision::Bf16 => (
                DType::BF16,
                v.iter()
                    .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                    .collect(),
            ),
        };
        tensors.insert(
            name.clone(),
            TensorEntry {
                dtype,
                shape: t.shape.clone(),
                data,
            },
        );
    }
    let mut metadata = BTreeMap::new();
    if let Some(inf) = &ck.inference {
        inf.put(&mut metadata, &mut tensors);
    }
    metadata.insert("lockstep.format".to_string(), FORMAT.to_string());
    metadata.insert("lockstep.dtype".to_string(), precision.name().to_string());
    metadata.insert(
        "lockstep.identity".to_string(),
        canonical_json(&ck.identity),
    );
    TensorFile { tensors, metadata }
        .write_atomic(out)
        .map_err(TrainError::from)
}

/// Read an exported inference checkpoint back as f32 tensors (the widening is exact).
pub fn read_inference(path: &Path, bytes: &[u8]) -> Result<Checkpoint, TrainError> {
    let mut f = TensorFile::from_bytes(bytes, path)?;
    f.verify_checksum(path)?;
    if f.metadata.get("lockstep.format").map(String::as_str) != Some(FORMAT) {
        return Err(TrainError::checkpoint(
            path,
            "is not a lockstep inference export",
            "pass a file written by `lockstep export`",
        ));
    }
    let identity = serde_json::from_str(
        f.metadata
            .get("lockstep.identity")
            .map(String::as_str)
            .unwrap_or(""),
    )
    .map_err(|e| {
        TrainError::checkpoint(
            path,
            format!("unreadable identity: {e}"),
            "re-export the checkpoint",
        )
    })?;
    let inference = Inference::take(&f.metadata, &mut f.tensors, path)?;
    let mut tensors = BTreeMap::new();
    for (name, t) in f.tensors {
        let v: Vec<f32> = match t.dtype {
            DType::F16 => t
                .data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => t
                .data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::F32 => t.to_f32().unwrap_or_default(),
            other => {
                return Err(TrainError::checkpoint(
                    path,
                    format!("tensor {name:?} has dtype {}", other.name()),
                    "re-export the checkpoint",
                ));
            }
        };
        tensors.insert(name, TensorEntry::from_f32(t.shape, &v));
    }
    let state = crate::checkpoint::TrainState {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        total_steps: 0,
        last_lr: 0.0,
        streams: BTreeMap::new(),
    };
    Ok(Checkpoint {
        identity,
        state,
        tensors,
        inference,
    })
}
