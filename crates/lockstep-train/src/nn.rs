//! lockstep's model API: a [`Network`] declares named parameters (with shapes and an init rule)
//! and a forward pass written with the layers below; the trainer owns everything else (data,
//! batches, loss, backward, optimizer, schedule, checkpoints, resume, eval, scores).
//!
//! Invariants a `Network` gets for free:
//! - parameter paths (`blocks.3.fc.weight`) are the checkpoint tensor names; they must be unique
//!   and every dimension positive (checked by [`check_params`] before anything is written);
//! - initial values come from the named stream `init/<path>` (element `i` of the row-major tensor
//!   takes the stream's `i`-th draw), so they do not depend on declaration order, threads or
//!   device;
//! - dropout masks come from the stream `dropout/<name>/step-<s>` ([`Ctx::dropout`]): a function
//!   of seed, layer name and step only;
//! - every layer runs lockstep's kernels under `kernels = "lockstep"` (bitwise across backends)
//!   or burn's stock ops under `kernels = "burn"` (through `crate::opset`); a layer is usable in any composition
//!   (residuals through [`add`], several heads, shared weights by passing one path twice).

use crate::opset::{LOCKSTEP, OpSet};
use burn::tensor::Tensor;
use lockstep_core::SeedStream;
use lockstep_core::config::{
    Activation, Arith, GraphLayer, KernelSet, LayerOp, graph_sources, graph_widths,
};
use lockstep_kernels as det;
use std::collections::BTreeMap;

/// How a parameter starts (drawn from stream `init/<path>`; the square roots in f64).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InitRule {
    Zeros,
    /// `U(-sqrt(6 / fan_in), +sqrt(6 / fan_in))`: Kaiming uniform, gain sqrt(2).
    KaimingUniform {
        fan_in: usize,
    },
    /// `U(-sqrt(6 / (fan_in + fan_out)), +...)`: Xavier/Glorot uniform.
    XavierUniform {
        fan_in: usize,
        fan_out: usize,
    },
    /// `U(-bound, +bound)`.
    Uniform {
        bound: f32,
    },
    /// `N(0, std^2)`: `f32(std * z)` with `z` from `SeedStream::normal` (documented Box-Muller).
    Normal {
        std: f64,
    },
    Ones,
}

/// One named parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// The path, also the checkpoint tensor name (`model.<path>`).
    pub name: String,
    pub shape: Vec<usize>,
    pub init: InitRule,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The initial values (module doc), flushed like every value entering lockstep's kernels.
    pub fn init_values(&self, seed: u64) -> Vec<f32> {
        let bound = match self.init {
            InitRule::Zeros => return vec![0.0; self.numel()],
            InitRule::Ones => return vec![1.0; self.numel()],
            InitRule::Normal { std } => {
                let mut stream = SeedStream::new(seed, lockstep_core::streams::init(&self.name));
                return (0..self.numel())
                    .map(|_| det::arith::flush((std * stream.normal()) as f32))
                    .collect();
            }
            InitRule::KaimingUniform { fan_in } => (6.0 / fan_in as f64).sqrt() as f32,
            InitRule::XavierUniform { fan_in, fan_out } => {
                (6.0 / (fan_in + fan_out) as f64).sqrt() as f32
            }
            InitRule::Uniform { bound } => bound,
        };
        let mut stream = SeedStream::new(seed, lockstep_core::streams::init(&self.name));
        (0..self.numel())
            .map(|_| det::arith::flush(stream.uniform_range(-bound, bound)))
            .collect()
    }
}

/// Refuse duplicate paths and empty dimensions, naming the parameter.
pub fn check_params(specs: &[ParamSpec]) -> Result<(), String> {
    let mut seen = BTreeMap::new();
    for s in specs {
        if s.shape.is_empty() || s.shape.contains(&0) {
            return Err(format!(
                "parameter {:?} has shape {:?}: every dimension must be positive",
                s.name, s.shape
            ));
        }
        if s.name.is_empty() || s.name.contains(char::is_whitespace) {
            return Err(format!(
                "parameter path {:?} must be non-empty, without spaces",
                s.name
            ));
        }
        if seen.insert(s.name.as_str(), ()).is_some() {
            return Err(format!(
                "two parameters are declared with the path {:?}: paths name checkpoint tensors and must be unique",
                s.name
            ));
        }
    }
    Ok(())
}

/// The parameter tensors of one forward pass, looked up by path.
pub struct Params<'a> {
    index: BTreeMap<&'a str, usize>,
    specs: &'a [ParamSpec],
    values: &'a [Tensor<1>],
}

impl<'a> Params<'a> {
    pub fn new(specs: &'a [ParamSpec], values: &'a [Tensor<1>]) -> Self {
        Params {
            index: specs
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.as_str(), i))
                .collect(),
            specs,
            values,
        }
    }

    /// Parameter `path` reshaped to its declared `D`-dimensional shape. Panics naming the path
    /// when it was not declared or has another rank (a bug in the network, not in its input).
    pub fn get<const D: usize>(&self, path: &str) -> Tensor<D> {
        let i = *self.index.get(path).unwrap_or_else(|| {
            panic!("forward uses parameter {path:?}, which params() does not declare")
        });
        let shape: [usize; D] = self.specs[i].shape.clone().try_into().unwrap_or_else(|s| {
            panic!("parameter {path:?} has shape {s:?}, the forward asks for {D} dimensions")
        });
        self.values[i].clone().reshape(shape)
    }
}

/// What a forward pass may depend on besides parameters and inputs.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub kernels: KernelSet,
    /// The dot products' arithmetic profile (`train.arith`).
    pub arith: Arith,
    pub seed: u64,
    /// `Some(step)` while training (dropout active), `None` in evaluation and inference.
    pub step: Option<u64>,
    /// Where this forward's inputs sit in the step's whole batch: `(index of its first sample
    /// in the batch, samples it runs)`. `(0, 0)` for a whole batch. A shard (`train.shards`) draws
    /// its dropout masks from the word of the stream its first element has in the whole batch's
    /// activation (activations are batch-major: each sample owns the same number of elements).
    pub shard: (u64, usize),
}

impl Ctx {
    pub fn training(&self) -> bool {
        self.step.is_some()
    }

    /// The kernel set (and profile) this forward pass runs.
    pub fn ops(&self) -> &'static dyn OpSet {
        crate::opset::ops_in(self.kernels, self.arith)
    }

    /// The stream word of element 0 of activation `x` (`shard`): `first sample * elements per
    /// sample`, where a sample owns `numel(x) / samples in x` elements.
    pub fn first_word(&self, x: &Tensor<2>) -> u64 {
        let (first, samples) = self.shard;
        if first == 0 {
            return 0;
        }
        let [rows, cols] = x.dims();
        let samples = samples.max(1) as u64;
        first * ((rows * cols) as u64 / samples)
    }
}

/// A model: named parameters and a forward pass `x [batch, input_dim] -> logits [batch, classes]`.
pub trait Network: Send + Sync {
    fn params(&self) -> Vec<ParamSpec>;
    fn forward(&self, p: &Params, x: Tensor<2>, ctx: &Ctx) -> Tensor<2>;
}

// ---- layers -----------------------------------------------------------------------------------

/// `y = x @ W + b`, `W: [d_in, d_out]` at `<path>.weight`, `b: [d_out]` at `<path>.bias`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub path: String,
    pub d_in: usize,
    pub d_out: usize,
}

impl Linear {
    pub fn new(path: impl Into<String>, d_in: usize, d_out: usize) -> Self {
        Linear {
            path: path.into(),
            d_in,
            d_out,
        }
    }

    /// Weight with `init` (e.g. Kaiming over `d_in`), bias zero.
    pub fn params(&self, xavier: bool) -> [ParamSpec; 2] {
        let init = if xavier {
            InitRule::XavierUniform {
                fan_in: self.d_in,
                fan_out: self.d_out,
            }
        } else {
            InitRule::KaimingUniform { fan_in: self.d_in }
        };
        [
            ParamSpec {
                name: format!("{}.weight", self.path),
                shape: vec![self.d_in, self.d_out],
                init,
            },
            ParamSpec {
                name: format!("{}.bias", self.path),
                shape: vec![self.d_out],
                init: InitRule::Zeros,
            },
        ]
    }

    pub fn forward(&self, p: &Params, x: Tensor<2>, ctx: &Ctx) -> Tensor<2> {
        let w: Tensor<2> = p.get(&format!("{}.weight", self.path));
        let b: Tensor<1> = p.get(&format!("{}.bias", self.path));
        ctx.ops().linear(x, w, b.reshape([1, self.d_out]))
    }
}

/// Same-padding, stride-1 conv `[c_out, c_in, k, k]` at `<path>.weight`, bias `[c_out]`.
/// Lockstep set: `im2col` gather + matmul (every multiply-add in the fixed k order).
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub path: String,
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
}

impl Conv2d {
    pub fn new(path: impl Into<String>, c_in: usize, c_out: usize, k: usize) -> Self {
        Conv2d {
            path: path.into(),
            c_in,
            c_out,
            k,
        }
    }

    pub fn params(&self, xavier: bool) -> [ParamSpec; 2] {
        let (fan_in, fan_out) = (self.c_in * self.k * self.k, self.c_out * self.k * self.k);
        let init = if xavier {
            InitRule::XavierUniform { fan_in, fan_out }
        } else {
            InitRule::KaimingUniform { fan_in }
        };
        [
            ParamSpec {
                name: format!("{}.weight", self.path),
                shape: vec![self.c_out, self.c_in, self.k, self.k],
                init,
            },
            ParamSpec {
                name: format!("{}.bias", self.path),
                shape: vec![self.c_out],
                init: InitRule::Zeros,
            },
        ]
    }

    pub fn forward(&self, p: &Params, x: Tensor<4>, ctx: &Ctx) -> Tensor<4> {
        let w: Tensor<4> = p.get(&format!("{}.weight", self.path));
        let b: Tensor<1> = p.get(&format!("{}.bias", self.path));
        ctx.ops().conv2d(x, w, b, self.k / 2)
    }
}

/// Same-padding stride-1 conv2d as lockstep's `im2col` gather + its matmul
/// (`opset::Lockstep::conv2d`).
pub fn conv2d_im2col(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>, pad: usize) -> Tensor<4> {
    LOCKSTEP.conv2d(x, w, b, pad)
}

/// An element-wise activation (on a `[d0, rest]` view: element-wise, so the bits are those of
/// the tensor itself).
pub fn activate<const D: usize>(act: Activation, x: Tensor<D>, ctx: &Ctx) -> Tensor<D> {
    let dims = x.dims();
    let rest = dims[1..].iter().product::<usize>();
    ctx.ops()
        .activate(act, x.reshape([dims[0], rest]))
        .reshape(dims)
}

/// Non-overlapping 2x2 pooling (max or average).
pub fn pool2(max: bool, x: Tensor<4>, ctx: &Ctx) -> Tensor<4> {
    ctx.ops().pool2(max, x)
}

/// Element-wise `a + b` (same shape): under the lockstep set one flushed IEEE add per element,
/// so residual connections keep the cross-device bits.
pub fn add(a: Tensor<2>, b: Tensor<2>, ctx: &Ctx) -> Tensor<2> {
    ctx.ops().add(a, b)
}

/// Inverted dropout with probability `p`, its mask from stream `dropout/<name>/step-<s>`
/// (element `i` of the whole batch's row-major activation kept iff the stream's `i`-th
/// `uniform_f32 >= p`, kept values scaled by `f32(1 / (1 - p))`; a shard's forward uses its own
/// elements' words, `Ctx::first_word`). The identity outside training or at `p = 0`.
pub fn dropout(name: &str, p: f64, x: Tensor<2>, ctx: &Ctx) -> Tensor<2> {
    match ctx.step.filter(|_| p > 0.0) {
        Some(step) => {
            let first = ctx.first_word(&x);
            let stream = lockstep_core::streams::dropout(name, step);
            ctx.ops().dropout(x, ctx.seed, &stream, first, p)
        }
        None => x,
    }
}

// ---- graphs: networks written down as data --------------------------------------------------

/// A network described by `[[model.layers]]` (`model.kind = "graph"`, validated by the config
/// parser): layers run in order, each on the outputs its `from` names. Parameters are declared in
/// layer order (a linear layer's name declares them the first time it appears; later layers with
/// that name share them). Because the description is part of the config, it is part of the run
/// identity and the checkpoint, so `lockstep train/resume/verify/predict` rebuild the network
/// from the run directory alone.
#[derive(Clone, Debug)]
pub struct Graph {
    layers: Vec<GraphLayer>,
    /// Per layer: the indices of its inputs (`None` = the graph input).
    from: Vec<Vec<Option<usize>>>,
    /// Per layer: its input width (what a linear layer's weight has as rows).
    d_in: Vec<usize>,
}

impl Graph {
    /// The network of validated `layers` over inputs of width `input_dim`.
    pub fn new(layers: &[GraphLayer], input_dim: usize) -> Self {
        let widths = graph_widths(layers, input_dim);
        let from = graph_sources(layers);
        let d_in = from
            .iter()
            .map(|f| f[0].map_or(input_dim, |i| widths[i]))
            .collect();
        Graph {
            layers: layers.to_vec(),
            from,
            d_in,
        }
    }
}

impl Network for Graph {
    fn params(&self) -> Vec<ParamSpec> {
        let mut specs: Vec<ParamSpec> = Vec::new();
        for (l, &d_in) in self.layers.iter().zip(&self.d_in) {
            if let LayerOp::Linear { name, out, init } = &l.op
                && !specs.iter().any(|s| s.name == format!("{name}.weight"))
            {
                let xavier = *init == lockstep_core::config::Init::XavierUniform;
                specs.extend(Linear::new(name.clone(), d_in, *out).params(xavier));
            }
        }
        specs
    }

    fn forward(&self, p: &Params, x: Tensor<2>, ctx: &Ctx) -> Tensor<2> {
        let mut outs: Vec<Tensor<2>> = Vec::with_capacity(self.layers.len());
        for ((l, from), &d_in) in self.layers.iter().zip(&self.from).zip(&self.d_in) {
            let input = |k: usize| from[k].map_or_else(|| x.clone(), |i| outs[i].clone());
            let y = match &l.op {
                LayerOp::Linear { name, out, .. } => {
                    Linear::new(name.clone(), d_in, *out).forward(p, input(0), ctx)
                }
                LayerOp::Activation(act) => activate(*act, input(0), ctx),
                LayerOp::Dropout { name, p: rate } => dropout(name, *rate, input(0), ctx),
                LayerOp::Add => add(input(0), input(1), ctx),
            };
            outs.push(y);
        }
        outs.pop().expect("a validated graph has layers")
    }
}

/// Writes `[[model.layers]]` for a config from Rust: each call appends one layer and returns its
/// id, to pass as a later layer's input. [`GraphBuilder::INPUT`] is the input batch.
///
/// ```
/// use lockstep_train::nn::GraphBuilder;
/// let mut g = GraphBuilder::default();
/// let h = g.linear("stem", GraphBuilder::INPUT, 32);
/// let h = g.act("relu", &h);
/// g.linear("head", &h, 10);
/// assert!(g.toml().contains("op = \"linear\""));
/// ```
#[derive(Clone, Debug, Default)]
pub struct GraphBuilder {
    toml: String,
    n: usize,
}

impl GraphBuilder {
    pub const INPUT: &'static str = lockstep_core::config::GRAPH_INPUT;

    fn push(&mut self, fields: &[(&str, String)], id: String) -> String {
        self.toml.push_str("\n[[model.layers]]\n");
        for (k, v) in fields {
            self.toml.push_str(&format!("{k} = {v}\n"));
        }
        self.n += 1;
        id
    }

    /// A linear layer `name` (parameters `<name>.weight`, `<name>.bias`) of width `out`.
    pub fn linear(&mut self, name: &str, from: &str, out: usize) -> String {
        self.linear_init(name, from, out, None)
    }

    /// A linear layer with its own init (`"kaiming_uniform"` or `"xavier_uniform"`).
    pub fn linear_init(
        &mut self,
        name: &str,
        from: &str,
        out: usize,
        init: Option<&str>,
    ) -> String {
        let mut f = vec![
            ("op", "\"linear\"".to_string()),
            ("name", format!("{name:?}")),
            ("from", format!("[{from:?}]")),
            ("out", out.to_string()),
        ];
        if let Some(i) = init {
            f.push(("init", format!("{i:?}")));
        }
        self.push(&f, name.to_string())
    }

    /// `relu`, `tanh`, `sigmoid` or `gelu` of `from`.
    pub fn act(&mut self, op: &str, from: &str) -> String {
        let id = format!("layers.{}", self.n);
        self.push(
            &[("op", format!("{op:?}")), ("from", format!("[{from:?}]"))],
            id,
        )
    }

    /// [`GraphBuilder::act`] with the id `id` (instead of `layers.<index>`).
    pub fn act_as(&mut self, op: &str, from: &str, id: &str) -> String {
        self.push(
            &[
                ("op", format!("{op:?}")),
                ("id", format!("{id:?}")),
                ("from", format!("[{from:?}]")),
            ],
            id.to_string(),
        )
    }

    /// Inverted dropout with rate `p`, masks from stream `dropout/<name>/step-<s>`.
    pub fn dropout(&mut self, name: &str, from: &str, p: f64) -> String {
        self.push(
            &[
                ("op", "\"dropout\"".to_string()),
                ("name", format!("{name:?}")),
                ("from", format!("[{from:?}]")),
                ("p", format!("{p:?}")),
            ],
            name.to_string(),
        )
    }

    /// `a + b`, element-wise.
    pub fn add(&mut self, a: &str, b: &str) -> String {
        let id = format!("layers.{}", self.n);
        self.push(
            &[
                ("op", "\"add\"".to_string()),
                ("from", format!("[{a:?}, {b:?}]")),
            ],
            id,
        )
    }

    /// The `[[model.layers]]` tables, to append to a config whose `[model]` has `kind = "graph"`.
    pub fn toml(&self) -> &str {
        &self.toml
    }
}
