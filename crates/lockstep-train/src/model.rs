//! The shipped models (MLP; CNN = conv-pool blocks then fully connected layers) as
//! [`Network`]s over the layers of `crate::nn`, and [`Model`]: a network with its parameter
//! list, kernel set, input shape and class count — what the trainer, verify and predict run.
//!
//! Parameter names are the checkpoint names: MLP `l0.weight`, `l0.bias`, ...; CNN `conv1.*`,
//! `conv2.*`, ... then `fc0.*`, .... Initialisation: `crate::nn::ParamSpec::init_values`
//! (Kaiming or Xavier uniform from stream `init/<param>`, biases zero). Dropout after hidden
//! linear layer `l` uses stream `dropout/l<l>/step-<s>` (`crate::nn::dropout`).

use crate::nn::{Conv2d, Ctx, Linear, Network, ParamSpec, Params, activate, dropout, pool2};
use crate::task::{Classification, Task};
use burn::tensor::{Device, Tensor, TensorData};
use lockstep_core::config::{Arith, Init, KernelSet, ModelConfig, ModelKind, PoolKind};
use std::sync::Arc;

/// A network ready to train or score: its parameters (in declaration order, the order of the
/// parameter tensors everywhere), kernel set, input shape `[c, h, w]` and class count.
#[derive(Clone)]
pub struct Model {
    pub net: Arc<dyn Network>,
    /// What it is trained to do (targets, loss, recorded scores); `Classification` unless set.
    pub task: Arc<dyn Task>,
    pub kernels: KernelSet,
    /// The dot products' arithmetic profile (`train.arith`; the trainer sets the config's).
    pub arith: Arith,
    pub image_shape: [usize; 3],
    pub classes: usize,
    pub specs: Vec<ParamSpec>,
    /// Logit rows per input: 1 for classification, the sequence length for a language model.
    pub rows_per_sample: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("kernels", &self.kernels)
            .field("arith", &self.arith)
            .field("image_shape", &self.image_shape)
            .field("classes", &self.classes)
            .field("specs", &self.specs)
            .finish()
    }
}

impl Model {
    /// The model a config describes (`model.kind = "mlp" | "cnn" | "graph"`).
    pub fn new(
        cfg: &ModelConfig,
        kernels: KernelSet,
        image_shape: [usize; 3],
        classes: usize,
    ) -> Self {
        let net: Arc<dyn Network> = match cfg.kind {
            ModelKind::Cnn => Arc::new(Cnn::new(cfg, image_shape, classes)),
            ModelKind::Gpt => {
                let gpt = cfg.gpt.as_ref().expect("a gpt config has [model] gpt keys");
                let net = Arc::new(crate::gpt::Gpt::new(gpt, classes, cfg.dropout));
                let mut m = Self::from_network(net, kernels, image_shape, classes)
                    .expect("the gpt declares valid parameters");
                m.rows_per_sample = gpt.block_size;
                return m;
            }
            ModelKind::Graph => Arc::new(crate::nn::Graph::new(
                &cfg.layers,
                image_shape.iter().product(),
            )),
            ModelKind::Mlp | ModelKind::Custom => Arc::new(Mlp::new(cfg, image_shape, classes)),
        };
        Self::from_network(net, kernels, image_shape, classes)
            .expect("the shipped models declare valid parameters")
    }

    /// Any [`Network`]; refuses duplicate parameter paths and empty dimensions (naming the
    /// parameter).
    pub fn from_network(
        net: Arc<dyn Network>,
        kernels: KernelSet,
        image_shape: [usize; 3],
        classes: usize,
    ) -> Result<Self, String> {
        let specs = net.params();
        crate::nn::check_params(&specs)?;
        if specs.is_empty() {
            return Err("the network declares no parameters: nothing to train".into());
        }
        Ok(Model {
            net,
            task: Arc::new(Classification),
            kernels,
            arith: Arith::Unfused,
            image_shape,
            classes,
            specs,
            rows_per_sample: 1,
        })
    }

    pub fn input_dim(&self) -> usize {
        self.image_shape.iter().product()
    }

    pub fn num_params(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// Initial parameter values, one host vector per spec.
    pub fn init_params(&self, seed: u64) -> Vec<Vec<f32>> {
        self.specs.iter().map(|s| s.init_values(seed)).collect()
    }

    /// Logits `[batch, classes]` for inputs `x` `[batch, input_dim]`. `dropout` is
    /// `Some((seed, step))` during training.
    pub fn forward(
        &self,
        params: &[Tensor<1>],
        x: Tensor<2>,
        dropout: Option<(u64, u64)>,
    ) -> Tensor<2> {
        self.forward_shard(params, x, dropout, (0, 0))
    }

    /// `forward` of one shard of a training batch: `shard = (index of its first sample in the
    /// whole batch, samples it holds)` places its dropout masks (`Ctx::shard`).
    pub fn forward_shard(
        &self,
        params: &[Tensor<1>],
        x: Tensor<2>,
        dropout: Option<(u64, u64)>,
        shard: (u64, usize),
    ) -> Tensor<2> {
        let ctx = Ctx {
            kernels: self.kernels,
            arith: self.arith,
            seed: dropout.map_or(0, |d| d.0),
            step: dropout.map(|d| d.1),
            shard,
        };
        self.net.forward(&Params::new(&self.specs, params), x, &ctx)
    }
}

/// `hidden` linear layers `l0, l1, ...` with the activation and dropout, then the output layer.
struct Mlp {
    layers: Vec<Linear>,
    cfg: ModelConfig,
}

/// Linear layers `prefix0..` from `d_in` through `hidden` to `classes`.
fn linear_stack(prefix: &str, mut d_in: usize, hidden: &[usize], classes: usize) -> Vec<Linear> {
    let mut layers = Vec::new();
    for (i, &width) in hidden.iter().chain([classes].iter()).enumerate() {
        layers.push(Linear::new(format!("{prefix}{i}"), d_in, width));
        d_in = width;
    }
    layers
}

/// The linear layers with activation and dropout between them (not after the last).
fn run_stack(
    layers: &[Linear],
    cfg: &ModelConfig,
    p: &Params,
    mut h: Tensor<2>,
    ctx: &Ctx,
) -> Tensor<2> {
    for (i, layer) in layers.iter().enumerate() {
        h = layer.forward(p, h, ctx);
        if i + 1 < layers.len() {
            h = activate(cfg.activation, h, ctx);
            h = dropout(&format!("l{i}"), cfg.dropout, h, ctx);
        }
    }
    h
}

fn xavier(cfg: &ModelConfig) -> bool {
    cfg.init == Init::XavierUniform
}

impl Mlp {
    fn new(cfg: &ModelConfig, image_shape: [usize; 3], classes: usize) -> Self {
        Mlp {
            layers: linear_stack("l", image_shape.iter().product(), &cfg.hidden, classes),
            cfg: cfg.clone(),
        }
    }
}

impl Network for Mlp {
    fn params(&self) -> Vec<ParamSpec> {
        self.layers
            .iter()
            .flat_map(|l| l.params(xavier(&self.cfg)))
            .collect()
    }
    fn forward(&self, p: &Params, x: Tensor<2>, ctx: &Ctx) -> Tensor<2> {
        run_stack(&self.layers, &self.cfg, p, x, ctx)
    }
}

/// Conv blocks `conv1, conv2, ...` (conv, activation, 2x2 pool) over `model.channels`, then the
/// MLP `fc0, fc1, ...` on the flattened `[c, h, w]` features.
struct Cnn {
    convs: Vec<Conv2d>,
    fcs: Vec<Linear>,
    image_shape: [usize; 3],
    cfg: ModelConfig,
}

impl Cnn {
    fn new(cfg: &ModelConfig, image_shape: [usize; 3], classes: usize) -> Self {
        let [mut c, mut h, mut w] = image_shape;
        let mut convs = Vec::new();
        for (i, &co) in cfg.channels.iter().enumerate() {
            convs.push(Conv2d::new(
                format!("conv{}", i + 1),
                c,
                co,
                cfg.kernel_size,
            ));
            (c, h, w) = (co, h / 2, w / 2);
        }
        Cnn {
            convs,
            fcs: linear_stack("fc", c * h * w, &cfg.hidden, classes),
            image_shape,
            cfg: cfg.clone(),
        }
    }
}

impl Network for Cnn {
    fn params(&self) -> Vec<ParamSpec> {
        let x = xavier(&self.cfg);
        self.convs
            .iter()
            .flat_map(|c| c.params(x))
            .chain(self.fcs.iter().flat_map(|l| l.params(x)))
            .collect()
    }
    fn forward(&self, p: &Params, x: Tensor<2>, ctx: &Ctx) -> Tensor<2> {
        let batch = x.dims()[0];
        let [c, h, w] = self.image_shape;
        let mut y = x.reshape([batch, c, h, w]);
        for conv in &self.convs {
            let a = activate(self.cfg.activation, conv.forward(p, y, ctx), ctx);
            y = pool2(self.cfg.pool == PoolKind::Max, a, ctx);
        }
        let [b, c2, h2, w2] = y.dims();
        run_stack(&self.fcs, &self.cfg, p, y.reshape([b, c2 * h2 * w2]), ctx)
    }
}

/// Mean cross-entropy `[1, 1]` of `logits` against one-hot `targets` (both `[batch, classes]`),
/// in the kernel set's order (`opset::OpSet::cross_entropy`).
pub fn cross_entropy(kernels: KernelSet, logits: Tensor<2>, targets: Tensor<2>) -> Tensor<2> {
    let rows = logits.dims()[0];
    crate::opset::ops(kernels).cross_entropy(logits, targets, rows)
}

pub use crate::nn::conv2d_im2col;

/// One-hot rows for `labels` as a host vector `[labels.len(), classes]`.
pub fn one_hot(labels: &[u32], classes: usize) -> Vec<f32> {
    let mut v = vec![0.0; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * classes + l as usize] = 1.0;
    }
    v
}

/// Upload a host vector as a flat tensor.
pub fn upload(values: Vec<f32>, device: &Device) -> Tensor<1> {
    let n = values.len();
    Tensor::<1>::from_data(TensorData::new(values, [n]), device)
}
