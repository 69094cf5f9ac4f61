//! The declared tolerance table: how closely two backends must agree, per op and kernel set.
//!
//! This file is the one reviewed place where "agree" is defined. Three kinds of bound:
//! - `Bitwise`: every output bit-identical (`to_bits()` equal; NaNs must match bit for bit).
//! - `Ulp(n)`: `|ord(a) - ord(b)| <= n` where `ord` maps an f32's bits to a monotone integer
//!   (sign-magnitude to two's complement), so +0 and -0 are 0 ULP apart.
//! - `AbsRel { abs, rel }`: `|a - b| <= abs + rel * |b|` (b = reference backend's value), the
//!   formula of `numpy.isclose`.
//!
//! Sources of the numbers: measurements of burn 0.22.1 ndarray vs wgpu on lavapipe (matmul
//! 256x512x384 max |Δ| 2.7e-5 with |values| ~ 10; exp <= 10 ULP on [-10, 10]; log <= 22 ULP;
//! tanh <= 1023 ULP near 0; softmax <= 21 ULP), rounded up with headroom for other shapes.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Tolerance {
    Bitwise,
    Ulp { max: u32 },
    AbsRel { abs: f64, rel: f64 },
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tolerance::Bitwise => write!(f, "bitwise"),
            Tolerance::Ulp { max } => write!(f, "<= {max} ULP"),
            Tolerance::AbsRel { abs, rel } => write!(f, "|d| <= {abs:e} + {rel:e}*|ref|"),
        }
    }
}

/// One row of the table.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ToleranceEntry {
    pub op: &'static str,
    /// "burn" (stock ops) or "lockstep" (our kernels).
    pub kernels: &'static str,
    pub tolerance: Tolerance,
    pub why: &'static str,
}

use Tolerance::*;

const fn row(
    op: &'static str,
    kernels: &'static str,
    tolerance: Tolerance,
    why: &'static str,
) -> ToleranceEntry {
    ToleranceEntry {
        op,
        kernels,
        tolerance,
        why,
    }
}

const fn absrel(abs: f64, rel: f64) -> Tolerance {
    AbsRel { abs, rel }
}

/// The table. Ops not listed have no cross-backend promise. Inputs are those of the conformance
/// suite (`lockstep conformance`): values in [-2, 2] (matmul, conv, reductions), [-10, 10]
/// (activations, exp), [0.01, 100] (log), logits in [-20, 20] (softmax family). Matmul-like
/// bounds follow `|Δ| <= K * 2^-23 * max|a| * max|b|` for K <= 1000, |a|,|b| <= 2, rounded up.
#[rustfmt::skip]
pub const TOLERANCES: &[ToleranceEntry] = &[
    // burn's stock ops, ndarray/flex vs wgpu: different kernels, different orders.
    row("matmul", "burn", absrel(5e-4, 1e-5), "tiled GEMMs sum k in different orders; measured 2.7e-5 at K=512"),
    row("matmul_a_bt", "burn", absrel(5e-4, 1e-5), "as matmul (dA = G·Bᵀ)"),
    row("matmul_at_b", "burn", absrel(5e-4, 1e-5), "as matmul (dB = Aᵀ·G)"),
    row("conv2d", "burn", absrel(1e-4, 1e-5), "direct vs im2col orders; measured <= 1e-6 at c_in*k*k = 72"),
    row("max_pool2d", "burn", Bitwise, "max is exact"),
    row("avg_pool2d", "burn", absrel(1e-6, 1e-6), "sum order of 4 values and the division"),
    row("add_bias", "burn", Bitwise, "one IEEE add per element"),
    row("bias_grad", "burn", absrel(1e-4, 1e-5), "sum over the batch (sum_dim 0); measured bitwise"),
    row("sum_dim", "burn", absrel(1e-2, 1e-5), "row sums in different orders; 1M-element rows differ by 3e-3 (flex vs ndarray)"),
    row("sum", "burn", absrel(1e-2, 1e-5), "orders differ; 1M elements: 3e-3 measured (flex vs ndarray)"),
    row("mean", "burn", absrel(1e-8, 1e-5), "sum / n: the sum's bound divided by n = 1e6"),
    row("relu", "burn", Bitwise, "a comparison and a select"),
    row("relu_grad", "burn", Bitwise, "a mask times the incoming gradient"),
    row("tanh_grad", "burn", absrel(2e-6, 1e-5), "1 - tanh² from the forward's tanh"),
    row("sigmoid_grad", "burn", absrel(1e-6, 1e-5), "s(1 - s) from the forward's sigmoid"),
    row("gelu_grad", "burn", absrel(1e-3, 1e-3), "flex's gelu backward differs from ndarray's by up to 8.5e-4 (measured); wgpu flushes values < 2e-6 to 0"),
    row("cross_entropy_grad_burn", "burn", absrel(1e-6, 1e-5), "softmax - target, from exp and row sums"),
    row("exp", "burn", Ulp { max: 64 }, "WGSL exp measured <= 64 ULP on [-87, 88], <= 10 ULP on [-10, 10]"),
    row("log", "burn", absrel(1e-6, 1e-6), "WGSL log up to 3004 ULP near 1, where the value is ~0"),
    row("tanh", "burn", absrel(2e-6, 1e-6), "WGSL tanh up to 16384 ULP near 0 (absolute error < 1e-6)"),
    row("sigmoid", "burn", absrel(1e-6, 1e-6), "built from exp"),
    row("gelu", "burn", absrel(1e-6, 1e-5), "erf approximations differ"),
    row("softmax", "burn", absrel(1e-6, 1e-5), "exp + sum; measured <= 21 ULP"),
    row("log_softmax", "burn", absrel(1e-5, 1e-5), "exp + log + sum"),
    row("cross_entropy", "burn", absrel(1e-5, 1e-5), "log_softmax + row sums"),
    row("adam_update", "burn", absrel(1e-7, 1e-6), "element-wise; sqrt and / are exact where the profile says so"),
    row("sgd_update", "burn", Bitwise, "element-wise mul and add"),
    row("bmm", "burn", absrel(5e-4, 1e-5), "as matmul, per batch element; measured 7.6e-6 at 12x16x64x16"),
    row("bmm_grad", "burn", absrel(5e-4, 1e-5), "as matmul_a_bt / matmul_at_b, per batch element; measured 1.9e-6"),
    row("embedding", "burn", Bitwise, "select: a row copy"),
    row("embedding_grad", "burn", absrel(1e-5, 1e-6), "select's backward, a scatter-add in burn's order"),
    row("layer_norm", "burn", absrel(1e-5, 1e-5), "sum_dim means, hardware sqrt and /; measured 4.8e-7 at c = 768"),
    row("layer_norm_grad", "burn", absrel(1e-5, 1e-5), "burn's autodiff through sum_dim, sqrt and /; measured 2.4e-7 at c = 768"),
    row("causal_softmax", "burn", absrel(1e-6, 1e-5), "softmax of masked scores (as softmax); measured 1.2e-7"),
    row("causal_softmax_grad", "burn", absrel(1e-6, 1e-5), "softmax's backward through the mask; measured 2.2e-8"),
    row("attention", "burn", absrel(1e-5, 1e-4), "bmm + causal_softmax + bmm with stock orders"),
    row("attention_grad", "burn", absrel(1e-5, 1e-4), "their backward passes through burn's autodiff"),
    row("training_trajectory", "burn", absrel(1e-3, 1e-2), "per-step loss of a short run; op differences compound"),
    row("inference_logits", "burn", absrel(1e-4, 1e-4), "logits of a trained model on another backend or batch size (stock matmul orders)"),
    row("inference_logits_reduced_precision", "any", absrel(0.5, 0.1), "f16/bf16 weights (RNE): bf16 keeps 8 bits, logits move by up to ~0.2"),
    // lockstep's kernels: the same bits everywhere (kernels/ module docs give the orders).
    row("matmul", "lockstep", Bitwise, "k-sequential, products rounded"),
    row("matmul_a_bt", "lockstep", Bitwise, "k-sequential, products rounded"),
    row("matmul_at_b", "lockstep", Bitwise, "k-sequential, products rounded"),
    row("conv2d", "lockstep", Bitwise, "im2col gather kernel + lockstep matmul"),
    row("max_pool2d", "lockstep", Bitwise, "strict > in window order, ties to the first"),
    row("avg_pool2d", "lockstep", Bitwise, "window sum in order, times f32(1/k^2)"),
    row("sum_rows", "lockstep", Bitwise, "rows in order per column"),
    row("sum_all", "lockstep", Bitwise, "256-chunks in order, then partials in order"),
    row("exp", "lockstep", Bitwise, "exp_fixed: + - * floor and bit casts only"),
    row("log", "lockstep", Bitwise, "log_fixed: + - * and bit casts only"),
    row("sigmoid", "lockstep", Bitwise, "sigmoid_fixed: exp_fixed + Newton reciprocal"),
    row("tanh", "lockstep", Bitwise, "tanh_fixed = 2*sigmoid_fixed(2x) - 1"),
    row("gelu", "lockstep", Bitwise, "x * Phi(x), A&S erfc from exp_fixed and recip_fixed"),
    row("gelu_grad", "lockstep", Bitwise, "Phi(x) + x * phi(x), then one IEEE multiply by g"),
    row("sigmoid_grad", "lockstep", Bitwise, "s * (1 - s) * g, one IEEE op each, products flushed"),
    row("tanh_grad", "lockstep", Bitwise, "(1 - t*t) * g, one IEEE op each, products flushed"),
    row("adam_update", "lockstep", Bitwise, "fused kernel, + - * only: Newton sqrt_fixed and recip_fixed, flushed"),
    row("adam_update_vs_stock", "lockstep", absrel(1e-7, 1e-6), "lockstep's Newton sqrt/reciprocal (a few ULP) vs the stock update's hardware sqrt and /; m and v stay bitwise"),
    row("sgd_update", "lockstep", Bitwise, "fused kernel, products rounded"),
    row("softmax", "lockstep", Bitwise, "xent's row stats, Newton reciprocal"),
    row("log_softmax", "lockstep", Bitwise, "xent's row stats, log_fixed"),
    row("cross_entropy", "lockstep", Bitwise, "fused xent kernel, fixed per-row order"),
    row("cross_entropy_grad", "lockstep", Bitwise, "fused xent backward, Newton reciprocal"),
    row("dropout_mask", "lockstep", Bitwise, "ChaCha8 on device, integer arithmetic"),
    row("add_bias", "lockstep", Bitwise, "one flushed add per element"),
    row("mul", "lockstep", Bitwise, "one flushed multiply per element (dropout, element-wise backward passes)"),
    row("exp_grad", "lockstep", Bitwise, "exp's output times g, one flushed multiply"),
    row("log_grad", "lockstep", Bitwise, "g * recip_fixed(x), flushed (no hardware division)"),
    row("im2col", "lockstep", Bitwise, "a gather, values flushed as read"),
    row("col2im", "lockstep", Bitwise, "fixed-order gather of up to k*k entries, flushed sums"),
    row("max_pool2d_grad", "lockstep", Bitwise, "gather of g at the window's argmax (flushed compares)"),
    row("avg_pool2d_grad", "lockstep", Bitwise, "g * f32(1/k^2), flushed"),
    row("softmax_grad", "lockstep", Bitwise, "fixed-order dot per row, flushed"),
    row("log_softmax_grad", "lockstep", Bitwise, "fixed-order row sum, exp_fixed, flushed"),
    row("bmm", "lockstep", Bitwise, "matmul per batch element: k-sequential, products rounded"),
    row("bmm_grad", "lockstep", Bitwise, "dA = G·Bᵀ, dB = Aᵀ·G with bmm itself"),
    row("embedding", "lockstep", Bitwise, "row gather, +0 + x (a -0 comes out +0)"),
    row("embedding_grad", "lockstep", Bitwise, "segmented sum: each row's positions in order from +0"),
    row("layer_norm", "lockstep", Bitwise, "in-order row sums times f32(1/c), Newton rsqrt_fixed, flushed"),
    row("layer_norm_grad", "lockstep", Bitwise, "statistics recomputed from x, in-order means of dy and dy*y, flushed"),
    row("causal_softmax", "lockstep", Bitwise, "softmax's row stats over the unmasked prefix, Newton reciprocal; masked entries +0"),
    row("causal_softmax_grad", "lockstep", Bitwise, "fixed-order dot over the unmasked prefix, times scale, flushed"),
    row("attention", "lockstep", Bitwise, "bmm, causal_softmax and bmm per (sequence, head), their orders"),
    row("attention_grad", "lockstep", Bitwise, "their backward passes, the softmax recomputed; -0 comes out +0"),
    row("training_trajectory", "lockstep", Bitwise, "every op above is bitwise"),
];

/// Stock-op defects the suite is expected to find (it reports them instead of failing): burn's
/// own kernels that lockstep's training paths do not use. A defect that stops reproducing is
/// reported too, so the list can shrink when upstream fixes it.
pub struct KnownDefect {
    pub op: &'static str,
    pub kernels: &'static str,
    pub backend: &'static str,
    /// Substring of the case's shape label.
    pub shape: &'static str,
    pub what: &'static str,
}

pub const KNOWN_DEFECTS: &[KnownDefect] = &[
    KnownDefect {
        op: "sum_dim",
        kernels: "burn",
        backend: "wgpu",
        shape: "1x1000000",
        what: "on lavapipe, burn-wgpu 0.22.1 sum_dim over a 1M-element row returns a wrong value (-33.3 for -59.97): Mesa's llvmpipe stops a shader's loops after 65535 iterations in total (1M ones sum to 262128 = 65532 x 4 lanes); lockstep reduces only short rows (classes, batch) with stock sum_dim, and its own kernels split long loops into launches",
    },
    KnownDefect {
        op: "mean",
        kernels: "burn",
        backend: "wgpu",
        shape: "1x1000000",
        what: "on lavapipe, burn-wgpu 0.22.1 mean over 1M elements is wrong (the same 65535-iteration loop cap as sum_dim); not used by lockstep",
    },
    KnownDefect {
        op: "sum",
        kernels: "burn",
        backend: "wgpu",
        shape: "",
        what: "burn-wgpu 0.22.1 sum() uses float atomics: its last bits can change run to run; never used by lockstep",
    },
];

pub fn known_defect(
    op: &str,
    kernels: &str,
    backend: &str,
    shape: &str,
) -> Option<&'static KnownDefect> {
    KNOWN_DEFECTS.iter().find(|d| {
        d.op == op && d.kernels == kernels && d.backend == backend && shape.contains(d.shape)
    })
}

/// The declared tolerance for `op` under `kernels`, if there is one.
pub fn tolerance_for(op: &str, kernels: &str) -> Option<Tolerance> {
    TOLERANCES
        .iter()
        .find(|e| e.op == op && e.kernels == kernels)
        .map(|e| e.tolerance)
}

/// Monotone integer image of an f32 (adjacent floats differ by 1; +0 and -0 both map to 0).
pub fn ordered(x: f32) -> i64 {
    let b = x.to_bits() as i32;
    if b < 0 {
        -((b & 0x7fff_ffff) as i64)
    } else {
        b as i64
    }
}

/// ULP distance between two floats (`u64::MAX` when either is NaN and they are not the same NaN).
pub fn ulp_distance(a: f32, b: f32) -> u64 {
    if a.is_nan() || b.is_nan() {
        return if a.to_bits() == b.to_bits() {
            0
        } else {
            u64::MAX
        };
    }
    (ordered(a) - ordered(b)).unsigned_abs()
}

/// The result of comparing a backend's output to the reference backend's.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub len: usize,
    pub max_abs: f64,
    pub max_ulp: u64,
    pub mismatches: usize,
    /// First failing indices with (reference, got), at most 5.
    pub first: Vec<(usize, f32, f32)>,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.mismatches == 0
    }
}

/// Compare `got` to `reference` element-wise under `tol`.
pub fn compare(reference: &[f32], got: &[f32], tol: Tolerance) -> Comparison {
    let mut c = Comparison {
        len: reference.len(),
        max_abs: 0.0,
        max_ulp: 0,
        mismatches: 0,
        first: vec![],
    };
    if reference.len() != got.len() {
        c.mismatches = reference.len().max(got.len());
        return c;
    }
    for (i, (&r, &g)) in reference.iter().zip(got).enumerate() {
        let d = (r as f64 - g as f64).abs();
        let u = ulp_distance(r, g);
        if d.is_finite() {
            c.max_abs = c.max_abs.max(d);
        }
        c.max_ulp = c.max_ulp.max(u);
        let ok = match tol {
            Tolerance::Bitwise => r.to_bits() == g.to_bits(),
            Tolerance::Ulp { max } => u <= max as u64,
            Tolerance::AbsRel { abs, rel } => {
                (r.is_nan() && g.is_nan()) || r == g || d <= abs + rel * (r as f64).abs()
            }
        };
        if !ok {
            c.mismatches += 1;
            if c.first.len() < 5 {
                c.first.push((i, r, g));
            }
        }
    }
    c
}
