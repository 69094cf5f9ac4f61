//! The training-job config: TOML parsed into `RawConfig` (serde, `deny_unknown_fields`, every
//! optional key an `Option`) and validated into `Config`, where every default is filled in.
//!
//! The validated `Config` is what gets hashed (`Config::hash`): defaults are explicit in the hash,
//! so changing a default changes the identity of every run that relied on it.

use crate::{CoreError, canonical_json, sha256_hex};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: Option<String>,
    seed: Option<i64>,
    data: RawData,
    model: RawModel,
    optimizer: RawOptimizer,
    schedule: Option<RawSchedule>,
    train: RawTrain,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    dataset: String,
    dir: Option<String>,
    train_path: Option<String>,
    test_path: Option<String>,
    image_shape: Option<Vec<i64>>,
    classes: Option<i64>,
    test_fraction: Option<f64>,
    validation_size: Option<i64>,
    normalize: Option<String>,
    path: Option<String>,
    tokenizer: Option<String>,
    eval_windows: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    kind: String,
    hidden: Option<Vec<i64>>,
    channels: Option<Vec<i64>>,
    kernel_size: Option<i64>,
    activation: Option<String>,
    dropout: Option<f64>,
    init: Option<String>,
    pool: Option<String>,
    layers: Option<Vec<RawLayer>>,
    n_layer: Option<i64>,
    n_head: Option<i64>,
    n_embd: Option<i64>,
    block_size: Option<i64>,
    bias: Option<bool>,
    tie_weights: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    op: String,
    id: Option<String>,
    from: Option<Vec<String>>,
    name: Option<String>,
    out: Option<i64>,
    init: Option<String>,
    p: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOptimizer {
    kind: String,
    lr: f64,
    betas: Option<Vec<f64>>,
    eps: Option<f64>,
    weight_decay: Option<f64>,
    momentum: Option<f64>,
    decay: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    kind: String,
    step_size: Option<i64>,
    gamma: Option<f64>,
    min_lr: Option<f64>,
    warmup_steps: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrain {
    batch_size: i64,
    epochs: Option<i64>,
    max_steps: Option<i64>,
    eval_every: Option<i64>,
    checkpoint_every: Option<i64>,
    eval_batch_size: Option<i64>,
    drop_last: Option<bool>,
    backend: Option<String>,
    threads: Option<i64>,
    kernels: Option<String>,
    grad_clip: Option<f64>,
    arith: Option<String>,
    shards: Option<i64>,
}

/// A validated training job. Every field is explicit; see `configs/` for annotated examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub name: String,
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub train: TrainConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// scikit-learn's 8x8 digits (UCI), embedded in the binary.
    Digits,
    /// Fashion-MNIST IDX files in `dir`.
    FashionMnist,
    /// MNIST IDX files in `dir`.
    Mnist,
    /// CSV files: one sample per row, pixel columns then the integer label.
    Csv,
    /// A UTF-8 text for a language model (`data.path`, `data.tokenizer`).
    Text,
}

/// How text becomes tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    /// One token per Unicode code point; the vocabulary is the text's distinct code points in
    /// ascending order.
    Char,
    /// One token per byte of the UTF-8 text; the vocabulary is all 256 byte values.
    Byte,
}

/// `dataset = "text"`: where the text is and how it is cut.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// A UTF-8 file, or a directory whose regular files without a '.' in their names are
    /// concatenated in byte order of their names (e.g. the `fortunes` package's texts).
    pub path: String,
    pub tokenizer: Tokenizer,
    /// The model's context: windows of `block_size + 1` tokens (copied from `model.block_size`).
    pub block_size: usize,
    /// Validation windows scored at every evaluation (the same ones every time).
    pub eval_windows: usize,
}

/// `model.kind = "gpt"`: a GPT-2-style decoder (pre-LayerNorm blocks of causal self-attention
/// and a 4x GELU MLP).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub block_size: usize,
    /// Biases in the linear layers and LayerNorms.
    pub bias: bool,
    /// The LM head is the token embedding (transposed), as in GPT-2 and nanoGPT.
    pub tie_weights: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    /// Divide by the dataset's maximum pixel value (16 for digits, 255 for MNIST-style).
    Unit,
    /// `(x/max - mean) / std` with mean and std of the training split, computed in f64 in index order.
    Standardize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    pub dataset: DatasetKind,
    pub dir: Option<String>,
    pub train_path: Option<String>,
    pub test_path: Option<String>,
    /// `[channels, height, width]`.
    pub image_shape: [usize; 3],
    pub classes: usize,
    /// Fraction of a single-file dataset held out as the test split (digits, csv without test_path).
    pub test_fraction: f64,
    /// Samples moved from the training split into a validation split (0 = none).
    pub validation_size: usize,
    pub normalize: Normalize,
    /// Text only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    Mlp,
    Cnn,
    /// A network defined in Rust by the program that trains it (`lockstep_train::nn::Network`);
    /// the `[model]` widths, activation, dropout and init are that program's to interpret.
    Custom,
    /// A GPT-style language model (`[model] n_layer, n_head, n_embd, block_size`) on
    /// `dataset = "text"`.
    Gpt,
    /// A network written down in the config as `[[model.layers]]` ([`GraphLayer`]): any
    /// composition of linear layers, activations, dropout and residual adds, so the binary can
    /// train, resume, verify and predict it without the program that built it.
    Graph,
}

/// One layer of a `model.kind = "graph"` network, validated: `from` names earlier layers' `id`s
/// (`"x"` is the flattened input batch); the last layer's output is the logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphLayer {
    pub id: String,
    pub from: Vec<String>,
    pub op: LayerOp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerOp {
    /// `y = x @ W + b` with parameters `<name>.weight` `[d_in, out]`, `<name>.bias` `[out]`.
    /// Two linear layers with one `name` share their parameters.
    Linear {
        name: String,
        out: usize,
        init: Init,
    },
    Activation(Activation),
    /// Inverted dropout, masks from stream `dropout/<name>/step-<s>`.
    Dropout {
        name: String,
        p: f64,
    },
    /// Element-wise `from[0] + from[1]` (a residual connection, or summed heads).
    Add,
}

/// The name of the graph input in `GraphLayer::from`.
pub const GRAPH_INPUT: &str = "x";

/// Each layer's inputs (its `from`) as indices of earlier layers; `None` is the graph input
/// `"x"`. For validated layers (unique ids, references only to earlier layers).
pub fn graph_sources(layers: &[GraphLayer]) -> Vec<Vec<Option<usize>>> {
    layers
        .iter()
        .map(|l| {
            l.from
                .iter()
                .map(|f| layers.iter().position(|m| &m.id == f))
                .collect()
        })
        .collect()
}

/// Width of every layer's output (`input_dim` for `"x"`), in layer order.
pub fn graph_widths(layers: &[GraphLayer], input_dim: usize) -> Vec<usize> {
    let mut widths: Vec<usize> = Vec::with_capacity(layers.len());
    for (l, src) in layers.iter().zip(graph_sources(layers)) {
        let w = match &l.op {
            LayerOp::Linear { out, .. } => *out,
            _ => src[0].map_or(input_dim, |i| widths[i]),
        };
        widths.push(w);
    }
    widths
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    Gelu,
}

/// The CNN's 2x2 pooling after each conv.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    #[default]
    Max,
    Avg,
}

impl PoolKind {
    /// `max` is left out of the identity (and so of the hash) so configs written before the
    /// field existed keep their hash.
    pub fn is_max(&self) -> bool {
        *self == PoolKind::Max
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    KaimingUniform,
    XavierUniform,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// MLP: hidden layer widths. CNN: widths of the fully connected layers after the convs.
    pub hidden: Vec<usize>,
    /// CNN only: output channels of the two conv layers.
    pub channels: Vec<usize>,
    pub kernel_size: usize,
    pub activation: Activation,
    pub dropout: f64,
    pub init: Init,
    /// CNN only: `max` (default) or `avg` pooling.
    #[serde(default, skip_serializing_if = "PoolKind::is_max")]
    pub pool: PoolKind,
    /// Graph only: the layers (empty, and absent from the identity, for the other kinds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<GraphLayer>,
    /// GPT only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpt: Option<GptConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    /// Weight decay only on parameters with two or more dimensions (nanoGPT's grouping: not on
    /// biases or LayerNorm gains); `false` (the default, absent from the identity) decays all.
    #[serde(default, skip_serializing_if = "is_false")]
    pub decay_matrices_only: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    Step,
    Cosine,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    pub step_size: u64,
    pub gamma: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Ndarray,
    Flex,
    Wgpu,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Ndarray => "ndarray",
            BackendKind::Flex => "flex",
            BackendKind::Wgpu => "wgpu",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ndarray" => Some(BackendKind::Ndarray),
            "flex" => Some(BackendKind::Flex),
            "wgpu" => Some(BackendKind::Wgpu),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelSet {
    /// burn's stock ops (bitwise run to run; across backends within the declared tolerance).
    Burn,
    /// lockstep's own deterministic kernels (see `kernels/`): bitwise across backends. Default.
    Lockstep,
}

/// The arithmetic profile of lockstep's dot products (`train.arith`): how each output of a
/// matmul, batched matmul or convolution adds one product to its accumulator, in the same
/// fixed k order either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arith {
    /// `acc = fl(fl(a*b) + acc)`: two roundings. Every IEEE device gives it. Default.
    #[default]
    Unfused,
    /// `acc = fl(fma(a, b, acc))`: IEEE-754's fused multiply-add, one rounding. Needs a device
    /// whose `fma` really rounds once (the start-up probe checks; a run refuses a device
    /// without it).
    Fma,
}

impl Arith {
    pub fn is_unfused(&self) -> bool {
        *self == Arith::Unfused
    }
    pub fn fused(&self) -> bool {
        *self == Arith::Fma
    }
    pub fn name(&self) -> &'static str {
        match self {
            Arith::Unfused => "unfused",
            Arith::Fma => "fma",
        }
    }
}

/// The most CPU threads `train.threads` / `--threads` may ask for (results never depend on the
/// thread count; past the core count threads only add overhead).
pub const MAX_THREADS: usize = 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub epochs: u64,
    /// Cap on optimizer steps (the run ends at `min(epochs * steps_per_epoch, max_steps)`).
    pub max_steps: Option<u64>,
    /// Evaluate every N steps (0: only at the end).
    pub eval_every: u64,
    /// Checkpoint every N steps (0: only the final checkpoint).
    pub checkpoint_every: u64,
    pub eval_batch_size: usize,
    pub drop_last: bool,
    /// Default backend; `--backend` overrides it. Not part of the config hash.
    pub backend: BackendKind,
    /// CPU threads; `--threads` overrides it. Not part of the config hash.
    pub threads: usize,
    pub kernels: KernelSet,
    /// Clip the gradients to this global L2 norm (0: no clipping; absent from the identity then).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub grad_clip: f64,
    /// The dot-product arithmetic of lockstep's kernels (`Arith`; absent from the identity when
    /// `unfused`, so runs from before the key keep their hashes).
    #[serde(default, skip_serializing_if = "Arith::is_unfused")]
    pub arith: Arith,
    /// The global batch is cut into this many fixed shards (contiguous runs of its samples),
    /// each a forward/backward whose gradient is combined with the others' in one binary tree
    /// over shard index; workers (`mpirun -n N`, N dividing `shards`) share the shards out.
    /// Part of the identity (absent when 1, so runs from before the key keep their hashes).
    #[serde(default = "one_shard", skip_serializing_if = "is_one_shard")]
    pub shards: usize,
}

fn one_shard() -> usize {
    1
}

fn is_one_shard(s: &usize) -> bool {
    *s == 1
}

/// The most shards a batch may be cut into (`train.shards`).
pub const MAX_SHARDS: usize = 4096;

impl Config {
    /// SHA-256 of the canonical JSON of the config with the run-placement fields (backend,
    /// threads) cleared: the same job on another backend or thread count has the same hash.
    pub fn hash(&self) -> String {
        sha256_hex(canonical_json(&self.identity()).as_bytes())
    }

    /// The config as hashed: backend and threads are where the job runs, not what it computes.
    pub fn identity(&self) -> Config {
        let mut c = self.clone();
        c.train.backend = BackendKind::Ndarray;
        c.train.threads = 0;
        c
    }
}

/// Read and validate a config file.
pub fn load_config(path: &Path) -> Result<Config, CoreError> {
    if path.is_dir() {
        return Err(CoreError::bad_file(
            path,
            "is a directory, not a config file",
            "pass a .toml file, e.g. configs/digits_mlp.toml",
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|source| CoreError::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    parse_config(&text, path)
}

/// Parse and validate config text; `path` is only used in error messages.
pub fn parse_config(text: &str, path: &Path) -> Result<Config, CoreError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| CoreError::ConfigParse {
        path: path.to_path_buf(),
        message: format!(
            "{}\n  fix: correct or remove the key; every key is documented in configs/digits_mlp.toml",
            e.to_string().trim_end()
        ),
    })?;
    Validator {
        path: path.to_path_buf(),
    }
    .config(raw)
}

struct Validator {
    path: PathBuf,
}

impl Validator {
    fn err(&self, key: &str, value: impl std::fmt::Display, reason: &str, fix: &str) -> CoreError {
        CoreError::ConfigValue {
            path: self.path.clone(),
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
            fix: fix.to_string(),
        }
    }

    fn positive(&self, key: &str, v: i64) -> Result<usize, CoreError> {
        if v <= 0 {
            return Err(self.err(key, v, "must be a positive integer", "use a value >= 1"));
        }
        Ok(v as usize)
    }

    fn non_negative(&self, key: &str, v: i64) -> Result<u64, CoreError> {
        if v < 0 {
            return Err(self.err(
                key,
                v,
                "must not be negative",
                "use 0 or a positive integer",
            ));
        }
        Ok(v as u64)
    }

    fn finite_in(&self, key: &str, v: f64, lo: f64, hi: f64, fix: &str) -> Result<f64, CoreError> {
        if !v.is_finite() || v < lo || v > hi {
            return Err(self.err(
                key,
                v,
                &format!("must be a finite number in [{lo}, {hi}]"),
                fix,
            ));
        }
        Ok(v)
    }

    fn config(&self, raw: RawConfig) -> Result<Config, CoreError> {
        let name = raw.name.unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into())
        });
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(self.err(
                "name",
                format!("{name:?}"),
                "must be non-empty ASCII letters, digits, '-', '_' or '.'",
                "rename the job, e.g. name = \"digits_mlp\"",
            ));
        }
        let seed = match raw.seed {
            None => {
                return Err(self.err(
                    "seed",
                    "(missing)",
                    "every job needs an explicit seed",
                    "add e.g. seed = 42 at the top level",
                ));
            }
            Some(s) if s < 0 => {
                return Err(self.err(
                    "seed",
                    s,
                    "must be a non-negative integer",
                    "use e.g. seed = 42",
                ));
            }
            Some(s) => s as u64,
        };
        let mut data = self.data(raw.data)?;
        let epochs_set = raw.train.epochs.is_some();
        let model = self.model(raw.model, &data)?;
        let optimizer = self.optimizer(raw.optimizer)?;
        let schedule = self.schedule(raw.schedule)?;
        let mut train = self.train(raw.train)?;
        match (data.text.as_mut(), &model.gpt) {
            (Some(text), Some(gpt)) => {
                if train.kernels != KernelSet::Lockstep {
                    return Err(self.err(
                        "train.kernels",
                        "\"burn\"",
                        "the gpt model runs on lockstep's kernels only (layer norm, causal softmax and batched matmul have no stock twin here)",
                        "remove train.kernels or set it to \"lockstep\"",
                    ));
                }
                text.block_size = gpt.block_size;
                data.image_shape = [1, 1, gpt.block_size];
                if epochs_set {
                    return Err(self.err(
                        "train.epochs",
                        train.epochs,
                        "a language model draws random windows every step and has no epochs",
                        "remove epochs and set train.max_steps",
                    ));
                }
                if train.max_steps.is_none() {
                    return Err(self.err(
                        "train.max_steps",
                        "(missing)",
                        "a language model trains for a number of steps",
                        "add e.g. max_steps = 2000",
                    ));
                }
                train.epochs = 0;
            }
            (Some(_), None) => {
                return Err(self.err(
                    "model.kind",
                    format!("{:?}", model.kind).to_lowercase(),
                    "a text dataset trains a language model",
                    "set model.kind = \"gpt\"",
                ));
            }
            (None, Some(_)) => {
                return Err(self.err(
                    "data.dataset",
                    format!("{:?}", data.dataset).to_lowercase(),
                    "the gpt model is a language model and trains on text",
                    "set dataset = \"text\" and path = \"...\"",
                ));
            }
            (None, None) => {}
        }
        Ok(Config {
            name,
            seed,
            data,
            model,
            optimizer,
            schedule,
            train,
        })
    }

    fn data(&self, d: RawData) -> Result<DataConfig, CoreError> {
        let dataset = match d.dataset.as_str() {
            "digits" => DatasetKind::Digits,
            "fashion-mnist" => DatasetKind::FashionMnist,
            "mnist" => DatasetKind::Mnist,
            "csv" => DatasetKind::Csv,
            "text" => DatasetKind::Text,
            other => {
                return Err(self.err(
                    "data.dataset",
                    format!("{other:?}"),
                    "unknown dataset",
                    "use one of \"digits\", \"fashion-mnist\", \"mnist\", \"csv\", \"text\"",
                ));
            }
        };
        let (default_shape, default_classes, default_dir) = match dataset {
            DatasetKind::Digits => ([1, 8, 8], 10, None),
            DatasetKind::FashionMnist => {
                ([1, 28, 28], 10, Some("/usr/share/datasets/fashion-mnist"))
            }
            DatasetKind::Mnist => ([1, 28, 28], 10, Some("/usr/share/datasets/mnist")),
            DatasetKind::Csv => ([0, 0, 0], 0, None),
            // Filled in from the model's block size and the text's vocabulary.
            DatasetKind::Text => ([1, 1, 1], 0, None),
        };
        let text = self.text(dataset, &d)?;
        let image_shape = match d.image_shape {
            None if dataset == DatasetKind::Csv => {
                return Err(self.err(
                    "data.image_shape",
                    "(missing)",
                    "csv data needs its image shape",
                    "add e.g. image_shape = [1, 8, 8]",
                ));
            }
            None => default_shape,
            Some(v) => {
                if v.len() != 3 || v.iter().any(|&x| x <= 0 || x > 4096) {
                    return Err(self.err(
                        "data.image_shape",
                        format!("{v:?}"),
                        "must be [channels, height, width] with each in 1..=4096",
                        "use e.g. [1, 28, 28]",
                    ));
                }
                [v[0] as usize, v[1] as usize, v[2] as usize]
            }
        };
        let classes = match d.classes {
            None if dataset == DatasetKind::Csv => {
                return Err(self.err(
                    "data.classes",
                    "(missing)",
                    "csv data needs the number of classes",
                    "add e.g. classes = 10",
                ));
            }
            None => default_classes,
            Some(c) if !(2..=65536).contains(&c) => {
                return Err(self.err(
                    "data.classes",
                    c,
                    "must be in 2..=65536",
                    "set the number of label values",
                ));
            }
            Some(c) => c as usize,
        };
        if dataset == DatasetKind::Csv && d.train_path.is_none() {
            return Err(self.err(
                "data.train_path",
                "(missing)",
                "csv data needs a training file",
                "add train_path = \"path/to/train.csv\"",
            ));
        }
        if dataset != DatasetKind::Csv && (d.train_path.is_some() || d.test_path.is_some()) {
            return Err(self.err(
                "data.train_path",
                "(set)",
                "only csv datasets take file paths",
                "remove train_path/test_path or set dataset = \"csv\"",
            ));
        }
        let test_fraction = self.finite_in(
            "data.test_fraction",
            d.test_fraction.unwrap_or(0.2),
            0.01,
            0.9,
            "use a fraction such as 0.2",
        )?;
        let validation_size =
            self.non_negative("data.validation_size", d.validation_size.unwrap_or(0))? as usize;
        let normalize = match d.normalize.as_deref().unwrap_or("unit") {
            "unit" => Normalize::Unit,
            "standardize" => Normalize::Standardize,
            other => {
                return Err(self.err(
                    "data.normalize",
                    format!("{other:?}"),
                    "unknown normalisation",
                    "use \"unit\" or \"standardize\"",
                ));
            }
        };
        let dir = d.dir.or(default_dir.map(String::from));
        Ok(DataConfig {
            text,
            dataset,
            dir,
            train_path: d.train_path,
            test_path: d.test_path,
            image_shape,
            classes,
            test_fraction,
            validation_size,
            normalize,
        })
    }

    /// `dataset = "text"`'s keys (refused on other datasets); `block_size` is set from the model.
    fn text(&self, dataset: DatasetKind, d: &RawData) -> Result<Option<TextConfig>, CoreError> {
        if dataset != DatasetKind::Text {
            for (key, set) in [
                ("data.path", d.path.is_some()),
                ("data.tokenizer", d.tokenizer.is_some()),
                ("data.eval_windows", d.eval_windows.is_some()),
            ] {
                if set {
                    return Err(self.err(
                        key,
                        "(set)",
                        "only text datasets take this key",
                        "remove it, or set dataset = \"text\"",
                    ));
                }
            }
            return Ok(None);
        }
        for (key, set) in [
            ("data.dir", d.dir.is_some()),
            ("data.image_shape", d.image_shape.is_some()),
            ("data.classes", d.classes.is_some()),
            ("data.validation_size", d.validation_size.is_some()),
            ("data.test_fraction", d.test_fraction.is_some()),
            ("data.normalize", d.normalize.is_some()),
        ] {
            if set {
                return Err(self.err(
                    key,
                    "(set)",
                    "a text dataset is cut by position (first 90% train, last 10% validation) and its vocabulary comes from the text",
                    "remove the key",
                ));
            }
        }
        let path = match &d.path {
            Some(p) if !p.is_empty() => p.clone(),
            _ => {
                return Err(self.err(
                    "data.path",
                    "(missing)",
                    "a text dataset needs its file",
                    "add path = \"some.txt\" (UTF-8), or a directory of text files",
                ));
            }
        };
        let tokenizer = match d.tokenizer.as_deref().unwrap_or("char") {
            "char" => Tokenizer::Char,
            "byte" => Tokenizer::Byte,
            other => {
                return Err(self.err(
                    "data.tokenizer",
                    format!("{other:?}"),
                    "unknown tokenizer",
                    "use \"char\" (code points of the text) or \"byte\" (UTF-8 bytes)",
                ));
            }
        };
        let eval_windows = match d.eval_windows {
            None => 128,
            Some(w) if (1..=1 << 20).contains(&w) => w as usize,
            Some(w) => {
                return Err(self.err(
                    "data.eval_windows",
                    w,
                    "must be in 1..=1048576",
                    "use e.g. eval_windows = 128",
                ));
            }
        };
        Ok(Some(TextConfig {
            path,
            tokenizer,
            block_size: 0,
            eval_windows,
        }))
    }

    fn model(&self, m: RawModel, data: &DataConfig) -> Result<ModelConfig, CoreError> {
        let kind = match m.kind.as_str() {
            "mlp" => ModelKind::Mlp,
            "cnn" => ModelKind::Cnn,
            "custom" => ModelKind::Custom,
            "graph" => ModelKind::Graph,
            "gpt" => ModelKind::Gpt,
            other => {
                return Err(self.err(
                    "model.kind",
                    format!("{other:?}"),
                    "unknown model",
                    "use \"mlp\", \"cnn\", \"gpt\" or \"graph\" (layers in the config), or \"custom\" for a network defined in Rust",
                ));
            }
        };
        let widths = |key: &str, v: Vec<i64>| -> Result<Vec<usize>, CoreError> {
            v.iter()
                .map(|&w| {
                    if (1..=1 << 16).contains(&w) {
                        Ok(w as usize)
                    } else {
                        Err(self.err(
                            key,
                            format!("{v:?}"),
                            "every width must be in 1..=65536",
                            "use e.g. [256, 128]",
                        ))
                    }
                })
                .collect()
        };
        if kind == ModelKind::Gpt && m.hidden.is_some() {
            return Err(self.err(
                "model.hidden",
                "(set)",
                "the gpt model's widths are n_embd (and 4 * n_embd in its MLP)",
                "remove model.hidden",
            ));
        }
        let gpt = self.gpt(&m, kind)?;
        if kind == ModelKind::Graph {
            for (key, set) in [
                ("model.hidden", m.hidden.is_some()),
                ("model.activation", m.activation.is_some()),
                ("model.dropout", m.dropout.is_some()),
            ] {
                if set {
                    return Err(self.err(
                        key,
                        "(set)",
                        "a graph model's layers carry their own widths, activations and dropout",
                        "remove the key and write it as a [[model.layers]] entry",
                    ));
                }
            }
        }
        let hidden = widths("model.hidden", m.hidden.unwrap_or_default())?;
        let channels = match (kind, m.channels) {
            (ModelKind::Mlp | ModelKind::Custom | ModelKind::Graph | ModelKind::Gpt, Some(_)) => {
                return Err(self.err(
                    "model.channels",
                    "(set)",
                    "only the cnn model has conv channels",
                    "remove model.channels or set kind = \"cnn\"",
                ));
            }
            (ModelKind::Mlp | ModelKind::Custom | ModelKind::Graph | ModelKind::Gpt, None) => {
                vec![]
            }
            (ModelKind::Cnn, c) => {
                let c = widths("model.channels", c.unwrap_or_else(|| vec![8, 16]))?;
                if c.is_empty() || c.len() > 8 {
                    return Err(self.err(
                        "model.channels",
                        format!("{c:?}"),
                        "the cnn has one conv-pool block per entry: 1 to 8 of them",
                        "use e.g. channels = [8, 16]",
                    ));
                }
                c
            }
        };
        let kernel_size = match (kind, m.kernel_size) {
            (ModelKind::Mlp | ModelKind::Custom | ModelKind::Graph | ModelKind::Gpt, Some(_)) => {
                return Err(self.err(
                    "model.kernel_size",
                    "(set)",
                    "only the cnn model has a kernel size",
                    "remove model.kernel_size or set kind = \"cnn\"",
                ));
            }
            (ModelKind::Mlp | ModelKind::Custom | ModelKind::Graph | ModelKind::Gpt, None) => 0,
            (ModelKind::Cnn, k) => {
                let k = k.unwrap_or(3);
                if k <= 0 || k % 2 == 0 || k > 15 {
                    return Err(self.err(
                        "model.kernel_size",
                        k,
                        "must be odd and in 1..=15 (same padding)",
                        "use 3 or 5",
                    ));
                }
                k as usize
            }
        };
        let side = 1usize << channels.len();
        if kind == ModelKind::Cnn && (data.image_shape[1] < side || data.image_shape[2] < side) {
            return Err(self.err(
                "model.channels",
                format!("{channels:?}"),
                &format!(
                    "{} conv-pool blocks halve the image {} times and need images of at least {side}x{side}",
                    channels.len(),
                    channels.len()
                ),
                "use fewer conv blocks, or the mlp for smaller images",
            ));
        }
        let activation = match m.activation.as_deref().unwrap_or("relu") {
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            "gelu" => Activation::Gelu,
            other => {
                return Err(self.err(
                    "model.activation",
                    format!("{other:?}"),
                    "unknown activation",
                    "use relu, tanh, sigmoid or gelu",
                ));
            }
        };
        let dropout = m.dropout.unwrap_or(0.0);
        if !dropout.is_finite() || !(0.0..1.0).contains(&dropout) {
            return Err(self.err(
                "model.dropout",
                dropout,
                "must be in [0, 1)",
                "use e.g. 0.1, or 0 for none",
            ));
        }
        let init = match m.init.as_deref().unwrap_or("kaiming_uniform") {
            "kaiming_uniform" => Init::KaimingUniform,
            "xavier_uniform" => Init::XavierUniform,
            other => {
                return Err(self.err(
                    "model.init",
                    format!("{other:?}"),
                    "unknown initialiser",
                    "use \"kaiming_uniform\" or \"xavier_uniform\"",
                ));
            }
        };
        let pool = match (kind, m.pool.as_deref()) {
            (ModelKind::Mlp | ModelKind::Custom | ModelKind::Graph | ModelKind::Gpt, Some(_)) => {
                return Err(self.err(
                    "model.pool",
                    "(set)",
                    "only the cnn model pools",
                    "remove model.pool or set kind = \"cnn\"",
                ));
            }
            (_, None | Some("max")) => PoolKind::Max,
            (_, Some("avg")) => PoolKind::Avg,
            (_, Some(other)) => {
                return Err(self.err(
                    "model.pool",
                    format!("{other:?}"),
                    "unknown pooling",
                    "use \"max\" or \"avg\"",
                ));
            }
        };
        let layers = match (kind, m.layers) {
            (ModelKind::Graph, Some(raw)) => self.layers(raw, init, data)?,
            (ModelKind::Graph, None) => {
                return Err(self.err(
                    "model.layers",
                    "(missing)",
                    "a graph model is its list of layers",
                    "add [[model.layers]] tables (see configs/digits_graph.toml)",
                ));
            }
            (_, Some(_)) => {
                return Err(self.err(
                    "model.layers",
                    "(set)",
                    "only the graph model takes layers",
                    "remove [[model.layers]] or set kind = \"graph\"",
                ));
            }
            (_, None) => vec![],
        };
        Ok(ModelConfig {
            kind,
            hidden,
            channels,
            kernel_size,
            activation,
            dropout,
            init,
            pool,
            layers,
            gpt,
        })
    }

    /// `model.kind = "gpt"`'s keys (refused on other kinds).
    fn gpt(&self, m: &RawModel, kind: ModelKind) -> Result<Option<GptConfig>, CoreError> {
        let keys = [
            ("model.n_layer", m.n_layer.is_some()),
            ("model.n_head", m.n_head.is_some()),
            ("model.n_embd", m.n_embd.is_some()),
            ("model.block_size", m.block_size.is_some()),
            ("model.bias", m.bias.is_some()),
            ("model.tie_weights", m.tie_weights.is_some()),
        ];
        if kind != ModelKind::Gpt {
            if let Some((key, _)) = keys.iter().find(|k| k.1) {
                return Err(self.err(
                    key,
                    "(set)",
                    "only the gpt model takes this key",
                    "remove it, or set model.kind = \"gpt\"",
                ));
            }
            return Ok(None);
        }
        let need =
            |key: &str, v: Option<i64>, max: i64, example: &str| -> Result<usize, CoreError> {
                match v {
                    Some(x) if (1..=max).contains(&x) => Ok(x as usize),
                    Some(x) => Err(self.err(key, x, &format!("must be in 1..={max}"), example)),
                    None => Err(self.err(key, "(missing)", "the gpt model needs it", example)),
                }
            };
        let n_layer = need("model.n_layer", m.n_layer, 256, "add e.g. n_layer = 4")?;
        let n_head = need("model.n_head", m.n_head, 1024, "add e.g. n_head = 4")?;
        let n_embd = need("model.n_embd", m.n_embd, 1 << 14, "add e.g. n_embd = 128")?;
        let block_size = need(
            "model.block_size",
            m.block_size,
            1 << 14,
            "add e.g. block_size = 64",
        )?;
        if n_embd % n_head != 0 {
            return Err(self.err(
                "model.n_embd",
                n_embd,
                &format!("must be divisible by model.n_head = {n_head} (each head gets n_embd / n_head dimensions)"),
                "choose n_embd a multiple of n_head, e.g. n_embd = 128 with n_head = 4",
            ));
        }
        Ok(Some(GptConfig {
            n_layer,
            n_head,
            n_embd,
            block_size,
            bias: m.bias.unwrap_or(true),
            tie_weights: m.tie_weights.unwrap_or(true),
        }))
    }

    /// Validate `[[model.layers]]`: ops, ids, references, widths, and that every layer but the
    /// last is used and the last gives `data.classes` logits.
    fn layers(
        &self,
        raw: Vec<RawLayer>,
        default_init: Init,
        data: &DataConfig,
    ) -> Result<Vec<GraphLayer>, CoreError> {
        if raw.is_empty() || raw.len() > 4096 {
            return Err(self.err(
                "model.layers",
                format!("{} layers", raw.len()),
                "a graph needs 1 to 4096 layers",
                "add [[model.layers]] tables ending in a linear layer with out = data.classes",
            ));
        }
        let path_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 200
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        let mut layers: Vec<GraphLayer> = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let key = format!("model.layers[{i}]");
            let e =
                |reason: &str, fix: &str| self.err(&key, format!("op = {:?}", r.op), reason, fix);
            let unused = |field: &str, set: bool| -> Result<(), CoreError> {
                if set {
                    return Err(e(
                        &format!("a {:?} layer takes no `{field}`", r.op),
                        &format!("remove `{field}` from this layer"),
                    ));
                }
                Ok(())
            };
            let name = |what: &str| -> Result<String, CoreError> {
                match &r.name {
                    Some(n) if path_ok(n) => Ok(n.clone()),
                    Some(n) => Err(e(
                        &format!("name {n:?} must be 1-200 ASCII letters, digits, '.', '_' or '-'"),
                        "use a path such as name = \"blocks.0.fc1\"",
                    )),
                    None => Err(e(
                        &format!(
                            "a {what} layer needs a `name` ({})",
                            if what == "linear" {
                                "its parameters are <name>.weight and <name>.bias"
                            } else {
                                "its masks come from the stream dropout/<name>/step-<s>"
                            }
                        ),
                        "add e.g. name = \"blocks.0.fc1\"",
                    )),
                }
            };
            let op = match r.op.as_str() {
                "linear" => {
                    unused("p", r.p.is_some())?;
                    let out = match r.out {
                        Some(o) if (1..=1 << 16).contains(&o) => o as usize,
                        Some(o) => {
                            return Err(e(
                                &format!("out = {o}: must be in 1..=65536"),
                                "use e.g. out = 64",
                            ));
                        }
                        None => {
                            return Err(e(
                                "a linear layer needs `out` (its width)",
                                "add e.g. out = 64",
                            ));
                        }
                    };
                    let init = match r.init.as_deref() {
                        None => default_init,
                        Some("kaiming_uniform") => Init::KaimingUniform,
                        Some("xavier_uniform") => Init::XavierUniform,
                        Some(other) => {
                            return Err(e(
                                &format!("unknown init {other:?}"),
                                "use \"kaiming_uniform\" or \"xavier_uniform\"",
                            ));
                        }
                    };
                    LayerOp::Linear {
                        name: name("linear")?,
                        out,
                        init,
                    }
                }
                "dropout" => {
                    unused("out", r.out.is_some())?;
                    unused("init", r.init.is_some())?;
                    let p = r.p.unwrap_or(f64::NAN);
                    if !p.is_finite() || !(0.0..1.0).contains(&p) {
                        return Err(e("a dropout layer needs `p` in [0, 1)", "add e.g. p = 0.1"));
                    }
                    LayerOp::Dropout {
                        name: name("dropout")?,
                        p,
                    }
                }
                "add" | "relu" | "tanh" | "sigmoid" | "gelu" => {
                    unused("name", r.name.is_some())?;
                    unused("out", r.out.is_some())?;
                    unused("init", r.init.is_some())?;
                    unused("p", r.p.is_some())?;
                    match r.op.as_str() {
                        "add" => LayerOp::Add,
                        "relu" => LayerOp::Activation(Activation::Relu),
                        "tanh" => LayerOp::Activation(Activation::Tanh),
                        "sigmoid" => LayerOp::Activation(Activation::Sigmoid),
                        _ => LayerOp::Activation(Activation::Gelu),
                    }
                }
                _ => {
                    return Err(e(
                        "unknown op",
                        "use linear, relu, tanh, sigmoid, gelu, dropout or add",
                    ));
                }
            };
            let id = match (&r.id, &op) {
                (Some(id), _) => id.clone(),
                (None, LayerOp::Linear { name, .. } | LayerOp::Dropout { name, .. }) => {
                    name.clone()
                }
                (None, _) => format!("layers.{i}"),
            };
            if !path_ok(&id) || id == GRAPH_INPUT || layers.iter().any(|l| l.id == id) {
                return Err(e(
                    &format!(
                        "id {id:?} must be unique, not {GRAPH_INPUT:?}, and 1-200 ASCII letters, digits, '.', '_' or '-'"
                    ),
                    "give the layer its own `id` (linear and dropout layers default to their name, so a linear layer sharing another's parameters needs one)",
                ));
            }
            let from = r.from.clone().unwrap_or_else(|| {
                vec![
                    layers
                        .last()
                        .map_or(GRAPH_INPUT.to_string(), |l| l.id.clone()),
                ]
            });
            let arity = if op == LayerOp::Add { 2 } else { 1 };
            if from.len() != arity {
                return Err(e(
                    &format!("takes {arity} input(s), `from` names {}", from.len()),
                    if arity == 2 {
                        "name both summands, e.g. from = [\"h0\", \"blocks.0.fc2\"]"
                    } else {
                        "name one earlier layer's id (or \"x\"), or leave `from` out for the previous layer"
                    },
                ));
            }
            for f in &from {
                if f != GRAPH_INPUT && !layers.iter().any(|l| &l.id == f) {
                    return Err(e(
                        &format!("`from` names {f:?}, which is not an earlier layer's id"),
                        "refer to a layer above this one, or to \"x\" (the input)",
                    ));
                }
            }
            layers.push(GraphLayer { id, from, op });
        }
        let input_dim: usize = data.image_shape.iter().product();
        let widths = graph_widths(&layers, input_dim);
        let sources = graph_sources(&layers);
        let width = |src: Option<usize>| src.map_or(input_dim, |i| widths[i]);
        let mut linears: Vec<(&str, usize, usize, Init, usize)> = Vec::new();
        let mut dropouts: Vec<&str> = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let key = format!("model.layers[{i}]");
            match &l.op {
                LayerOp::Add => {
                    let (a, b) = (width(sources[i][0]), width(sources[i][1]));
                    if a != b {
                        return Err(self.err(
                            &key,
                            format!("from = {:?}", l.from),
                            &format!("adds widths {a} and {b}: the summands must have one width"),
                            "add layers of equal width (insert a linear layer to project one)",
                        ));
                    }
                }
                LayerOp::Linear { name, out, init } => {
                    let d_in = width(sources[i][0]);
                    match linears.iter().find(|x| x.0 == name) {
                        Some(&(_, di, o, it, j)) if (di, o, it) != (d_in, *out, *init) => {
                            return Err(self.err(
                                &key,
                                format!("name = {name:?}"),
                                &format!(
                                    "shares its parameters with model.layers[{j}] ({di} -> {o}, {it:?}) but is {d_in} -> {out} ({init:?})"
                                ),
                                "give the layer its own name, or make the shapes and init match",
                            ));
                        }
                        Some(_) => {}
                        None => linears.push((name, d_in, *out, *init, i)),
                    }
                }
                LayerOp::Dropout { name, .. } => {
                    if dropouts.contains(&name.as_str()) {
                        return Err(self.err(
                            &key,
                            format!("name = {name:?}"),
                            "two dropout layers with one name would draw the same masks",
                            "give each dropout layer its own name",
                        ));
                    }
                    dropouts.push(name);
                }
                LayerOp::Activation(_) => {}
            }
            let used = layers[i + 1..].iter().any(|m| m.from.contains(&l.id));
            if i + 1 < layers.len() && !used {
                return Err(self.err(
                    &key,
                    format!("id = {:?}", l.id),
                    "its output is never used (only the last layer's output is the network's)",
                    "feed it into a later layer with `from`, or remove it",
                ));
            }
        }
        let last = widths[widths.len() - 1];
        if last != data.classes {
            return Err(self.err(
                &format!("model.layers[{}]", layers.len() - 1),
                format!("width {last}"),
                &format!(
                    "the last layer gives the logits and must have data.classes = {} outputs",
                    data.classes
                ),
                &format!("end with a linear layer with out = {}", data.classes),
            ));
        }
        Ok(layers)
    }

    fn optimizer(&self, o: RawOptimizer) -> Result<OptimizerConfig, CoreError> {
        let kind = match o.kind.as_str() {
            "sgd" => OptimizerKind::Sgd,
            "adam" => OptimizerKind::Adam,
            "adamw" => OptimizerKind::Adamw,
            other => {
                return Err(self.err(
                    "optimizer.kind",
                    format!("{other:?}"),
                    "unknown optimizer",
                    "use \"sgd\", \"adam\" or \"adamw\"",
                ));
            }
        };
        let lr = o.lr;
        if !lr.is_finite() || lr <= 0.0 || lr > 10.0 {
            return Err(self.err("optimizer.lr", lr, "must be in (0, 10]", "use e.g. 1e-3"));
        }
        let betas = match &o.betas {
            None => [0.9, 0.999],
            Some(b)
                if b.len() == 2 && b.iter().all(|x| x.is_finite() && (0.0..1.0).contains(x)) =>
            {
                [b[0], b[1]]
            }
            Some(b) => {
                return Err(self.err(
                    "optimizer.betas",
                    format!("{b:?}"),
                    "must be two numbers in [0, 1)",
                    "use betas = [0.9, 0.999]",
                ));
            }
        };
        if kind == OptimizerKind::Sgd && o.betas.is_some() {
            return Err(self.err(
                "optimizer.betas",
                format!("{betas:?}"),
                "sgd has no betas",
                "remove betas or use adam/adamw",
            ));
        }
        let eps = o.eps.unwrap_or(1e-8);
        if !eps.is_finite() || eps <= 0.0 || eps > 1.0 {
            return Err(self.err("optimizer.eps", eps, "must be in (0, 1]", "use e.g. 1e-8"));
        }
        let weight_decay = self.finite_in(
            "optimizer.weight_decay",
            o.weight_decay.unwrap_or(0.0),
            0.0,
            1.0,
            "use e.g. 0.01, or 0 for none",
        )?;
        let momentum = o
            .momentum
            .unwrap_or(if kind == OptimizerKind::Sgd { 0.9 } else { 0.0 });
        if kind != OptimizerKind::Sgd && o.momentum.is_some() {
            return Err(self.err(
                "optimizer.momentum",
                momentum,
                "only sgd takes momentum",
                "remove momentum (adam uses betas)",
            ));
        }
        let momentum =
            self.finite_in("optimizer.momentum", momentum, 0.0, 0.999, "use e.g. 0.9")?;
        let decay_matrices_only = match o.decay.as_deref() {
            None | Some("all") => false,
            Some("matrices") => true,
            Some(other) => {
                return Err(self.err(
                    "optimizer.decay",
                    format!("{other:?}"),
                    "unknown weight-decay grouping",
                    "use \"all\" (every parameter) or \"matrices\" (parameters with 2+ dimensions, as nanoGPT)",
                ));
            }
        };
        Ok(OptimizerConfig {
            kind,
            lr,
            betas,
            eps,
            weight_decay,
            momentum,
            decay_matrices_only,
        })
    }

    fn schedule(&self, s: Option<RawSchedule>) -> Result<ScheduleConfig, CoreError> {
        let Some(s) = s else {
            return Ok(ScheduleConfig {
                kind: ScheduleKind::Constant,
                step_size: 0,
                gamma: 1.0,
                min_lr: 0.0,
                warmup_steps: 0,
            });
        };
        let kind = match s.kind.as_str() {
            "constant" => ScheduleKind::Constant,
            "step" => ScheduleKind::Step,
            "cosine" => ScheduleKind::Cosine,
            other => {
                return Err(self.err(
                    "schedule.kind",
                    format!("{other:?}"),
                    "unknown schedule",
                    "use \"constant\", \"step\" or \"cosine\"",
                ));
            }
        };
        let step_size = match (kind, s.step_size) {
            (ScheduleKind::Step, None) => {
                return Err(self.err(
                    "schedule.step_size",
                    "(missing)",
                    "a step schedule needs its period",
                    "add e.g. step_size = 1000",
                ));
            }
            (ScheduleKind::Step, Some(v)) => self.positive("schedule.step_size", v)? as u64,
            (_, _) => 0,
        };
        let gamma = self.finite_in(
            "schedule.gamma",
            s.gamma
                .unwrap_or(if kind == ScheduleKind::Step { 0.1 } else { 1.0 }),
            0.0,
            1.0,
            "use e.g. 0.1",
        )?;
        let min_lr = self.finite_in(
            "schedule.min_lr",
            s.min_lr.unwrap_or(0.0),
            0.0,
            10.0,
            "use e.g. 0.0",
        )?;
        let warmup_steps =
            self.non_negative("schedule.warmup_steps", s.warmup_steps.unwrap_or(0))?;
        Ok(ScheduleConfig {
            kind,
            step_size,
            gamma,
            min_lr,
            warmup_steps,
        })
    }

    fn train(&self, t: RawTrain) -> Result<TrainConfig, CoreError> {
        let batch_size = self.positive("train.batch_size", t.batch_size)?;
        let epochs = self.non_negative("train.epochs", t.epochs.unwrap_or(1))?;
        let max_steps = t
            .max_steps
            .map(|m| self.positive("train.max_steps", m).map(|v| v as u64))
            .transpose()?;
        if epochs == 0 && max_steps.is_none() {
            return Err(self.err(
                "train.epochs",
                0,
                "the job would never take a step",
                "set epochs >= 1 or max_steps",
            ));
        }
        let eval_every = self.non_negative("train.eval_every", t.eval_every.unwrap_or(0))?;
        let checkpoint_every =
            self.non_negative("train.checkpoint_every", t.checkpoint_every.unwrap_or(0))?;
        let eval_batch_size =
            self.positive("train.eval_batch_size", t.eval_batch_size.unwrap_or(256))?;
        let backend = match t.backend.as_deref() {
            None => BackendKind::Ndarray,
            Some(b) => BackendKind::parse(b).ok_or_else(|| {
                self.err(
                    "train.backend",
                    format!("{b:?}"),
                    "unknown backend",
                    "use \"ndarray\", \"flex\" or \"wgpu\"",
                )
            })?,
        };
        let threads = self.non_negative("train.threads", t.threads.unwrap_or(0))? as usize;
        if threads > MAX_THREADS {
            return Err(self.err(
                "train.threads",
                threads,
                &format!("is more than {MAX_THREADS} threads"),
                "use 0 (all cores) or at most the number of cores: more threads never change the bits, only add overhead",
            ));
        }
        let kernels = match t.kernels.as_deref().unwrap_or("lockstep") {
            "burn" => KernelSet::Burn,
            "lockstep" => KernelSet::Lockstep,
            other => {
                return Err(self.err(
                    "train.kernels",
                    format!("{other:?}"),
                    "unknown kernel set",
                    "use \"burn\" or \"lockstep\"",
                ));
            }
        };
        let grad_clip = self.finite_in(
            "train.grad_clip",
            t.grad_clip.unwrap_or(0.0),
            0.0,
            1e6,
            "use e.g. grad_clip = 1.0, or 0 for none",
        )?;
        let arith = match t.arith.as_deref().unwrap_or("unfused") {
            "unfused" => Arith::Unfused,
            "fma" => Arith::Fma,
            other => {
                return Err(self.err(
                    "train.arith",
                    format!("{other:?}"),
                    "unknown arithmetic profile",
                    "use \"unfused\" (two roundings per multiply-add, every device) or \"fma\" (fused multiply-add, devices whose fma rounds once)",
                ));
            }
        };
        if arith == Arith::Fma && kernels != KernelSet::Lockstep {
            return Err(self.err(
                "train.arith",
                "\"fma\"",
                "selects the arithmetic of lockstep's kernels, but train.kernels = \"burn\" runs burn's stock ops (whose fusion the device decides)",
                "remove train.arith, or set train.kernels = \"lockstep\"",
            ));
        }
        let shards = self.positive("train.shards", t.shards.unwrap_or(1))?;
        if shards > MAX_SHARDS {
            return Err(self.err(
                "train.shards",
                shards,
                &format!("is more than {MAX_SHARDS} shards"),
                "use as many shards as the most workers you will run on (e.g. 4 or 8)",
            ));
        }
        if !batch_size.is_multiple_of(shards) {
            return Err(self.err(
                "train.shards",
                shards,
                &format!("does not divide train.batch_size = {batch_size}: every shard of a full batch must hold the same number of samples"),
                &format!("pick shards dividing {batch_size} (e.g. {}), or a batch_size that is a multiple of {shards}", largest_divisor_at_most(batch_size, shards)),
            ));
        }
        Ok(TrainConfig {
            shards,
            grad_clip,
            arith,
            batch_size,
            epochs,
            max_steps,
            eval_every,
            checkpoint_every,
            eval_batch_size,
            drop_last: t.drop_last.unwrap_or(false),
            backend,
            threads,
            kernels,
        })
    }
}

/// The largest divisor of `n` that is at most `k` (a suggestion in an error message).
fn largest_divisor_at_most(n: usize, k: usize) -> usize {
    (1..=k.min(n))
        .rev()
        .find(|d| n.is_multiple_of(*d))
        .unwrap_or(1)
}

/// Learning rate at optimizer step `step` (0-based): linear warm-up from 0, then the schedule.
/// Computed in f64 with only +, -, *, / (the cosine is `cos_fixed`), then rounded once to f32, so
/// it is the same on every platform.
pub fn learning_rate(
    opt: &OptimizerConfig,
    s: &ScheduleConfig,
    step: u64,
    total_steps: u64,
) -> f32 {
    let base = opt.lr;
    if step < s.warmup_steps {
        return (base * (step + 1) as f64 / s.warmup_steps as f64) as f32;
    }
    let t = step - s.warmup_steps;
    let lr = match s.kind {
        ScheduleKind::Constant => base,
        ScheduleKind::Step => base * s.gamma.powi((t / s.step_size.max(1)) as i32),
        ScheduleKind::Cosine => {
            let span = total_steps.saturating_sub(s.warmup_steps).max(1) as f64;
            let p = (t as f64 / span).min(1.0);
            s.min_lr + (base - s.min_lr) * 0.5 * (1.0 + cos_fixed(std::f64::consts::PI * p))
        }
    };
    lr as f32
}

/// ln(x) for finite x > 0 with only +, -, *, / and bit operations, so the result does not depend
/// on the platform's libm: `x = m * 2^e` with `m` in `[sqrt(1/2), sqrt(2))`, then
/// `ln m = 2 * (s + s^3/3 + ... + s^41/41)` with `s = (m - 1) / (m + 1)` (|s| < 0.172, so the
/// terms left out are below 1e-33), plus `e * ln 2`.
pub fn ln_fixed(x: f64) -> f64 {
    assert!(x > 0.0 && x.is_finite(), "ln_fixed({x})");
    let (mut m, mut e) = (x, 0i64);
    if m < f64::MIN_POSITIVE {
        m *= 2f64.powi(64);
        e -= 64;
    }
    let bits = m.to_bits();
    e += ((bits >> 52) & 0x7ff) as i64 - 1023;
    m = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    for k in 0..21 {
        sum += term / (2 * k + 1) as f64;
        term *= s2;
    }
    2.0 * sum + e as f64 * std::f64::consts::LN_2
}

/// cos(x) for x in [0, pi] by its Taylor series (terms to x^40), using only + and * and / so the
/// result does not depend on the platform's libm.
pub fn cos_fixed(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..=20u32 {
        let k = k as f64;
        term = -term * x2 / ((2.0 * k - 1.0) * (2.0 * k));
        sum += term;
    }
    sum
}
