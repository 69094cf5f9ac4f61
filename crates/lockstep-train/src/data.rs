//! Data sets as host arrays: the embedded digits CSV, IDX files (raw or gzip) and CSV files,
//! split and normalised deterministically.
//!
//! Order guarantees: samples keep file order; the digits/CSV test split takes the first
//! `round(n * test_fraction)` indices of the permutation drawn from stream `split/test`, the
//! validation split the first `validation_size` of `split/validation` over the training indices;
//! both sides are then sorted ascending. Normalisation statistics are f64 sums in index order.
//! Every file read is hashed (SHA-256 of its bytes as stored) for the manifest.

use crate::TrainError;
use crate::checkpoint::{Inference, InputSpec};
use flate2::read::GzDecoder;
use lockstep_core::config::{DataConfig, DatasetKind, Normalize};
use lockstep_core::{SeedStream, sha256_hex};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// scikit-learn's digits (UCI, CC BY 4.0), see data/digits/README.md.
pub static DIGITS_CSV_GZ: &[u8] = include_bytes!("../../../data/digits/digits.csv.gz");

/// Decompressed data larger than this is refused (Fashion-MNIST train images are 47 MB).
const MAX_DECOMPRESSED: u64 = 1 << 30;

/// One split: `n` samples of `dim` features each, row-major, and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub features: Vec<f32>,
    pub labels: Vec<u32>,
    pub dim: usize,
}

impl Split {
    /// Samples (a language model's window has `dim` tokens and `dim` labels).
    pub fn len(&self) -> usize {
        self.features.len() / self.dim.max(1)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Labels per sample: 1 for classification, the window length for a language model.
    pub fn labels_per_sample(&self) -> usize {
        self.labels.len() / self.len().max(1)
    }
    /// The samples at `idx`, in that order. The features are copied by the thread pool in
    /// blocks of samples (exact copies: only speed depends on it; a batch's rows are scattered
    /// over the whole training set, so the copy waits on memory, and alone on the training
    /// thread it was ~5% of a small MLP's step), each block zeroed by the task that fills it
    /// (`heap::par_zeroed`: no serial `memset` of the whole batch first).
    pub fn gather(&self, idx: &[u32]) -> (Vec<f32>, Vec<u32>) {
        /// Samples per parallel task.
        const TASK: usize = 32;
        let (dim, lps) = (self.dim, self.labels_per_sample());
        let x = lockstep_kernels::heap::par_zeroed(idx.len() * dim, TASK * dim, |c, out| {
            for (o, &i) in out.chunks_exact_mut(dim).zip(&idx[c * TASK..]) {
                let i = i as usize;
                o.copy_from_slice(&self.features[i * dim..(i + 1) * dim]);
            }
        });
        let mut y = Vec::with_capacity(idx.len() * lps);
        for &i in idx {
            let i = i as usize;
            y.extend_from_slice(&self.labels[i * lps..(i + 1) * lps]);
        }
        (x, y)
    }
    fn subset(&self, idx: &[u32]) -> Split {
        let (features, labels) = self.gather(idx);
        Split {
            features,
            labels,
            dim: self.dim,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub train: Split,
    pub validation: Option<Split>,
    pub test: Split,
    /// `[channels, height, width]`.
    pub image_shape: [usize; 3],
    pub classes: usize,
    /// File name → SHA-256 of its stored bytes.
    pub hashes: BTreeMap<String, String>,
    /// The normalisation fitted on the training split (applied to raw pixels by `predict`).
    pub normalizer: Normalizer,
    /// A language model's text (`dataset = "text"`): the training windows are drawn from it per
    /// step; `validation` holds the fixed validation windows, `train` and `test` are empty.
    pub text: Option<std::sync::Arc<crate::text::TextData>>,
}

impl Dataset {
    /// What a checkpoint records for inference: the normalisation, or a text's vocabulary.
    pub fn inference(&self, cfg: &DataConfig) -> Inference {
        let mut inf = self.normalizer.inference(cfg);
        if let Some(t) = &self.text {
            inf.spec.classes = t.vocab.size();
            inf.spec.class_names = t.vocab.names();
            inf.spec.dtype = match t.vocab.tokenizer {
                lockstep_core::config::Tokenizer::Char => "char-token",
                lockstep_core::config::Tokenizer::Byte => "byte-token",
            }
            .into();
            inf.spec.normalize = "none".into();
        }
        inf
    }
}

/// A text's dataset (`crate::text`): no pixels, the validation windows as the one split.
fn text_dataset(cfg: &DataConfig, seed: u64) -> Result<Dataset, TrainError> {
    let tc = cfg.text.as_ref().expect("a text dataset has a text config");
    let t = crate::text::TextData::load(tc)?;
    let empty = Split {
        features: vec![],
        labels: vec![],
        dim: tc.block_size,
    };
    Ok(Dataset {
        train: empty.clone(),
        validation: Some(t.eval_split(seed, tc.eval_windows)),
        test: empty,
        image_shape: cfg.image_shape,
        classes: t.vocab.size(),
        hashes: BTreeMap::from([(t.name.clone(), t.sha256.clone())]),
        normalizer: Normalizer::fit(&[], 1.0, Normalize::Unit),
        text: Some(std::sync::Arc::new(t)),
    })
}

/// Fashion-MNIST's class names (Zalando's README), by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Raw pixels (as read) with labels, before normalisation.
struct Raw {
    pixels: Vec<f32>,
    labels: Vec<u32>,
    dim: usize,
}

pub fn load_dataset(cfg: &DataConfig, seed: u64) -> Result<Dataset, TrainError> {
    if cfg.dataset == DatasetKind::Text {
        return text_dataset(cfg, seed);
    }
    let raw = load_raw(cfg, seed, true, "training")?;
    let train = raw.train.expect("training data requested");
    let (train, validation) = carve_validation(cfg, seed, train)?;
    let norm = Normalizer::fit(&train.pixels, raw.max, cfg.normalize);
    Ok(Dataset {
        train: norm.finish(train),
        validation: validation.map(|v| norm.finish(v)),
        test: norm.finish(raw.test),
        image_shape: cfg.image_shape,
        classes: cfg.classes,
        hashes: raw.hashes,
        normalizer: norm,
        text: None,
    })
}

/// The evaluation splits of a run, normalised with the statistics its checkpoint recorded:
/// reads the training file only when a split is carved from it (the validation split, or the
/// test split of the digits/CSV data without a test file), never to refit the normalisation.
pub struct EvalData {
    pub test: Split,
    pub validation: Option<Split>,
    /// File name → SHA-256 of the files read (a subset of the run's `datasets`).
    pub hashes: BTreeMap<String, String>,
}

pub fn load_eval(
    cfg: &DataConfig,
    seed: u64,
    norm: &Normalizer,
    validation: bool,
) -> Result<EvalData, TrainError> {
    if cfg.dataset == DatasetKind::Text {
        let d = text_dataset(cfg, seed)?;
        return Ok(EvalData {
            test: d.test,
            validation: d.validation,
            hashes: d.hashes,
        });
    }
    let test_in_train = match cfg.dataset {
        DatasetKind::Digits => true,
        DatasetKind::Csv => cfg.test_path.is_none(),
        DatasetKind::FashionMnist | DatasetKind::Mnist | DatasetKind::Text => false,
    };
    let why = if validation {
        "the validation split is carved from it"
    } else {
        "the test split is carved from it"
    };
    let raw = load_raw(cfg, seed, validation || test_in_train, why)?;
    let validation = match (validation, raw.train) {
        (true, Some(train)) => carve_validation(cfg, seed, train)?.1,
        _ => None,
    };
    Ok(EvalData {
        test: norm.finish(raw.test),
        validation: validation.map(|v| norm.finish(v)),
        hashes: raw.hashes,
    })
}

/// Raw splits as read: `train` when asked for (or when the test split is carved from it).
struct RawData {
    train: Option<Raw>,
    test: Raw,
    /// `Normalize::Unit`'s divisor: the format's pixel maximum, or a CSV's largest |value|.
    max: f32,
    hashes: BTreeMap<String, String>,
}

/// `why_train` says why the training file is read, in the error when it is missing.
fn load_raw(
    cfg: &DataConfig,
    seed: u64,
    with_train: bool,
    why_train: &str,
) -> Result<RawData, TrainError> {
    let dim: usize = cfg.image_shape.iter().product();
    let mut hashes = BTreeMap::new();
    let (train, test, max) = match cfg.dataset {
        DatasetKind::Text => unreachable!("text datasets load through text_dataset"),
        DatasetKind::Digits => {
            hashes.insert("digits.csv.gz".to_string(), sha256_hex(DIGITS_CSV_GZ));
            let all = parse_csv(
                &gunzip(DIGITS_CSV_GZ, Path::new("<embedded digits.csv.gz>"))?,
                Path::new("<embedded digits.csv.gz>"),
                dim,
                cfg.classes,
            )?;
            let (train, test) = split_off(all, cfg.test_fraction, seed);
            (Some(train), test, 16.0)
        }
        DatasetKind::FashionMnist | DatasetKind::Mnist => {
            let dir = PathBuf::from(cfg.dir.as_deref().unwrap_or("."));
            let load = |stem: &str| -> Result<(Vec<u8>, String, PathBuf), TrainError> {
                for name in [format!("{stem}.gz"), stem.to_string()] {
                    let p = dir.join(&name);
                    if p.is_file() {
                        let bytes = std::fs::read(&p).map_err(|e| {
                            TrainError::data(
                                &p,
                                format!("cannot read: {e}"),
                                "check file permissions",
                            )
                        })?;
                        return Ok((bytes, name, p));
                    }
                }
                let fix = if cfg.dataset == DatasetKind::FashionMnist {
                    "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or set data.dir to a folder with the IDX files"
                } else {
                    "set data.dir to a folder with the MNIST IDX files"
                };
                let what = if stem.starts_with("train") {
                    format!("data file not found (the training file is needed: {why_train})")
                } else {
                    "data file not found".to_string()
                };
                Err(TrainError::data(
                    dir.join(format!("{stem}[.gz]")),
                    what,
                    fix,
                ))
            };
            let mut read_pair = |img: &str, lab: &str| -> Result<Raw, TrainError> {
                let (ib, iname, ip) = load(img)?;
                let (lb, lname, lp) = load(lab)?;
                hashes.insert(iname, sha256_hex(&ib));
                hashes.insert(lname, sha256_hex(&lb));
                let (pixels, idim) = parse_idx_images(&maybe_gunzip(&ib, &ip)?, &ip)?;
                if idim != dim {
                    return Err(TrainError::data(
                        &ip,
                        format!(
                            "images have {idim} pixels, the config's image_shape {:?} has {dim}",
                            cfg.image_shape
                        ),
                        "fix data.image_shape",
                    ));
                }
                let labels = parse_idx_labels(&maybe_gunzip(&lb, &lp)?, &lp, cfg.classes)?;
                if labels.len() * dim != pixels.len() {
                    return Err(TrainError::data(
                        &lp,
                        format!("{} labels for {} images", labels.len(), pixels.len() / dim),
                        "use the label file that belongs to the image file",
                    ));
                }
                Ok(Raw {
                    pixels,
                    labels,
                    dim,
                })
            };
            let train = if with_train {
                Some(read_pair(
                    "train-images-idx3-ubyte",
                    "train-labels-idx1-ubyte",
                )?)
            } else {
                None
            };
            let test = read_pair("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
            (train, test, 255.0)
        }
        DatasetKind::Csv => {
            let mut read = |p: &str| -> Result<Raw, TrainError> {
                let path = PathBuf::from(p);
                if path.is_dir() {
                    return Err(TrainError::data(
                        &path,
                        "is a directory, not a CSV file",
                        "point data.train_path / data.test_path at a .csv file",
                    ));
                }
                let bytes = std::fs::read(&path).map_err(|e| {
                    TrainError::data(
                        &path,
                        format!("cannot read: {e}"),
                        "check data.train_path / data.test_path",
                    )
                })?;
                hashes.insert(file_name(p), sha256_hex(&bytes));
                parse_csv(&maybe_gunzip(&bytes, &path)?, &path, dim, cfg.classes)
            };
            let train_path = cfg.train_path.as_deref().unwrap_or_default();
            let (train, test) = match &cfg.test_path {
                Some(tp) => {
                    let train = if with_train {
                        Some(read(train_path)?)
                    } else {
                        None
                    };
                    (train, read(tp)?)
                }
                None => {
                    let (train, test) = split_off(read(train_path)?, cfg.test_fraction, seed);
                    (Some(train), test)
                }
            };
            let max = train
                .iter()
                .flat_map(|t| &t.pixels)
                .fold(0f32, |m, &v| m.max(v.abs()))
                .max(1.0);
            (train, test, max)
        }
    };
    if train.as_ref().is_some_and(|t| t.labels.is_empty()) || test.labels.is_empty() {
        return Err(TrainError::data(
            cfg.dir.clone().unwrap_or_default(),
            "a split is empty",
            "provide more samples or change data.test_fraction",
        ));
    }
    Ok(RawData {
        train: if with_train { train } else { None },
        test,
        max,
        hashes,
    })
}

/// Split `data.validation_size` samples (stream `split/validation`) off the training split.
fn carve_validation(
    cfg: &DataConfig,
    seed: u64,
    train: Raw,
) -> Result<(Raw, Option<Raw>), TrainError> {
    if cfg.validation_size == 0 {
        return Ok((train, None));
    }
    if cfg.validation_size >= train.labels.len() {
        return Err(TrainError::data(
            "<config data.validation_size>",
            format!(
                "validation_size {} >= {} training samples",
                cfg.validation_size,
                train.labels.len()
            ),
            "use a smaller data.validation_size",
        ));
    }
    let (t, v) = take_indices(
        train,
        cfg.validation_size,
        &mut SeedStream::new(seed, lockstep_core::streams::SPLIT_VALIDATION),
    );
    Ok((t, Some(v)))
}

fn file_name(p: &str) -> String {
    Path::new(p)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.to_string())
}

/// `x / max`, then optionally `(x - mean) / std` with f64 statistics of the training pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalizer {
    max: f64,
    mean: f64,
    std: f64,
}

impl Normalizer {
    fn fit(train: &[f32], max: f32, mode: Normalize) -> Self {
        let max = max as f64;
        match mode {
            Normalize::Unit => Normalizer {
                max,
                mean: 0.0,
                std: 1.0,
            },
            Normalize::Standardize => {
                let n = train.len().max(1) as f64;
                let mean = train.iter().map(|&p| p as f64 / max).sum::<f64>() / n;
                let var = train
                    .iter()
                    .map(|&p| (p as f64 / max - mean).powi(2))
                    .sum::<f64>()
                    / n;
                Normalizer {
                    max,
                    mean,
                    std: var.sqrt().max(1e-12),
                }
            }
        }
    }
    fn finish(&self, r: Raw) -> Split {
        // Batches read rows from all over the split (`gather`): with 4 KiB pages each row
        // missed the TLB (Fashion-MNIST's training set is 188 MB of f32).
        let mut features = lockstep_kernels::heap::with_huge_pages(r.pixels.len());
        features.extend(r.pixels.iter().map(|&p| self.apply(p)));
        Split {
            features,
            labels: r.labels,
            dim: r.dim,
        }
    }

    /// The statistics and input description a checkpoint carries, so inference needs no
    /// training data (`checkpoint::Inference`).
    pub fn inference(&self, cfg: &DataConfig) -> Inference {
        let classes = cfg.classes;
        let class_names: Vec<String> = match cfg.dataset {
            DatasetKind::FashionMnist if classes == 10 => FASHION_MNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            DatasetKind::Digits | DatasetKind::Mnist if classes == 10 => {
                (0..10).map(|d| d.to_string()).collect()
            }
            _ => vec![],
        };
        Inference {
            spec: InputSpec {
                shape: cfg.image_shape,
                dtype: match cfg.dataset {
                    DatasetKind::FashionMnist | DatasetKind::Mnist => "u8",
                    DatasetKind::Digits | DatasetKind::Csv | DatasetKind::Text => "f32",
                }
                .to_string(),
                normalize: match cfg.normalize {
                    Normalize::Unit => "unit",
                    Normalize::Standardize => "standardize",
                }
                .to_string(),
                classes,
                class_names,
            },
            pixel_scale: self.max,
            mean: self.mean,
            std: self.std,
        }
    }

    /// The normalisation a checkpoint recorded.
    pub fn from_inference(inf: &Inference) -> Self {
        Normalizer {
            max: inf.pixel_scale,
            mean: inf.mean,
            std: inf.std,
        }
    }

    /// Normalise one raw pixel value: `((p / max - mean) / std) as f32`, computed in f64, then
    /// flushed like every value entering lockstep's kernels (`lockstep_kernels::arith::flush`).
    pub fn apply(&self, p: f32) -> f32 {
        lockstep_kernels::arith::flush(((p as f64 / self.max - self.mean) / self.std) as f32)
    }
}

/// Move `round(n * fraction)` samples (chosen by stream `split/test`) into a test split.
fn split_off(all: Raw, fraction: f64, seed: u64) -> (Raw, Raw) {
    let k = ((all.labels.len() as f64) * fraction).round().max(1.0) as usize;
    let (rest, taken) = take_indices(
        all,
        k,
        &mut SeedStream::new(seed, lockstep_core::streams::SPLIT_TEST),
    );
    (rest, taken)
}

/// Split off the first `k` indices of `stream`'s permutation; both parts sorted ascending.
fn take_indices(all: Raw, k: usize, stream: &mut SeedStream) -> (Raw, Raw) {
    let perm = stream.permutation(all.labels.len());
    let mut taken: Vec<u32> = perm[..k].to_vec();
    let mut rest: Vec<u32> = perm[k..].to_vec();
    taken.sort_unstable();
    rest.sort_unstable();
    let all = Split {
        features: all.pixels,
        labels: all.labels,
        dim: all.dim,
    };
    let pick = |idx: &[u32]| {
        let s = all.subset(idx);
        Raw {
            pixels: s.features,
            labels: s.labels,
            dim: s.dim,
        }
    };
    (pick(&rest), pick(&taken))
}

fn gunzip(bytes: &[u8], path: &Path) -> Result<Vec<u8>, TrainError> {
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            TrainError::data(
                path,
                format!("gzip data is corrupt: {e}"),
                "re-download or reinstall the data file",
            )
        })?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(TrainError::data(
            path,
            "decompresses to more than 1 GiB",
            "use a smaller data file",
        ));
    }
    Ok(out)
}

/// Decompress when the bytes start with the gzip magic, else return them as they are.
pub fn maybe_gunzip(bytes: &[u8], path: &Path) -> Result<Vec<u8>, TrainError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        gunzip(bytes, path)
    } else {
        Ok(bytes.to_vec())
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// IDX unsigned-byte images (magic 0x00000803): returns pixels and pixels per image.
pub fn parse_idx_images(b: &[u8], path: &Path) -> Result<(Vec<f32>, usize), TrainError> {
    let fix = "pass an IDX image file (e.g. train-images-idx3-ubyte[.gz])";
    if b.len() < 16 || be_u32(b, 0) != 0x0000_0803 {
        return Err(TrainError::data(
            path,
            "not an IDX3 unsigned-byte image file (bad magic or too short)",
            fix,
        ));
    }
    let (n, h, w) = (
        be_u32(b, 4) as usize,
        be_u32(b, 8) as usize,
        be_u32(b, 12) as usize,
    );
    let dim = h
        .checked_mul(w)
        .filter(|&d| d > 0)
        .ok_or_else(|| TrainError::data(path, format!("bad image size {h}x{w}"), fix))?;
    let need = n.checked_mul(dim).and_then(|x| x.checked_add(16));
    if need != Some(b.len()) {
        return Err(TrainError::data(
            path,
            format!(
                "header says {n} images of {h}x{w} but the file has {} bytes",
                b.len()
            ),
            "the file is truncated or corrupt: reinstall it",
        ));
    }
    Ok((b[16..].iter().map(|&p| p as f32).collect(), dim))
}

/// IDX unsigned-byte labels (magic 0x00000801), each `< classes`.
pub fn parse_idx_labels(b: &[u8], path: &Path, classes: usize) -> Result<Vec<u32>, TrainError> {
    if b.len() < 8 || be_u32(b, 0) != 0x0000_0801 {
        return Err(TrainError::data(
            path,
            "not an IDX1 unsigned-byte label file (bad magic or too short)",
            "pass an IDX label file (e.g. train-labels-idx1-ubyte[.gz])",
        ));
    }
    let n = be_u32(b, 4) as usize;
    if n.checked_add(8) != Some(b.len()) {
        return Err(TrainError::data(
            path,
            format!("header says {n} labels but the file has {} bytes", b.len()),
            "the file is truncated or corrupt: reinstall it",
        ));
    }
    let labels: Vec<u32> = b[8..].iter().map(|&l| l as u32).collect();
    if let Some((i, l)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| **l as usize >= classes)
    {
        return Err(TrainError::data(
            path,
            format!("label {l} at index {i} is outside 0..{classes}"),
            "set data.classes to the number of classes",
        ));
    }
    Ok(labels)
}

/// CSV: one sample per line, `dim` numeric pixel columns then an integer label in `0..classes`.
/// Parse CSV bytes (also the fuzzing entry point).
pub fn parse_csv_checked(
    bytes: &[u8],
    path: &Path,
    dim: usize,
    classes: usize,
) -> Result<(Vec<f32>, Vec<u32>), TrainError> {
    parse_csv(bytes, path, dim, classes).map(|r| (r.pixels, r.labels))
}

fn parse_csv(bytes: &[u8], path: &Path, dim: usize, classes: usize) -> Result<Raw, TrainError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| TrainError::data(path, format!("not UTF-8 text: {e}"), "pass a CSV file"))?;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != dim + 1 {
            return Err(TrainError::data(
                path,
                format!(
                    "line {}: {} columns, expected {} pixels + 1 label",
                    ln + 1,
                    fields.len(),
                    dim
                ),
                "check data.image_shape against the file",
            ));
        }
        for f in &fields[..dim] {
            let v: f32 = f.trim().parse().map_err(|_| {
                TrainError::data(
                    path,
                    format!("line {}: {f:?} is not a number", ln + 1),
                    "fix the CSV row",
                )
            })?;
            if !v.is_finite() {
                return Err(TrainError::data(
                    path,
                    format!("line {}: {f:?} is not finite", ln + 1),
                    "fix the CSV row",
                ));
            }
            pixels.push(v);
        }
        let l = fields[dim].trim();
        let label: u32 = l
            .parse::<f64>()
            .ok()
            .filter(|v| v.fract() == 0.0 && *v >= 0.0 && (*v as usize) < classes)
            .map(|v| v as u32)
            .ok_or_else(|| {
                TrainError::data(
                    path,
                    format!(
                        "line {}: label {l:?} is not an integer in 0..{classes}",
                        ln + 1
                    ),
                    "fix the label column or data.classes",
                )
            })?;
        labels.push(label);
    }
    if labels.is_empty() {
        return Err(TrainError::data(
            path,
            "contains no samples",
            "pass a non-empty CSV file",
        ));
    }
    Ok(Raw {
        pixels,
        labels,
        dim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `gather` (parallel blocks of samples) gives exactly the plain loop's copies, in the
    /// order asked for, repeats included, across block boundaries and with several labels per
    /// sample.
    #[test]
    fn gather_copies_the_samples_asked_for_in_order() {
        let (n, dim, lps) = (100, 7, 3);
        let split = Split {
            features: (0..n * dim).map(|i| i as f32 * 0.5 - 3.0).collect(),
            labels: (0..(n * lps) as u32).collect(),
            dim,
        };
        let idx: Vec<u32> = (0..77)
            .map(|i| (i * 37 % n) as u32)
            .chain([5, 5, 99])
            .collect();
        let (x, y) = split.gather(&idx);
        let (mut wx, mut wy) = (Vec::new(), Vec::new());
        for &i in &idx {
            let i = i as usize;
            wx.extend_from_slice(&split.features[i * dim..(i + 1) * dim]);
            wy.extend_from_slice(&split.labels[i * lps..(i + 1) * lps]);
        }
        assert_eq!(
            x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            wx.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(y, wy);
        assert_eq!(split.gather(&[]), (vec![], vec![]));
    }
}
