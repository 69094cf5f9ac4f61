//! The arithmetic both sides share: `mad_nc` (multiply, round, add, round) and the f32 helpers
//! `exp_fixed`, `log_fixed`, `recip_fixed`, built from `+ - *`, compares, `floor` and bit casts.
//!
//! CPU versions are plain Rust (`a * b + c` is never contracted by rustc). GPU versions are the
//! `#[cube]` functions in `gpu`, the same operations in the same order, every product passed
//! through `mad_nc` with the runtime `one`.
//!
//! - `exp_fixed(x)`: clamp x to [-87, 88]; `n = floor(x*log2e + 0.5)`; `r = n*(-ln2_hi) + x`;
//!   `r = n*ln2_lo + r`; Cephes degree-5 polynomial `p` in Horner form; `y = p*r² + r + 1`;
//!   result `y * 2^n` with `2^n` assembled from bits. Results stay normal. NaN passes through.
//! - `log_fixed(x)` for normal x > 0: `x = m * 2^e`, `m` in (√½, √2]; `f = m - 1`; Cephes logf
//!   degree-8 polynomial; `f + p*f*f² - f²/2 + e*ln2` with ln2 split hi/lo. No division.
//! - `gelu_fixed(x) = x * Phi(x)`, `gelu_grad_fixed(x) = Phi(x) + x * phi(x)` (exact, erf-based
//!   GELU as burn's `gelu`): with `z = min(|x|, 10) * (1/sqrt2)`, `t = recip_fixed(p*z + 1)`, the
//!   Abramowitz-Stegun 7.1.26 polynomial `q = t*(a1 + t*(a2 + ... a5))` times `e = exp_fixed(-z*z)`
//!   approximates `erfc(z)` (|error| <= 1.5e-7); `Phi = x < 0 ? q/2 : 1 - q/2` (no cancellation in
//!   the left tail), `phi = e * (1/sqrt(2 pi))`.
//! - `recip_fixed(d)` for d in [1, 2^60]: `y0` from the bit trick `0x7ef311c3 - bits(d)`, then
//!   four Newton steps `y = y * (2 - d*y)`. Not correctly rounded (a few ULP), but the same bits
//!   everywhere.

pub const EXP_LO: f32 = -87.0;
pub const EXP_HI: f32 = 88.0;
pub const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b);
pub const NEG_LN2_HI: f32 = f32::from_bits(0xbf31_8000); // -0.693359375, exact
pub const LN2_LO: f32 = f32::from_bits(0x395e_8083); // 2.12194440e-4
pub const LN2_HI: f32 = f32::from_bits(0x3f31_8000); // 0.693359375
pub const NEG_LN2_LO: f32 = f32::from_bits(0xb95e_8083);
pub const EP0: f32 = f32::from_bits(0x3950_6967);
pub const EP1: f32 = f32::from_bits(0x3ab7_43ce);
pub const EP2: f32 = f32::from_bits(0x3c08_8908);
pub const EP3: f32 = f32::from_bits(0x3d2a_a9c1);
pub const EP4: f32 = f32::from_bits(0x3e2a_aaaa);
pub const EP5: f32 = 0.5;
/// Cephes logf polynomial (highest power first).
// Cephes logf coefficients as published (rounded to f32 by the compiler).
#[allow(clippy::excessive_precision)]
pub const LP0: f32 = 7.037_683_6e-2;
pub const LP1: f32 = -1.151_461_1e-1;
pub const LP2: f32 = 1.167_699_9e-1;
pub const LP3: f32 = -1.242_014_1e-1;
pub const LP4: f32 = 1.424_932_3e-1;
pub const LP5: f32 = -1.666_805_8e-1;
pub const LP6: f32 = 2.000_071_4e-1;
pub const LP7: f32 = -2.499_999_4e-1;
#[allow(clippy::excessive_precision)]
pub const LP8: f32 = 3.333_333_1e-1;
pub const SQRT_HALF_X2: f32 = f32::from_bits(0x3fb5_04f3); // sqrt(2)

pub fn exp_fixed(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let xc = if x < EXP_LO { EXP_LO } else { x };
    let xc = if xc > EXP_HI { EXP_HI } else { xc };
    let n = (xc * LOG2E + 0.5).floor();
    let r = n * NEG_LN2_HI + xc;
    let r = n * LN2_LO + r;
    let z = r * r;
    let mut p = EP0 * r + EP1;
    p = p * r + EP2;
    p = p * r + EP3;
    p = p * r + EP4;
    p = p * r + EP5;
    let y = (p * z + r) + 1.0;
    let two_n = f32::from_bits(((n + 127.0) as u32) << 23);
    y * two_n
}

pub fn log_fixed(x: f32) -> f32 {
    let bits = x.to_bits();
    let e = ((bits >> 23) as f32) - 127.0;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > SQRT_HALF_X2;
    let m = if big { m * 0.5 } else { m };
    let e = if big { e + 1.0 } else { e };
    let f = m - 1.0;
    let z = f * f;
    let mut p = LP0 * f + LP1;
    for c in [LP2, LP3, LP4, LP5, LP6, LP7, LP8] {
        p = p * f + c;
    }
    let y = p * f;
    let y = y * z;
    let y = e * NEG_LN2_LO + y;
    let y = -0.5 * z + y;
    let r = f + y;
    e * LN2_HI + r
}

/// `sigmoid(x) = recip_fixed(1 + exp_fixed(-x))`, x clamped to [-40, 40] (so the reciprocal's
/// argument stays in [1, 2^60]).
pub fn sigmoid_fixed(x: f32) -> f32 {
    let xc = if x < -40.0 { -40.0 } else { x };
    let xc = if xc > 40.0 { 40.0 } else { xc };
    recip_fixed(1.0 + exp_fixed(-xc))
}

/// `tanh(x) = 2 * sigmoid(2x) - 1` (absolute error ~1e-7 near 0, where tanh is ~x).
pub fn tanh_fixed(x: f32) -> f32 {
    2.0 * sigmoid_fixed(2.0 * x) - 1.0
}

pub const INV_SQRT2: f32 = std::f32::consts::FRAC_1_SQRT_2;
pub const INV_SQRT_2PI: f32 = 0.398_942_3;
// Abramowitz & Stegun 7.1.26 as published (rounded to f32 by the compiler).
#[allow(clippy::excessive_precision)]
pub const ERF_P: f32 = 0.327_591_1;
#[allow(clippy::excessive_precision)]
pub const ERF_A1: f32 = 0.254_829_592;
#[allow(clippy::excessive_precision)]
pub const ERF_A2: f32 = -0.284_496_736;
#[allow(clippy::excessive_precision)]
pub const ERF_A3: f32 = 1.421_413_741;
#[allow(clippy::excessive_precision)]
pub const ERF_A4: f32 = -1.453_152_027;
#[allow(clippy::excessive_precision)]
pub const ERF_A5: f32 = 1.061_405_429;

/// `(q, e)`: `q ~ erfc(|x|/sqrt2)` and `e = exp(-x^2/2)` (module doc).
#[allow(clippy::assign_op_pattern)] // written out to mirror the GPU twin op for op
fn gauss_tail(x: f32) -> (f32, f32) {
    let ax = if x < 0.0 { -x } else { x };
    let ax = if ax > 10.0 { 10.0 } else { ax };
    let z = ax * INV_SQRT2;
    let t = recip_fixed(ERF_P * z + 1.0);
    let mut p = ERF_A5;
    p = p * t + ERF_A4;
    p = p * t + ERF_A3;
    p = p * t + ERF_A2;
    p = p * t + ERF_A1;
    p = p * t;
    let e = exp_fixed(-(z * z));
    (p * e, e)
}

/// The standard normal CDF from `gauss_tail`'s `q`.
fn phi_cdf(x: f32, q: f32) -> f32 {
    let h = 0.5 * q;
    if x < 0.0 { h } else { 1.0 - h }
}

/// `x * Phi(x)` (module doc).
pub fn gelu_fixed(x: f32) -> f32 {
    let (q, _) = gauss_tail(x);
    x * phi_cdf(x, q)
}

/// `d gelu / dx = Phi(x) + x * phi(x)` (module doc).
pub fn gelu_grad_fixed(x: f32) -> f32 {
    let (q, e) = gauss_tail(x);
    x * (e * INV_SQRT_2PI) + phi_cdf(x, q)
}

#[allow(clippy::assign_op_pattern)] // written out to mirror the GPU twin op for op
pub fn recip_fixed(d: f32) -> f32 {
    let mut y = f32::from_bits(0x7ef3_11c3u32.wrapping_sub(d.to_bits()));
    for _ in 0..4 {
        let t = (-d) * y + 2.0;
        y = y * t;
    }
    y
}

/// The element-wise ops with a CPU function and one GPU kernel (`gpu::unary_kernel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Exp = 0,
    Log = 1,
    Sigmoid = 2,
    Tanh = 3,
    Gelu = 4,
    /// The derivative of `Gelu` (its backward multiplies this by the incoming gradient).
    GeluGrad = 5,
}

impl Unary {
    /// The CPU version of the op.
    pub fn cpu(self) -> fn(f32) -> f32 {
        match self {
            Unary::Exp => exp_fixed,
            Unary::Log => log_fixed,
            Unary::Sigmoid => sigmoid_fixed,
            Unary::Tanh => tanh_fixed,
            Unary::Gelu => gelu_fixed,
            Unary::GeluGrad => gelu_grad_fixed,
        }
    }
}

/// The `#[cube]` twins. Kept free of burn imports (cubecl's prelude has its own `Tensor`).
pub mod gpu {
    use super::{
        EP0, EP1, EP2, EP3, EP4, EP5, EXP_HI, EXP_LO, LN2_HI, LN2_LO, LOG2E, LP0, LP1, LP2, LP3,
        LP4, LP5, LP6, LP7, LP8,
    };
    use super::{
        ERF_A1, ERF_A2, ERF_A3, ERF_A4, ERF_A5, ERF_P, INV_SQRT_2PI, INV_SQRT2, NEG_LN2_HI,
        NEG_LN2_LO, SQRT_HALF_X2,
    };
    use cubecl::prelude::*;

    /// The most loop iterations one kernel launch runs per thread over data-sized loops.
    /// Mesa's llvmpipe/lavapipe ends a shader invocation's loops after 65535 iterations *in
    /// total* (a hang guard in its code generator; measured: a 65536-row column sum returned the
    /// sum of the first 65535 rows, with no error; nesting the loop does not help, the counter is
    /// shared). So matmul and the row sums run one launch per block of `LOOP_BLOCK` steps, in
    /// order, the accumulator carried between launches as the same f32 (see their hosts in `ops`).
    /// The per-row kernels (`xent`, `softmax`) loop about 3c times per row: rows of up to 21845
    /// classes on lavapipe (no such limit on other drivers).
    pub const LOOP_BLOCK: usize = 32768;

    /// An optimisation barrier: `x` passed through an integer xor with a value the compiler
    /// cannot know (`bits(one) ^ bits(1.0)`, i.e. 0 at run time). Nothing before it can be fused,
    /// reassociated or contracted with anything after it — in CubeCL, in naga, in the driver's
    /// own compiler (Mesa's NIR treats undecorated SPIR-V float ops as inexact and may reassociate
    /// them; measured: without barriers lavapipe's exp differed from the CPU by up to 6 ULP).
    #[cube]
    pub fn nc(x: f32, one: f32) -> f32 {
        let zero = one.to_bits() ^ 0x3f80_0000u32;
        f32::from_bits(x.to_bits() ^ zero)
    }

    /// `round(round(a * b) + c)` whatever the compilers or the driver do with fma (crate doc).
    #[cube]
    pub fn mad_nc(a: f32, b: f32, c: f32, one: f32) -> f32 {
        let p = nc(a * b, one);
        nc(p + c, one)
    }

    #[cube]
    pub fn exp_fixed(x: f32, one: f32) -> f32 {
        let nan = x.is_nan();
        let xc = select(x < EXP_LO, EXP_LO, x);
        let xc = select(xc > EXP_HI, EXP_HI, xc);
        let n = f32::floor(mad_nc(xc, LOG2E, 0.5f32, one));
        let r = mad_nc(n, NEG_LN2_HI, xc, one);
        let r = mad_nc(n, LN2_LO, r, one);
        let z = nc(r * r, one);
        let p = mad_nc(EP0, r, EP1, one);
        let p = mad_nc(p, r, EP2, one);
        let p = mad_nc(p, r, EP3, one);
        let p = mad_nc(p, r, EP4, one);
        let p = mad_nc(p, r, EP5, one);
        let y = nc(mad_nc(p, z, r, one) + 1.0f32, one);
        let two_n = f32::from_bits(u32::cast_from(n + 127.0f32) << 23u32);
        let res = nc(y * two_n, one);
        select(nan, x, res)
    }

    #[cube]
    pub fn log_fixed(x: f32, one: f32) -> f32 {
        let bits = x.to_bits();
        let e = f32::cast_from(bits >> 23u32) - 127.0f32;
        let m = f32::from_bits((bits & 0x007f_ffffu32) | 0x3f80_0000u32);
        let big = m > SQRT_HALF_X2;
        let m = select(big, m * 0.5f32, m);
        let e = select(big, e + 1.0f32, e);
        let f = nc(m - 1.0f32, one);
        let z = nc(f * f, one);
        let p = mad_nc(LP0, f, LP1, one);
        let p = mad_nc(p, f, LP2, one);
        let p = mad_nc(p, f, LP3, one);
        let p = mad_nc(p, f, LP4, one);
        let p = mad_nc(p, f, LP5, one);
        let p = mad_nc(p, f, LP6, one);
        let p = mad_nc(p, f, LP7, one);
        let p = mad_nc(p, f, LP8, one);
        let y = nc(p * f, one);
        let y = nc(y * z, one);
        let y = mad_nc(e, NEG_LN2_LO, y, one);
        let y = mad_nc(-0.5f32, z, y, one);
        let r = nc(f + y, one);
        mad_nc(e, LN2_HI, r, one)
    }

    #[cube]
    pub fn sigmoid_fixed(x: f32, one: f32) -> f32 {
        let xc = select(x < -40.0f32, -40.0f32, x);
        let xc = select(xc > 40.0f32, 40.0f32, xc);
        let e = exp_fixed(-xc, one);
        recip_fixed(nc(1.0f32 + e, one), one)
    }

    #[cube]
    pub fn tanh_fixed(x: f32, one: f32) -> f32 {
        let s = sigmoid_fixed(nc(2.0f32 * x, one), one);
        nc(nc(2.0f32 * s, one) - 1.0f32, one)
    }

    /// `(q, e)` of the CPU `gauss_tail`, the same operations in the same order.
    #[cube]
    fn gauss_tail(x: f32, one: f32) -> (f32, f32) {
        let ax = select(x < 0.0f32, -x, x);
        let ax = select(ax > 10.0f32, 10.0f32, ax);
        let z = nc(ax * INV_SQRT2, one);
        let t = recip_fixed(mad_nc(ERF_P, z, 1.0f32, one), one);
        let p = mad_nc(ERF_A5, t, ERF_A4, one);
        let p = mad_nc(p, t, ERF_A3, one);
        let p = mad_nc(p, t, ERF_A2, one);
        let p = mad_nc(p, t, ERF_A1, one);
        let p = nc(p * t, one);
        let e = exp_fixed(-nc(z * z, one), one);
        (nc(p * e, one), e)
    }

    #[cube]
    fn phi_cdf(x: f32, q: f32, one: f32) -> f32 {
        let h = nc(0.5f32 * q, one);
        select(x < 0.0f32, h, nc(1.0f32 - h, one))
    }

    #[cube]
    pub fn gelu_fixed(x: f32, one: f32) -> f32 {
        let (q, _e) = gauss_tail(x, one);
        nc(x * phi_cdf(x, q, one), one)
    }

    #[cube]
    pub fn gelu_grad_fixed(x: f32, one: f32) -> f32 {
        let (q, e) = gauss_tail(x, one);
        mad_nc(x, nc(e * INV_SQRT_2PI, one), phi_cdf(x, q, one), one)
    }

    /// Element-wise `Unary` op `kind` (0 exp, 1 log, 2 sigmoid, 3 tanh, 4 gelu, 5 gelu'; see
    /// `super::Unary`).
    #[cube(launch)]
    pub fn unary_kernel(x: &Tensor<f32>, out: &mut Tensor<f32>, one: f32, #[comptime] kind: u32) {
        let pos = ABSOLUTE_POS;
        if pos >= out.len() {
            terminate!();
        }
        if kind == 0 {
            out[pos] = exp_fixed(x[pos], one);
        } else if kind == 1 {
            out[pos] = log_fixed(x[pos], one);
        } else if kind == 2 {
            out[pos] = sigmoid_fixed(x[pos], one);
        } else if kind == 3 {
            out[pos] = tanh_fixed(x[pos], one);
        } else if kind == 4 {
            out[pos] = gelu_fixed(x[pos], one);
        } else {
            out[pos] = gelu_grad_fixed(x[pos], one);
        }
    }

    /// `a * b + c` written plainly: the arithmetic-profile probe (CubeCL emits `fma` here).
    #[cube(launch)]
    pub fn mad_plain_kernel(
        a: &Tensor<f32>,
        b: &Tensor<f32>,
        c: &Tensor<f32>,
        out: &mut Tensor<f32>,
    ) {
        let pos = ABSOLUTE_POS;
        if pos >= out.len() {
            terminate!();
        }
        out[pos] = a[pos] * b[pos] + c[pos];
    }

    #[cube]
    pub fn recip_fixed(d: f32, one: f32) -> f32 {
        let mut y = f32::from_bits(0x7ef3_11c3u32 - d.to_bits());
        for _ in 0..4u32 {
            let t = mad_nc(-d, y, 2.0f32, one);
            y = nc(y * t, one);
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_fixed_is_close_to_std() {
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let (a, b) = (exp_fixed(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-7, "x = {x}: {a} vs {b}");
        }
    }

    #[test]
    fn log_fixed_is_close_to_std() {
        let mut x = 1e-30f32;
        while x < 1e30 {
            let (a, b) = (log_fixed(x), x.ln());
            assert!(
                (a - b).abs() <= 2e-7 * b.abs().max(1.0),
                "x = {x}: {a} vs {b}"
            );
            x *= 1.013;
        }
        assert_eq!(log_fixed(1.0), 0.0);
    }

    #[test]
    fn gelu_fixed_is_close_to_the_erf_definition() {
        // erf from f64 via a high-accuracy series/continued fraction is not in std; use the
        // identity Phi(x) = erfc(-x/sqrt2)/2 with a 30-term Taylor series for |x| <= 3 and the
        // asymptotic tail beyond, both in f64.
        fn phi(x: f64) -> f64 {
            let z = x / std::f64::consts::SQRT_2;
            let erf = if z.abs() <= 3.0 {
                let (mut term, mut sum) = (z, z);
                for n in 1..80 {
                    term *= -z * z / n as f64;
                    sum += term / (2 * n + 1) as f64;
                }
                sum * 2.0 / std::f64::consts::PI.sqrt()
            } else {
                let a = z.abs();
                let tail = (-a * a).exp() / (a * std::f64::consts::PI.sqrt())
                    * (1.0 - 1.0 / (2.0 * a * a) + 3.0 / (4.0 * a.powi(4)));
                (1.0 - tail).copysign(z)
            };
            0.5 * (1.0 + erf)
        }
        for i in -1200..=1200 {
            let x = i as f32 * 0.01;
            let xd = x as f64;
            let want = xd * phi(xd);
            let dwant = phi(xd) + xd * (-xd * xd / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!(
                (gelu_fixed(x) as f64 - want).abs() <= 4e-7 * (1.0 + xd.abs()),
                "gelu({x})"
            );
            assert!(
                (gelu_grad_fixed(x) as f64 - dwant).abs() <= 1e-6,
                "gelu'({x})"
            );
        }
        assert!(gelu_fixed(f32::NAN).is_nan());
    }

    #[test]
    fn recip_fixed_is_close_to_division() {
        let mut d = 1.0f32;
        while d < 1e12 {
            let (a, b) = (recip_fixed(d), 1.0 / d);
            assert!(((a - b) / b).abs() < 3e-7, "d = {d}: {a} vs {b}");
            d *= 1.0007;
        }
    }
}
