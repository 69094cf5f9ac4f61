//! `attention`: causal multi-head self-attention from the fused projection `qkv` `[b*t, 3c]`
//! (columns `0..c` the queries, `c..2c` the keys, `2c..3c` the values; head `h` the columns
//! `h*hd..(h+1)*hd` of each, `hd = c / nh`) to the heads' outputs side by side, `y` `[b*t, c]`.
//! One op for what a model otherwise writes as reshapes, transposes, three slices, two `bmm`s
//! and a `causal_softmax` — and computing exactly their bits, forward and backward.
//!
//! Order, per sequence `e` and head `h` (`q`, `k`, `v` its `[t, hd]` blocks; every step is an
//! existing op's kernel in its documented order, in the run's profile `fused`):
//!
//! ```text
//! s   = bmm(q, kᵀ)                      [t, t]   (`bmm`/`matmul`: each output in k order)
//! att = causal_softmax(s, t, scale)      [t, t]   (`causal`)
//! y_h = bmm(att, v)                      [t, hd]  written to y's columns h*hd..(h+1)*hd
//! ```
//!
//! Backward, from `qkv`, the forward's `att` (kept) and the incoming `dy`:
//!
//! ```text
//! d_att = bmm(dy_h, vᵀ)      d_v = bmm(attᵀ, dy_h)
//! d_s   = causal_softmax_backward(att, d_att, scale)
//! d_q   = bmm(d_s, k)        d_k = bmm(d_sᵀ, q)      (= (qᵀ · d_s)ᵀ: the same products, the
//!                                                      same i order)
//! d_qkv = each gradient at its block's place, plus +0.0
//! ```
//!
//! The final `+ 0.0` is what the written-out form's backward computes: each slice's gradient
//! is assigned into zeros and the three are added, so a `-0.0` gradient arrives as `+0.0`
//! (the only value the addition changes). The op keeps those bits so that a model written
//! either way trains identically.
//!
//! - CPU (`cpu.rs`): threads over (sequence, head) pairs; each gathers its blocks, runs
//!   `matmul`'s CPU code and `causal`'s rows on one thread, and a second parallel pass moves
//!   the heads' results into place. Only speed differs from the written-out form: no
//!   full-size zero tensors, no serial copies for the transposes.
//! - GPU (`launch.rs`): the written-out form itself on the device (`bmm`'s and `causal`'s
//!   kernels, burn's data movement), so the bits are those kernels' bits.
//!
//! No dropout inside: a model with attention dropout applies it between the softmax and the
//! second product and so uses the written-out form (`lockstep_train::gpt`).

mod backward;
pub mod cpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `attention` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for
/// autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait AttentionOps: Backend {
    /// Causal attention `[b*t, 3c] -> [b*t, c]` for `b` sequences of `t` tokens and `nh` heads.
    fn det_attention(
        qkv: FloatTensor<Self>,
        b: usize,
        nh: usize,
        scale: f32,
        fused: bool,
    ) -> FloatTensor<Self>;
    /// `det_attention` and the softmax it computed, `att` `[b*nh*t, t]` (rows: sequence, head,
    /// query), which the backward takes.
    fn det_attention_keep(
        qkv: FloatTensor<Self>,
        b: usize,
        nh: usize,
        scale: f32,
        fused: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// The gradient of `det_attention` with respect to `qkv`, for the incoming `dy`, from `qkv`
    /// and the forward's `att`.
    #[allow(clippy::too_many_arguments)]
    fn det_attention_backward(
        qkv: FloatTensor<Self>,
        att: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        b: usize,
        nh: usize,
        scale: f32,
        fused: bool,
    ) -> FloatTensor<Self>;
}

/// Causal self-attention of `b` sequences (`qkv` `[b*t, 3c]`, as a fused `c_attn` projection
/// gives it) with `nh` heads: `[b*t, c]`, the heads side by side. `fused`: the `fma` profile.
///
/// # Panics
///
/// When `qkv` is not `[b*t, 3c]` with `c` a multiple of `nh`.
pub fn attention(qkv: Tensor<2>, b: usize, nh: usize, scale: f32, fused: bool) -> Tensor<2> {
    let [r, c3] = qkv.dims();
    assert!(
        b > 0 && nh > 0 && r.is_multiple_of(b) && c3.is_multiple_of(3 * nh),
        "attention: qkv is [{r}, {c3}], expected [b*t, 3c] with b = {b} and c a multiple of {nh} heads"
    );
    Tensor::from_dispatch(<Dispatch as AttentionOps>::det_attention(
        qkv.into_dispatch(),
        b,
        nh,
        scale,
        fused,
    ))
}

/// The shape of one problem: `b` sequences, `t` tokens, `nh` heads of `hd` values.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub nh: usize,
    pub hd: usize,
}

impl Dims {
    /// From `qkv`'s shape `[b*t, 3c]`.
    pub fn of(rows: usize, cols: usize, b: usize, nh: usize) -> Self {
        assert!(
            b > 0 && nh > 0 && rows.is_multiple_of(b) && cols.is_multiple_of(3 * nh),
            "attention: qkv is [{rows}, {cols}], expected [b*t, 3c] with b = {b}, c a multiple of {nh}"
        );
        Dims {
            b,
            t: rows / b,
            nh,
            hd: cols / (3 * nh),
        }
    }

    /// `c = nh * hd`.
    pub fn c(&self) -> usize {
        self.nh * self.hd
    }
}
