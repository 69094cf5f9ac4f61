//! The models (MLP; CNN = conv-pool-conv-pool-fc) as named parameters plus a forward function.
//!
//! Parameters live as flat f32 tensors (`Vec<Tensor<1>>` in `ParamSpec` order) and are reshaped
//! in the forward pass; names are the checkpoint names (`l0.weight`, `conv1.bias`, ...).
//!
//! Initialisation happens on the host from named streams (`init/<param>`), element `i` of the
//! row-major tensor taking the stream's `i`-th draw: `uniform_range(-bound, bound)` with
//! `bound = sqrt(6 / fan_in)` (Kaiming uniform, gain sqrt(2)) or `sqrt(6 / (fan_in + fan_out))`
//! (Xavier uniform), the square root taken in f64. Biases start at zero. The same bits are then
//! uploaded to every backend.
//!
//! Dropout (inverted): element `i` of the row-major `[batch, width]` activation of hidden layer
//! `l` at step `s` is kept iff the `i`-th `uniform_f32` of stream `dropout/l<l>/step-<s>` is
//! `>= p`; kept values are multiplied by `(1 / (1 - p)) as f32` (computed in f64).

use burn::tensor::activation::{gelu, log_softmax, relu, sigmoid};
use burn::tensor::module::{avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData};
use lockstep_core::SeedStream;
use lockstep_core::config::{Activation, Init, KernelSet, ModelConfig, ModelKind, PoolKind};
use lockstep_kernels as det;

#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub fan_in: usize,
    pub fan_out: usize,
    pub is_bias: bool,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Clone, Debug)]
pub struct Model {
    pub cfg: ModelConfig,
    pub kernels: KernelSet,
    pub image_shape: [usize; 3],
    pub classes: usize,
    pub specs: Vec<ParamSpec>,
}

fn linear(name: &str, din: usize, dout: usize) -> [ParamSpec; 2] {
    [
        ParamSpec {
            name: format!("{name}.weight"),
            shape: vec![din, dout],
            fan_in: din,
            fan_out: dout,
            is_bias: false,
        },
        ParamSpec {
            name: format!("{name}.bias"),
            shape: vec![dout],
            fan_in: din,
            fan_out: dout,
            is_bias: true,
        },
    ]
}

fn conv(name: &str, cin: usize, cout: usize, k: usize) -> [ParamSpec; 2] {
    [
        ParamSpec {
            name: format!("{name}.weight"),
            shape: vec![cout, cin, k, k],
            fan_in: cin * k * k,
            fan_out: cout * k * k,
            is_bias: false,
        },
        ParamSpec {
            name: format!("{name}.bias"),
            shape: vec![cout],
            fan_in: cin * k * k,
            fan_out: cout * k * k,
            is_bias: true,
        },
    ]
}

impl Model {
    pub fn new(
        cfg: &ModelConfig,
        kernels: KernelSet,
        image_shape: [usize; 3],
        classes: usize,
    ) -> Self {
        let [c, h, w] = image_shape;
        let mut specs = Vec::new();
        let mut din = c * h * w;
        if cfg.kind == ModelKind::Cnn {
            let (c1, c2, k) = (cfg.channels[0], cfg.channels[1], cfg.kernel_size);
            specs.extend(conv("conv1", c, c1, k));
            specs.extend(conv("conv2", c1, c2, k));
            din = c2 * (h / 4) * (w / 4);
        }
        let prefix = if cfg.kind == ModelKind::Cnn {
            "fc"
        } else {
            "l"
        };
        let mut i = 0;
        for &width in &cfg.hidden {
            specs.extend(linear(&format!("{prefix}{i}"), din, width));
            din = width;
            i += 1;
        }
        specs.extend(linear(&format!("{prefix}{i}"), din, classes));
        Model {
            cfg: cfg.clone(),
            kernels,
            image_shape,
            classes,
            specs,
        }
    }

    pub fn input_dim(&self) -> usize {
        self.image_shape.iter().product()
    }

    pub fn num_params(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// Initial parameter values, one host vector per spec (see the module doc).
    pub fn init_params(&self, seed: u64) -> Vec<Vec<f32>> {
        self.specs
            .iter()
            .map(|s| {
                if s.is_bias {
                    return vec![0.0; s.numel()];
                }
                let bound = match self.cfg.init {
                    Init::KaimingUniform => (6.0 / s.fan_in as f64).sqrt(),
                    Init::XavierUniform => (6.0 / (s.fan_in + s.fan_out) as f64).sqrt(),
                } as f32;
                let mut stream = SeedStream::new(seed, format!("init/{}", s.name));
                (0..s.numel())
                    .map(|_| det::arith::flush(stream.uniform_range(-bound, bound)))
                    .collect()
            })
            .collect()
    }

    fn activate<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match (self.kernels, self.cfg.activation) {
            (_, Activation::Relu) => relu(x),
            (KernelSet::Lockstep, Activation::Tanh) => det::ops::tanh(x),
            (KernelSet::Lockstep, Activation::Sigmoid) => det::ops::sigmoid(x),
            (KernelSet::Lockstep, Activation::Gelu) => det::ops::gelu(x),
            (_, Activation::Tanh) => x.tanh(),
            (_, Activation::Sigmoid) => sigmoid(x),
            (KernelSet::Burn, Activation::Gelu) => gelu(x),
        }
    }

    /// Logits `[batch, classes]` for inputs `x` `[batch, input_dim]`. `dropout` is
    /// `Some((seed, step))` during training; masks are drawn on the host (module doc).
    pub fn forward(
        &self,
        params: &[Tensor<1>],
        x: Tensor<2>,
        dropout: Option<(u64, u64)>,
    ) -> Tensor<2> {
        let device = x.device();
        let batch = x.dims()[0];
        let p = |i: usize| params[i].clone();
        let mut idx = 0;
        let mut h = x;
        if self.cfg.kind == ModelKind::Cnn {
            let [c, hh, ww] = self.image_shape;
            let pad = self.cfg.kernel_size / 2;
            let opts = || ConvOptions::new([1, 1], [pad, pad], [1, 1], 1);
            let mut y = h.reshape([batch, c, hh, ww]);
            for _ in 0..2 {
                let s = &self.specs[idx];
                let w = p(idx).reshape([s.shape[0], s.shape[1], s.shape[2], s.shape[3]]);
                y = match self.kernels {
                    KernelSet::Burn => conv2d(y, w, Some(p(idx + 1)), opts()),
                    KernelSet::Lockstep => conv2d_im2col(y, w, p(idx + 1), pad),
                };
                let a = self.activate(y);
                y = match (self.kernels, self.cfg.pool) {
                    (KernelSet::Burn, PoolKind::Max) => max_pool2d(a, MaxPoolOptions::new([2, 2])),
                    (KernelSet::Burn, PoolKind::Avg) => avg_pool2d(a, AvgPoolOptions::new([2, 2])),
                    (KernelSet::Lockstep, PoolKind::Max) => det::ops::max_pool2d(a, 2),
                    (KernelSet::Lockstep, PoolKind::Avg) => det::ops::avg_pool2d(a, 2),
                };
                idx += 2;
            }
            let [b, c2, h2, w2] = y.dims();
            h = y.reshape([b, c2 * h2 * w2]);
        }
        let n_linear = (self.specs.len() - idx) / 2;
        for layer in 0..n_linear {
            let s = &self.specs[idx];
            let w = p(idx).reshape([s.shape[0], s.shape[1]]);
            let b = p(idx + 1).reshape([1, s.shape[1]]);
            h = match self.kernels {
                KernelSet::Burn => h.matmul(w) + b,
                KernelSet::Lockstep => det::add_bias(det::ops::matmul(h, w), b),
            };
            idx += 2;
            if layer + 1 < n_linear {
                h = self.activate(h);
                if let Some((seed, step)) = dropout.filter(|_| self.cfg.dropout > 0.0) {
                    let p = self.cfg.dropout;
                    let mask = match self.kernels {
                        KernelSet::Burn => {
                            let m = dropout_mask(seed, layer, step, batch, s.shape[1], p);
                            Tensor::<2>::from_data(TensorData::new(m, [batch, s.shape[1]]), &device)
                        }
                        KernelSet::Lockstep => {
                            det::dropout_mask(&h, seed, &dropout_stream(layer, step), p as f32)
                        }
                    };
                    h = match self.kernels {
                        KernelSet::Burn => h * mask,
                        KernelSet::Lockstep => det::ops::mul(h, mask),
                    };
                }
            }
        }
        h
    }
}

/// The name of the dropout stream of hidden layer `layer` at `step`.
pub fn dropout_stream(layer: usize, step: u64) -> String {
    format!("dropout/l{layer}/step-{step}")
}

/// The inverted-dropout mask of hidden layer `layer` at `step` (module doc).
pub fn dropout_mask(
    seed: u64,
    layer: usize,
    step: u64,
    batch: usize,
    width: usize,
    p: f64,
) -> Vec<f32> {
    let mut stream = SeedStream::new(seed, dropout_stream(layer, step));
    let keep = (1.0 / (1.0 - p)) as f32;
    let p = p as f32;
    (0..batch * width)
        .map(|_| if stream.uniform_f32() >= p { keep } else { 0.0 })
        .collect()
}

/// Mean cross-entropy `[1, 1]` of `logits` against one-hot `targets` (both `[batch, classes]`).
///
/// Stock set: reduces with `sum_dim` only (per row, then over the batch column): burn's full
/// `sum()` uses float atomics on wgpu, whose order changes run to run. Lockstep set: the fused
/// `xent` kernel per row, then `sum_rows` over the batch in order, then one flushed product
/// with `f32(1 / batch)` (`det::ops::mul`).
pub fn cross_entropy(kernels: KernelSet, logits: Tensor<2>, targets: Tensor<2>) -> Tensor<2> {
    let batch = logits.dims()[0];
    match kernels {
        KernelSet::Burn => {
            (log_softmax(logits, 1) * targets).sum_dim(1).sum_dim(0) * (-1.0 / batch as f32)
        }
        KernelSet::Lockstep => {
            let sum = det::sum_rows(det::cross_entropy_nll(logits, targets));
            let scale = Tensor::<2>::full([1, 1], 1.0 / batch as f32, &sum.device());
            det::ops::mul(sum, scale)
        }
    }
}

/// Same-padding stride-1 conv2d as lockstep's `im2col` gather + its matmul: every multiply-add in
/// the fixed k order (k = (c_in, ky, kx) row-major); the input gradient is `col2im`'s fixed-order
/// gather (`kernels/src/im2col`).
pub fn conv2d_im2col(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>, pad: usize) -> Tensor<4> {
    let [n, c, h, wd] = x.dims();
    let [co, _, k, _] = w.dims();
    let cols = det::ops::im2col(x, k, pad);
    let w2 = w.reshape([co, c * k * k]).transpose();
    let y = det::add_bias(det::ops::matmul(cols, w2), b.reshape([1, co]));
    y.reshape([n, h, wd, co]).permute([0, 3, 1, 2])
}

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
