//! Scoring new inputs with a trained run: the library API a Rust service calls (`Predictor`)
//! and the input readers behind `lockstep predict`. The numbers are the ones `verify` checks:
//! the same normalisation (fitted on the run's training split), the same model and kernel set.

use crate::TrainError;
use crate::backend;
use crate::checkpoint::Checkpoint;
use crate::data::{Normalizer, load_dataset, maybe_gunzip, parse_idx_images};
use crate::model::{Model, upload};
use crate::run::read_manifest;
use burn::tensor::{Device, Tensor, TensorData};
use lockstep_core::config::BackendKind;
use lockstep_core::tensorfile::TensorFile;
use std::path::Path;

/// A finished run loaded for inference.
pub struct Predictor {
    model: Model,
    params: Vec<Tensor<1>>,
    device: Device,
    normalizer: Normalizer,
}

impl Predictor {
    /// Load `RUN/final.safetensors` on `backend` (default: the run's). Fits the normalisation
    /// from the run's training data, whose content must still match the recorded hashes.
    pub fn load(run: &Path, backend_kind: Option<BackendKind>) -> Result<Self, TrainError> {
        let manifest = read_manifest(run)?;
        let cfg = manifest.identity.config.clone();
        let data = load_dataset(&cfg.data, cfg.seed)?;
        if data.hashes != manifest.identity.datasets {
            return Err(TrainError::run_dir(
                run,
                "the training data changed since the run; its normalisation cannot be reproduced",
                "restore the run's data files",
            ));
        }
        let kind = backend_kind.unwrap_or(
            BackendKind::parse(&manifest.placement.backend).unwrap_or(BackendKind::Ndarray),
        );
        let be = backend::open(kind, 0, None)?;
        let ck_path = run.join("final.safetensors");
        let ck = Checkpoint::read(&ck_path)?;
        let model = Model::new(
            &cfg.model,
            cfg.train.kernels,
            data.image_shape,
            data.classes,
        );
        let mut params = Vec::new();
        for s in &model.specs {
            params.push(upload(
                ck.tensor(&format!("model.{}", s.name), &s.shape, &ck_path)?,
                &be.device,
            ));
        }
        Ok(Predictor {
            model,
            params,
            device: be.device,
            normalizer: data.normalizer,
        })
    }

    /// Pixels per input (`channels * height * width`).
    pub fn input_dim(&self) -> usize {
        self.model.input_dim()
    }

    pub fn classes(&self) -> usize {
        self.model.classes
    }

    /// Logits `[n, classes]` (row-major) for `n` inputs of raw pixel values (as stored in the
    /// data files, before normalisation).
    pub fn logits(&self, raw_pixels: &[f32]) -> Vec<f32> {
        let dim = self.input_dim();
        assert_eq!(
            raw_pixels.len() % dim,
            0,
            "predict: {} values is not a whole number of {dim}-pixel inputs",
            raw_pixels.len()
        );
        let n = raw_pixels.len() / dim;
        if n == 0 {
            return vec![];
        }
        let x: Vec<f32> = raw_pixels
            .iter()
            .map(|&p| self.normalizer.apply(p))
            .collect();
        let xt = Tensor::<2>::from_data(TensorData::new(x, [n, dim]), &self.device);
        self.model
            .forward(&self.params, xt, None)
            .try_into_vec_as::<f32>()
            .expect("f32 logits")
    }
}

/// Raw pixels from an input file: IDX images (raw or .gz), CSV (one input per row, `dim`
/// pixel columns, an optional trailing label column is ignored), or safetensors (an F32 tensor
/// named `x`, `[n, dim]`).
pub fn read_inputs(path: &Path, dim: usize) -> Result<Vec<f32>, TrainError> {
    let bad = |what: String, fix: &str| TrainError::data(path, what, fix);
    if path.is_dir() {
        return Err(bad(
            "is a directory".into(),
            "pass an IDX, CSV or safetensors file",
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}"), "check the path"))?;
    let bytes = maybe_gunzip(&bytes, path)?;
    if bytes.starts_with(&[0, 0, 8, 3]) {
        let (px, d) = parse_idx_images(&bytes, path)?;
        if d != dim {
            return Err(bad(
                format!("images have {d} pixels, the model takes {dim}"),
                "pass images of the training shape",
            ));
        }
        return Ok(px);
    }
    let name = path.to_string_lossy();
    if name.ends_with(".safetensors") {
        let f = TensorFile::from_bytes(&bytes, path)?;
        let x = f
            .tensors
            .get("x")
            .filter(|t| t.shape.len() == 2 && t.shape[1] == dim)
            .and_then(|t| t.to_f32());
        return x.ok_or_else(|| {
            bad(
                format!("needs an F32 tensor \"x\" of shape [n, {dim}]"),
                "write the inputs as x: [n, dim] float32",
            )
        });
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        bad(
            format!("not an IDX, safetensors or UTF-8 CSV file: {e}"),
            "pass an IDX, CSV or .safetensors file",
        )
    })?;
    let mut out = Vec::new();
    for (ln, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != dim && fields.len() != dim + 1 {
            return Err(bad(
                format!(
                    "line {}: {} columns, expected {dim} pixels (and optionally a label)",
                    ln + 1,
                    fields.len()
                ),
                "one input per row",
            ));
        }
        for f in &fields[..dim] {
            out.push(
                f.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        bad(
                            format!("line {}: {f:?} is not a finite number", ln + 1),
                            "fix the row",
                        )
                    })?,
            );
        }
    }
    Ok(out)
}
