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

/// The table. Ops not listed have no cross-backend promise.
pub const TOLERANCES: &[ToleranceEntry] = &[
    ToleranceEntry {
        op: "matmul",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-5,
            rel: 1e-5,
        },
        why: "tiled GEMM orders differ; measured 2.7e-5 abs at |out|~10 and K=512",
    },
    ToleranceEntry {
        op: "conv2d",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-5,
            rel: 1e-5,
        },
        why: "im2col/direct orders differ; measured <= 1e-6",
    },
    ToleranceEntry {
        op: "sum_dim",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-5,
            rel: 1e-5,
        },
        why: "tree vs sequential order",
    },
    ToleranceEntry {
        op: "sum",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-4,
            rel: 1e-5,
        },
        why: "atomics on wgpu: order varies run to run",
    },
    ToleranceEntry {
        op: "mean",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-6,
            rel: 1e-5,
        },
        why: "reduction order differs",
    },
    ToleranceEntry {
        op: "exp",
        kernels: "burn",
        tolerance: Ulp { max: 64 },
        why: "WGSL exp measured <= 64 ULP on [-87, 88]",
    },
    ToleranceEntry {
        op: "log",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-6,
            rel: 1e-6,
        },
        why: "WGSL log up to 3004 ULP near 1, where the value is ~0 (absolute error tiny)",
    },
    ToleranceEntry {
        op: "tanh",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 2e-6,
            rel: 1e-6,
        },
        why: "WGSL tanh up to 16384 ULP near 0 (absolute error < 1e-6)",
    },
    ToleranceEntry {
        op: "sigmoid",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-6,
            rel: 1e-6,
        },
        why: "built from exp",
    },
    ToleranceEntry {
        op: "gelu",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-6,
            rel: 1e-5,
        },
        why: "erf approximation differs",
    },
    ToleranceEntry {
        op: "relu",
        kernels: "burn",
        tolerance: Bitwise,
        why: "a comparison and a select are exact",
    },
    ToleranceEntry {
        op: "add_bias",
        kernels: "burn",
        tolerance: Bitwise,
        why: "one IEEE add per element",
    },
    ToleranceEntry {
        op: "softmax",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-6,
            rel: 1e-5,
        },
        why: "exp + sum; measured <= 21 ULP",
    },
    ToleranceEntry {
        op: "log_softmax",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-5,
            rel: 1e-5,
        },
        why: "exp + log + sum",
    },
    ToleranceEntry {
        op: "cross_entropy",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-5,
            rel: 1e-5,
        },
        why: "log_softmax + mean",
    },
    ToleranceEntry {
        op: "max_pool2d",
        kernels: "burn",
        tolerance: Bitwise,
        why: "max is exact",
    },
    ToleranceEntry {
        op: "avg_pool2d",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-6,
            rel: 1e-6,
        },
        why: "sum order and division",
    },
    ToleranceEntry {
        op: "adam_update",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-7,
            rel: 1e-6,
        },
        why: "sqrt and division; elementwise",
    },
    ToleranceEntry {
        op: "sgd_update",
        kernels: "burn",
        tolerance: Bitwise,
        why: "mul and add per element",
    },
    ToleranceEntry {
        op: "training_trajectory",
        kernels: "burn",
        tolerance: AbsRel {
            abs: 1e-4,
            rel: 1e-3,
        },
        why: "per-step loss and final weights after short runs; op differences compound",
    },
    ToleranceEntry {
        op: "sum",
        kernels: "lockstep",
        tolerance: Bitwise,
        why: "fixed chunked order, same on every backend",
    },
    ToleranceEntry {
        op: "sum_dim",
        kernels: "lockstep",
        tolerance: Bitwise,
        why: "sequential order along the axis",
    },
    ToleranceEntry {
        op: "matmul",
        kernels: "lockstep",
        tolerance: Bitwise,
        why: "k-sequential accumulation, unfused multiply-add profile",
    },
];

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
