//! Scoring new inputs with a trained model: the library API a Rust service calls (`Predictor`)
//! and the input readers behind `lockstep predict`. The numbers are the ones `verify` checks:
//! the same normalisation (the statistics the checkpoint recorded from the training split), the
//! same model and kernel set. Nothing here reads training data, except for a format-v1
//! checkpoint, which predates the recorded statistics.

use crate::TrainError;
use crate::backend;
use crate::checkpoint::{Checkpoint, InputSpec};
use crate::data::{Normalizer, load_dataset, maybe_gunzip, parse_idx_images};
use crate::model::{Model, upload};
use crate::run::read_manifest;
use burn::tensor::{Device, Tensor, TensorData};
use lockstep_core::config::BackendKind;
use lockstep_core::tensorfile::{DType, TensorFile};
use std::path::Path;

/// A trained model loaded for inference.
pub struct Predictor {
    model: Model,
    params: Vec<Tensor<1>>,
    device: Device,
    normalizer: Normalizer,
    spec: InputSpec,
}

impl Predictor {
    /// Load a finished run (`RUN/final.safetensors`, default backend: the run's) or a checkpoint
    /// file: a `lockstep export` file or any checkpoint (default backend: ndarray). Only the
    /// checkpoint is read: the normalisation statistics and input description travel inside it.
    pub fn load(source: &Path, backend_kind: Option<BackendKind>) -> Result<Self, TrainError> {
        let (ck_path, default_backend) = if source.is_dir() {
            let manifest = read_manifest(source)?;
            (
                source.join("final.safetensors"),
                BackendKind::parse(&manifest.placement.backend),
            )
        } else {
            (source.to_path_buf(), None)
        };
        let ck = read_any_checkpoint(&ck_path)?;
        let cfg = ck.identity.config.clone();
        let (normalizer, spec) = match &ck.inference {
            Some(inf) => (Normalizer::from_inference(inf), inf.spec.clone()),
            None => {
                // Format v1: the statistics can only be refitted on the training data.
                let old = |e: TrainError| {
                    TrainError::checkpoint(
                        &ck_path,
                        format!(
                            "was written before checkpoints carried their normalisation statistics (format v1), so they can only be recomputed from the training data, which failed:\n  {e}"
                        ),
                        "restore the run's training data once and resume or retrain with this version to get a self-contained checkpoint",
                    )
                };
                let data = load_dataset(&cfg.data, cfg.seed).map_err(old)?;
                if data.hashes != ck.identity.datasets {
                    return Err(old(TrainError::data(
                        cfg.data.dir.clone().unwrap_or_default(),
                        "the training data changed since the run",
                        "restore the run's data files",
                    )));
                }
                let spec = data.inference(&cfg.data).spec;
                (data.normalizer, spec)
            }
        };
        let kind = backend_kind
            .or(default_backend)
            .unwrap_or(BackendKind::Ndarray);
        let be = backend::open(kind, 0, None)?;
        be.require_arith(cfg.train.arith)?;
        let model =
            crate::run::job_model(&cfg, None, spec.shape, spec.classes, &be.device, &ck_path)?;
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
            normalizer,
            spec,
        })
    }

    /// Pixels per input (`channels * height * width`).
    pub fn input_dim(&self) -> usize {
        self.model.input_dim()
    }

    /// The model's input description (shape, stored dtype, normalisation, classes and names).
    pub fn input_spec(&self) -> &InputSpec {
        &self.spec
    }

    pub fn classes(&self) -> usize {
        self.model.classes
    }

    /// The name of class `c`, when the dataset defines names.
    pub fn class_name(&self, c: usize) -> Option<&str> {
        self.spec.class_names.get(c).map(String::as_str)
    }

    /// Logits `[n, classes]` (row-major) for `n` inputs of raw pixel values (as stored in the
    /// data files, before normalisation). Panics unless `raw_pixels.len()` is a multiple of
    /// `input_dim()` (`read_inputs` checks files).
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

impl Predictor {
    /// The vocabulary of a language model (`None` for a classifier).
    pub fn vocab(&self) -> Option<crate::text::Vocab> {
        let tokenizer = match self.spec.dtype.as_str() {
            "char-token" => lockstep_core::config::Tokenizer::Char,
            "byte-token" => lockstep_core::config::Tokenizer::Byte,
            _ => return None,
        };
        crate::text::Vocab::from_names(tokenizer, &self.spec.class_names).ok()
    }

    /// The longest context a language model reads (its `block_size`).
    pub fn context(&self) -> usize {
        self.model.input_dim()
    }

    /// A language model's logits for the token after `context` (at most [`Self::context`]
    /// tokens, at least one).
    pub fn next_logits(&self, context: &[u32]) -> Vec<f32> {
        let t = context.len();
        assert!(
            t >= 1 && t <= self.context(),
            "next_logits: context of {t} tokens"
        );
        let x: Vec<f32> = context.iter().map(|&v| v as f32).collect();
        let xt = Tensor::<2>::from_data(TensorData::new(x, [1, t]), &self.device);
        let all = self
            .model
            .forward(&self.params, xt, None)
            .try_into_vec_as::<f32>()
            .expect("f32 logits");
        all[(t - 1) * self.model.classes..].to_vec()
    }
}

/// A full checkpoint or a `lockstep export` file, told apart by `lockstep.format`.
fn read_any_checkpoint(path: &Path) -> Result<Checkpoint, TrainError> {
    if path.is_dir() {
        return Err(TrainError::checkpoint(
            path,
            "is a directory without manifest.json",
            "pass a run directory, a checkpoint or an exported .safetensors file",
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        TrainError::checkpoint(
            path,
            format!("cannot read: {e}"),
            "pass a run directory, a checkpoint or an exported .safetensors file",
        )
    })?;
    let f = TensorFile::from_bytes(&bytes, path)?;
    if f.metadata.get("lockstep.format").map(String::as_str) == Some(crate::export::FORMAT) {
        crate::export::read_inference(path, &bytes)
    } else {
        Checkpoint::from_bytes(&bytes, path)
    }
}

/// Raw pixels from an input file, checked against the model's input `shape` `[c, h, w]`:
/// - IDX images (raw or .gz), `h*w` pixels each;
/// - `.npy` (NumPy format 1-3, C order) or `.safetensors` (tensor `x`): dtype u8, f32 or f64,
///   shape `[n, c*h*w]`, `[n, h, w]` (one channel) or `[n, c, h, w]`;
/// - CSV: one input per row, `c*h*w` pixel columns, an optional trailing label column ignored.
///
/// Every value must be finite.
pub fn read_inputs(path: &Path, shape: [usize; 3]) -> Result<Vec<f32>, TrainError> {
    let dim: usize = shape.iter().product();
    let bad = |what: String, fix: &str| TrainError::data(path, what, fix);
    if path.is_dir() {
        return Err(bad(
            "is a directory".into(),
            "pass an IDX, .npy, .safetensors or CSV file",
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}"), "check the path"))?;
    let bytes = maybe_gunzip(&bytes, path)?;
    let name = path.to_string_lossy();
    let (values, found_shape) = if bytes.starts_with(&[0, 0, 8, 3]) {
        let (px, d) = parse_idx_images(&bytes, path)?;
        if d != dim {
            return Err(bad(
                format!(
                    "images have {d} pixels each, the model takes inputs of shape {shape:?} ({dim} values)"
                ),
                "pass images of the training shape",
            ));
        }
        return Ok(px);
    } else if bytes.starts_with(b"\x93NUMPY") {
        parse_npy(&bytes, path)?
    } else if name.ends_with(".safetensors") {
        let f = TensorFile::from_bytes(&bytes, path)?;
        let x = f.tensors.get("x").ok_or_else(|| {
            bad(
                format!(
                    "has no tensor \"x\" (found {:?})",
                    f.tensors.keys().collect::<Vec<_>>()
                ),
                "store the inputs as a tensor named x",
            )
        })?;
        (decode(x.dtype, &x.data, path)?, x.shape.clone())
    } else {
        return parse_csv_inputs(&bytes, path, dim);
    };
    let fits = match found_shape.as_slice() {
        [_, d] => *d == dim,
        [_, h, w] => shape[0] == 1 && [*h, *w] == [shape[1], shape[2]],
        [_, c, h, w] => [*c, *h, *w] == shape,
        _ => false,
    };
    if !fits {
        return Err(bad(
            format!(
                "inputs have shape {found_shape:?}, the model takes [n, {dim}] or [n, {}, {}, {}] (input shape {shape:?})",
                shape[0], shape[1], shape[2]
            ),
            "reshape the inputs to the model's input shape",
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(
            format!(
                "input {} holds a non-finite value ({}) at element {}",
                i / dim,
                values[i],
                i % dim
            ),
            "remove or fix that input",
        ));
    }
    Ok(values)
}

/// u8, f32 or f64 little-endian values as f32 (f64 rounded to nearest).
fn decode(dtype: DType, data: &[u8], path: &Path) -> Result<Vec<f32>, TrainError> {
    Ok(match dtype {
        DType::U8 => data.iter().map(|&b| b as f32).collect(),
        DType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        other => {
            return Err(TrainError::data(
                path,
                format!(
                    "inputs have dtype {}, expected U8, F32 or F64",
                    other.name()
                ),
                "convert the inputs to uint8 pixels or float32",
            ));
        }
    })
}

/// A NumPy `.npy` array (format 1.0-3.0): `descr` `|u1`, `<f4` or `<f8`, C order.
fn parse_npy(b: &[u8], path: &Path) -> Result<(Vec<f32>, Vec<usize>), TrainError> {
    let bad = |what: String| {
        TrainError::data(
            path,
            what,
            "write the inputs with numpy.save (uint8, float32 or float64, C order)",
        )
    };
    if b.len() < 10 {
        return Err(bad("truncated .npy header".into()));
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(bad(format!("unsupported .npy format version {v}"))),
    };
    let header = b
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated or non-UTF-8 .npy header".into()))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[at..].trim_start())
    };
    let descr = field("descr")
        .and_then(|v| v.strip_prefix('\'')?.split('\'').next())
        .ok_or_else(|| bad(format!("no descr in header {header:?}")))?;
    let dtype = match descr {
        "|u1" | "<u1" => DType::U8,
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        d => {
            return Err(bad(format!(
                "inputs have dtype {d:?}, expected uint8 (|u1), float32 (<f4) or float64 (<f8)"
            )));
        }
    };
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad("array is in Fortran order".into()));
    }
    let dims = field("shape")
        .and_then(|v| v.strip_prefix('(')?.split(')').next())
        .ok_or_else(|| bad(format!("no shape in header {header:?}")))?;
    let shape = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad shape ({dims}): {e}")))?;
    let data = &b[start + hlen..];
    let need = shape
        .iter()
        .try_fold(dtype.size(), |a, &d| a.checked_mul(d));
    if need != Some(data.len()) {
        return Err(bad(format!(
            "shape {shape:?} of {} needs {need:?} bytes, the file holds {}",
            dtype.name(),
            data.len()
        )));
    }
    Ok((decode(dtype, data, path)?, shape))
}

fn parse_csv_inputs(bytes: &[u8], path: &Path, dim: usize) -> Result<Vec<f32>, TrainError> {
    let bad = |what: String, fix: &str| TrainError::data(path, what, fix);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        bad(
            format!("not an IDX, .npy, safetensors or UTF-8 CSV file: {e}"),
            "pass an IDX, .npy, .safetensors or CSV file",
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
