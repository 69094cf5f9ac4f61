//! `causal`: attention's masked softmax. `x` is `[r, t]` with `r` a multiple of `t`: its rows
//! are (batch * head, query) flattened, the query position of row `i` is `q = i % t`, and only
//! the columns `j <= q` take part (a causal mask). Forward and backward, from `arith`'s exact
//! pieces and `softmax`'s row statistics order.
//!
//! Per row, in this order on both sides (`z[j] = x[j] * scale` recomputed where it is used, the
//! same bits each time):
//!
//! ```text
//! mx = z[0]; for j in 1..=q: if z[j] > mx { mx = z[j] }
//! s  = 0;    for j in 0..=q: s = s + exp_fixed(z[j] - mx)
//! r  = recip_fixed(s)
//! y[j] = exp_fixed(z[j] - mx) * r   for j <= q;   y[j] = +0.0   for j > q   (masked)
//! ```
//!
//! Backward, from the forward's output `y` and the incoming `dy` (no `x` needed):
//!
//! ```text
//! dot = 0; for j in 0..=q: dot = mad(dy[j], y[j], dot)
//! dx[j] = scale * (y[j] * (dy[j] - dot))   for j <= q;   dx[j] = +0.0   for j > q
//! ```
//!
//! (`y = softmax(scale * x)`, so `dx` is `scale` times softmax's gradient; the three roundings
//! go difference, then product with `y`, then product with `scale`.) `mad(a, b, c)` =
//! fl(fl(a*b) + c); every read (`x`, `y`, `dy`, `scale`), product, sum and difference is
//! flushed (`fl`, `arith`'s subnormal rule) on both sides; no entry with `j > q` is read.
//! CPU: threads over rows; GPU: one thread per row. The autodiff (`backward.rs`) keeps `y` and
//! runs the backward above.

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `causal_softmax` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs`
/// for autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait CausalOps: Backend {
    /// The causal softmax of `x * scale` over each row of `[r, t]` (query `i % t`).
    fn det_causal_softmax(x: FloatTensor<Self>, scale: f32) -> FloatTensor<Self>;
    /// The gradient of `det_causal_softmax` from its output `y` and the incoming `dy`.
    fn det_causal_softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;
}

/// Causal softmax of attention scores: `x` `[r, t]`, `r` a multiple of `t`; row `i` is query
/// `q = i % t`, its output the softmax of `x[j] * scale` over `j <= q` and exactly `+0.0` for
/// `j > q`.
///
/// # Panics
///
/// When `x` is not `[r, t]` with `r` a multiple of `t`.
pub fn causal_softmax(x: Tensor<2>, t: usize, scale: f32) -> Tensor<2> {
    let [r, c] = x.dims();
    assert!(
        c == t && (t == 0 || r % t == 0),
        "causal_softmax: x is [{r}, {c}], expected [r, {t}] with r a multiple of {t}"
    );
    Tensor::from_dispatch(<Dispatch as CausalOps>::det_causal_softmax(
        x.into_dispatch(),
        scale,
    ))
}
