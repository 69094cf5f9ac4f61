//! The arithmetic both sides share, and the contract every lockstep kernel keeps.
//!
//! # What a device is assumed to give
//!
//! IEEE-754 binary32 `+ - *` rounded to nearest-even, comparisons, `floor` of a normal value,
//! small int <-> float conversions and bit casts. Nothing else: no hardware `/`, `sqrt`,
//! `inverseSqrt` or transcendental (WGSL and real drivers give those only ULP bounds — NVIDIA's
//! Vulkan `sqrt` and `/` were measured 1 ULP off), no gradual underflow (many GPUs flush f32
//! subnormal results to zero and read subnormal inputs as zero), and no particular fusion of
//! `a * b + c` (GPU barriers `pin`, below, keep every product rounded on its own).
//!
//! # Subnormals: flushed in software, the same on every device
//!
//! Every value a lockstep kernel reads, every rounded intermediate and every value it writes
//! passes through `flush`: `|x| <= f32::MIN_POSITIVE` becomes a zero of the same sign (NaN and
//! ±Inf pass unchanged). `MIN_POSITIVE` itself is flushed too; that one extra value is what
//! makes the rule device-independent:
//!
//! - inputs are never subnormal (flushed on read), so whether a device treats subnormal inputs
//!   as zero (DAZ) never matters;
//! - a sum or difference of two such values is exact whenever its magnitude is below
//!   `MIN_POSITIVE` (both are multiples of 2^-149), so a gradual-underflow device returns that
//!   exact tiny value and an FTZ device returns a signed zero: both flush to the same zero; an
//!   exact result of exactly `MIN_POSITIVE` is kept by both and flushed by the rule;
//! - a product (or fused multiply-add) whose exact value `e` has `|e| <= MIN_POSITIVE` rounds,
//!   under gradual underflow, to something in `[0, MIN_POSITIVE]`, and an FTZ device returns 0
//!   or — when it detects tininess after rounding and `e` rounds up — `MIN_POSITIVE`: all flush
//!   to the zero with the sign of `e`. When `|e| > MIN_POSITIVE` no device calls the result tiny
//!   and all round it the same way (possibly to `MIN_POSITIVE`, again flushed by all).
//!
//! So `flush(hw(a op b))` is the same on every device, FTZ or not, and a kernel built from it is
//! too. CPU kernels call `add`/`sub`/`mul`/`mad` below; GPU kernels pass each rounded value
//! through `gpu::pin`, which flushes and is also the fusion barrier. `LOCKSTEP_CPU_FTZ=1` (see
//! `ftz`) turns on the CPU's own FTZ/DAZ bits so the CPU stands in for an FTZ GPU in tests.
//!
//! # The helpers
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
//! - `recip_fixed(d)`: `d` clamped to [2^-125, 2^125] (NaN passes), `y0` from the bit trick
//!   `0x7ef311c3 - bits(d)`, then four Newton steps `t = -d*y + 2; y = y * t`. Not correctly
//!   rounded (a few ULP), but the same bits everywhere. In that domain `y0` is normal and every
//!   step keeps `d*y` and `t` within [0.8, 1.2] and `y` within 20% of `1/d`, so no intermediate
//!   is ever subnormal or `MIN_POSITIVE`: the steps skip the flushes (the GPU keeps its `pin`s,
//!   which then only act as fusion barriers).
//! - `rsqrt_fixed(a)` for a >= 0 (flushed; NaN for a < 0): `y0 = bits 0x5f3759df - (bits(a) >>
//!   1)`, then three Newton steps `h = (a*y)*0.5; t = -h*y + 1.5; y = y * t` (the seed is within
//!   3.5%, so the relative error goes 3.5e-2, 1.8e-3, 4.6e-6, 3e-11); `sqrt_fixed(a) = a *
//!   rsqrt_fixed(a)` (0 for a = 0). Within 2 ULP of the correctly rounded values (tested over
//!   [2^-125, 2^125]). For every a >= 0 `y0` is normal (at most 2^63.5, at least 2^-64.5), `y`
//!   stays near `1/sqrt(a)`, `a*y` near `sqrt(a)` (>= 2^-63), `h*y` near 1/2 and `t` near 1 (a = 0:
//!   `t = 1.5`, `y` grows to ~7e19): nothing subnormal, so the steps skip the flushes too.
//!
//! Every product and sum in them is one of `add`/`sub`/`mul`/`mad` (CPU) or passes `pin` (GPU):
//! the same operations in the same order on both sides.

/// `|x| <= MIN_POSITIVE` -> zero with x's sign; anything else (NaN, ±Inf included) unchanged.
/// Integer operations only, so a device's own subnormal handling cannot touch it.
#[inline(always)]
pub fn flush(x: f32) -> f32 {
    // Branch-free (so loops over it vectorise): keep all bits, or only the sign bit.
    let b = x.to_bits();
    let keep = 0u32.wrapping_sub(u32::from(b & 0x7fff_ffff > MIN_POSITIVE_BITS));
    f32::from_bits(b & (keep | 0x8000_0000))
}

/// The bits of `f32::MIN_POSITIVE` (the largest magnitude `flush` sends to zero).
pub const MIN_POSITIVE_BITS: u32 = 0x0080_0000;

/// `flush(a + b)`.
#[inline(always)]
pub fn add(a: f32, b: f32) -> f32 {
    flush(a + b)
}

/// `flush(a - b)`.
#[inline(always)]
pub fn sub(a: f32, b: f32) -> f32 {
    flush(a - b)
}

/// `flush(a * b)`.
#[inline(always)]
pub fn mul(a: f32, b: f32) -> f32 {
    flush(a * b)
}

/// `flush(flush(a * b) + c)`: two roundings, both flushed.
#[inline(always)]
pub fn mad(a: f32, b: f32, c: f32) -> f32 {
    add(mul(a, b), c)
}

/// `flush` over a slice, as a new vector (host-side entry points: uploads, loaded files).
pub fn flush_all(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| flush(x)).collect()
}

/// Whether `flush` changes `x`: a subnormal or `±MIN_POSITIVE` (`0 < |bits| <= MIN_POSITIVE_BITS`).
#[inline(always)]
pub fn changed_by_flush(x: f32) -> bool {
    (x.to_bits() & 0x7fff_ffff).wrapping_sub(1) < MIN_POSITIVE_BITS
}

/// Whether `flush` would change any element. No early exit, so the scan vectorises.
pub fn needs_flush(v: &[f32]) -> bool {
    v.iter().fold(false, |acc, &x| acc | changed_by_flush(x))
}

/// `v` as a kernel reads it: itself when `dirty` is false (the caller's scan found nothing for
/// `flush` to change), a flushed copy otherwise.
pub fn flushed_if(dirty: bool, v: &[f32]) -> std::borrow::Cow<'_, [f32]> {
    if dirty {
        std::borrow::Cow::Owned(flush_all(v))
    } else {
        std::borrow::Cow::Borrowed(v)
    }
}

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

/// `2^n` for an integer-valued `n` in [-126, 127]: `2^23 + 127 + n` is an exact sum whose low
/// mantissa bits hold `n + 127`, shifted into the exponent field. Only `+` and bit operations
/// (they vectorise; `(n + 127.0) as u32` does not on AVX2), the same value.
#[inline(always)]
pub fn pow2i(n: f32) -> f32 {
    f32::from_bits((n + 8_388_735.0).to_bits() << 23)
}

#[inline(always)]
pub fn exp_fixed(x: f32) -> f32 {
    let x = flush(x);
    // NaN passes through unchanged (selected at the end, so the loop stays branch-free).
    let xc = if x < EXP_LO { EXP_LO } else { x };
    let xc = if xc > EXP_HI { EXP_HI } else { xc };
    let n = add(mul(xc, LOG2E), 0.5).floor();
    let r = mad(n, NEG_LN2_HI, xc);
    let r = mad(n, LN2_LO, r);
    let z = mul(r, r);
    let mut p = mad(EP0, r, EP1);
    p = mad(p, r, EP2);
    p = mad(p, r, EP3);
    p = mad(p, r, EP4);
    p = mad(p, r, EP5);
    let y = add(mad(p, z, r), 1.0);
    let two_n = pow2i(n);
    if x.is_nan() { x } else { mul(y, two_n) }
}

#[inline(always)]
pub fn log_fixed(x: f32) -> f32 {
    let bits = flush(x).to_bits();
    let e = ((bits >> 23) as f32) - 127.0;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > SQRT_HALF_X2;
    let m = if big { m * 0.5 } else { m };
    let e = if big { e + 1.0 } else { e };
    let f = sub(m, 1.0);
    let z = mul(f, f);
    let mut p = mad(LP0, f, LP1);
    for c in [LP2, LP3, LP4, LP5, LP6, LP7, LP8] {
        p = mad(p, f, c);
    }
    let y = mul(p, f);
    let y = mul(y, z);
    let y = mad(e, NEG_LN2_LO, y);
    let y = mad(-0.5, z, y);
    let r = add(f, y);
    mad(e, LN2_HI, r)
}

/// `sigmoid(x) = recip_fixed(1 + exp_fixed(-x))`, x clamped to [-40, 40] (so the reciprocal's
/// argument stays in [1, 2^60]).
#[inline(always)]
pub fn sigmoid_fixed(x: f32) -> f32 {
    let x = flush(x);
    let xc = if x < -40.0 { -40.0 } else { x };
    let xc = if xc > 40.0 { 40.0 } else { xc };
    recip_fixed(add(1.0, exp_fixed(-xc)))
}

/// `tanh(x) = 2 * sigmoid(2x) - 1` (absolute error ~1e-7 near 0, where tanh is ~x).
#[inline(always)]
pub fn tanh_fixed(x: f32) -> f32 {
    sub(mul(2.0, sigmoid_fixed(mul(2.0, flush(x)))), 1.0)
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

/// `(q, e)`: `q ~ erfc(|x|/sqrt2)` and `e = exp(-x^2/2)` (module doc). `x` is flushed.
#[inline(always)]
fn gauss_tail(x: f32) -> (f32, f32) {
    let ax = if x < 0.0 { -x } else { x };
    let ax = if ax > 10.0 { 10.0 } else { ax };
    let z = mul(ax, INV_SQRT2);
    let t = recip_fixed(mad(ERF_P, z, 1.0));
    let mut p = ERF_A5;
    p = mad(p, t, ERF_A4);
    p = mad(p, t, ERF_A3);
    p = mad(p, t, ERF_A2);
    p = mad(p, t, ERF_A1);
    p = mul(p, t);
    let e = exp_fixed(-mul(z, z));
    (mul(p, e), e)
}

/// The standard normal CDF from `gauss_tail`'s `q`.
#[inline(always)]
fn phi_cdf(x: f32, q: f32) -> f32 {
    let h = mul(0.5, q);
    if x < 0.0 { h } else { sub(1.0, h) }
}

/// `x * Phi(x)` (module doc).
#[inline(always)]
pub fn gelu_fixed(x: f32) -> f32 {
    let x = flush(x);
    let (q, _) = gauss_tail(x);
    mul(x, phi_cdf(x, q))
}

/// `d gelu / dx = Phi(x) + x * phi(x)` (module doc).
#[inline(always)]
pub fn gelu_grad_fixed(x: f32) -> f32 {
    let x = flush(x);
    let (q, e) = gauss_tail(x);
    mad(x, mul(e, INV_SQRT_2PI), phi_cdf(x, q))
}

/// The domain `recip_fixed` clamps its argument to.
pub const RECIP_LO: f32 = f32::from_bits(0x0100_0000); // 2^-125
pub const RECIP_HI: f32 = f32::from_bits(0x7e00_0000); // 2^125

/// `1 / d`, `d` clamped to `[2^-125, 2^125]` (module doc). Inside that domain no intermediate of
/// the Newton steps comes near the subnormal range, so they need no flush.
#[inline(always)]
#[allow(clippy::assign_op_pattern)] // written out to mirror the GPU twin op for op
pub fn recip_fixed(d: f32) -> f32 {
    let d = if d < RECIP_LO { RECIP_LO } else { d };
    let d = if d > RECIP_HI { RECIP_HI } else { d };
    let mut y = f32::from_bits(0x7ef3_11c3u32.wrapping_sub(d.to_bits()));
    for _ in 0..4 {
        let t = (-d) * y + 2.0;
        y = y * t;
    }
    y
}

/// `1 / sqrt(a)` for `a >= 0` (NaN for `a < 0`; module doc). For every flushed `a >= 0` the
/// Newton steps stay far from the subnormal range (`y ~ 1/sqrt(a)`, `a*y ~ sqrt(a)`,
/// `h*y ~ 1/2`, `t ~ 1`), so they need no flush.
#[inline(always)]
pub fn rsqrt_fixed(a: f32) -> f32 {
    rsqrt_of_flushed(flush(a))
}

/// `rsqrt_fixed` of an `a` that `flush` leaves unchanged, without that flush (the same bits).
#[inline(always)]
#[allow(clippy::assign_op_pattern)] // written out to mirror the GPU twin op for op
pub fn rsqrt_of_flushed(a: f32) -> f32 {
    let a = if a < 0.0 {
        f32::from_bits(0x7fc0_0000)
    } else {
        a
    };
    let mut y = f32::from_bits(0x5f37_59dfu32.wrapping_sub(a.to_bits() >> 1));
    for _ in 0..3 {
        let hy = (a * y) * 0.5;
        let t = (-hy) * y + 1.5;
        y = y * t;
    }
    y
}

/// `sqrt(a) = a * rsqrt_fixed(a)` for a = 0 or a in [2^-125, 2^125] (module doc).
#[inline(always)]
pub fn sqrt_fixed(a: f32) -> f32 {
    mul(flush(a), rsqrt_fixed(a))
}

/// `sqrt_fixed(a)` for an `a` that `flush` leaves unchanged, without its three flushes: the
/// same bits. The two of `a` change nothing by assumption, and the product's is idle for every
/// such `a`: `a*y` is `±0` for `a = ±0` (`y` is then finite and positive), near `sqrt(a)` (at
/// least 2^-63) for `a > MIN_POSITIVE`, and NaN or ±inf for `a < 0`, NaN or +inf — never of a
/// magnitude `flush` changes. (Adam's update relies on it; its tests check it with tiny inputs.)
#[inline(always)]
pub fn sqrt_of_flushed(a: f32) -> f32 {
    a * rsqrt_of_flushed(a)
}

/// The element-wise ops: a CPU function each (below) and one GPU kernel (`unary::gpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Exp = 0,
    Log = 1,
    Sigmoid = 2,
    Tanh = 3,
    Gelu = 4,
    /// The derivative of `Gelu` (its backward multiplies this by the incoming gradient).
    GeluGrad = 5,
    /// `recip_fixed` (log's backward).
    Recip = 6,
}

impl Unary {
    /// Every op, in discriminant order.
    pub const ALL: [Unary; 7] = [
        Unary::Exp,
        Unary::Log,
        Unary::Sigmoid,
        Unary::Tanh,
        Unary::Gelu,
        Unary::GeluGrad,
        Unary::Recip,
    ];

    /// The CPU version of the op.
    pub fn cpu(self) -> fn(f32) -> f32 {
        match self {
            Unary::Exp => exp_fixed,
            Unary::Log => log_fixed,
            Unary::Sigmoid => sigmoid_fixed,
            Unary::Tanh => tanh_fixed,
            Unary::Gelu => gelu_fixed,
            Unary::GeluGrad => gelu_grad_fixed,
            Unary::Recip => recip_fixed,
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
        NEG_LN2_LO, RECIP_HI, RECIP_LO, SQRT_HALF_X2,
    };
    use cubecl::prelude::*;

    /// The most loop iterations one kernel launch runs per thread over data-sized loops.
    /// Mesa's llvmpipe/lavapipe ends a shader invocation's loops after 65535 iterations *in
    /// total* (a hang guard in its code generator; measured: a 65536-row column sum returned the
    /// sum of the first 65535 rows, with no error; nesting the loop does not help, the counter is
    /// shared). So matmul and the row sums run one launch per block of `LOOP_BLOCK` steps, in
    /// order, the accumulator carried between launches as the same f32 (their `launch.rs`).
    /// The per-row kernels (`xent`, `softmax`, `causal`) loop about 3c times per row: rows of up
    /// to 21845 classes on lavapipe (no such limit on other drivers); `layernorm`'s backward about
    /// 4c: rows of up to 16383 columns.
    pub const LOOP_BLOCK: usize = 32768;

    /// The rounding pin every GPU kernel puts on each rounded value: `flush(x)` (module doc) done
    /// on the bits, after an integer xor with a value the compiler cannot know (`bits(one) ^
    /// bits(1.0)`, i.e. 0 at run time). Nothing before it can be fused, reassociated or
    /// contracted with anything after it — in CubeCL, in naga, in the driver's own compiler
    /// (Mesa's NIR treats undecorated SPIR-V float ops as inexact and may reassociate them;
    /// measured: without barriers lavapipe's exp differed from the CPU by up to 6 ULP) — and a
    /// subnormal or `MIN_POSITIVE` result becomes the same signed zero on every device.
    #[cube]
    pub fn pin(x: f32, one: f32) -> f32 {
        let zero = one.to_bits() ^ 0x3f80_0000u32;
        let b = x.to_bits() ^ zero;
        let tiny = (b & 0x7fff_ffffu32) <= 0x0080_0000u32;
        f32::from_bits(select(tiny, b & 0x8000_0000u32, b))
    }

    /// An accumulator's starting +0.0 that the compilers cannot see as a constant: with a
    /// literal `0.0`, naga and Mesa fold the first `0.0 + x` into `x` (not IEEE: `+0 + -0` is
    /// `+0`), and an all-zero sum came out as `-0` on lavapipe where the CPU gives `+0`.
    #[cube]
    pub fn zero(one: f32) -> f32 {
        pin(0.0f32, one)
    }

    /// `pin(pin(a * b) + c)`: two roundings, both flushed, whatever the compilers or the driver
    /// do with fma.
    #[cube]
    pub fn mad(a: f32, b: f32, c: f32, one: f32) -> f32 {
        let p = pin(a * b, one);
        pin(p + c, one)
    }

    /// `pin(fma(a, b, c))`: one rounding (where the device's `fma` really fuses: the probe's
    /// `arith.lockstep_fma`), flushed.
    #[cube]
    pub fn fma_pinned(a: f32, b: f32, c: f32, one: f32) -> f32 {
        pin(fma(a, b, c), one)
    }

    /// A dot product's step in the run's profile: `fma_pinned` when `fused`, else `mad`.
    #[cube]
    pub fn mad_in(a: f32, b: f32, c: f32, one: f32, #[comptime] fused: bool) -> f32 {
        if fused {
            fma_pinned(a, b, c, one)
        } else {
            mad(a, b, c, one)
        }
    }

    #[cube]
    pub fn exp_fixed(x: f32, one: f32) -> f32 {
        let x = pin(x, one);
        let nan = x.is_nan();
        let xc = select(x < EXP_LO, EXP_LO, x);
        let xc = select(xc > EXP_HI, EXP_HI, xc);
        let n = f32::floor(mad(xc, LOG2E, 0.5f32, one));
        let r = mad(n, NEG_LN2_HI, xc, one);
        let r = mad(n, LN2_LO, r, one);
        let z = pin(r * r, one);
        let p = mad(EP0, r, EP1, one);
        let p = mad(p, r, EP2, one);
        let p = mad(p, r, EP3, one);
        let p = mad(p, r, EP4, one);
        let p = mad(p, r, EP5, one);
        let y = pin(mad(p, z, r, one) + 1.0f32, one);
        let two_n = f32::from_bits(u32::cast_from(n + 127.0f32) << 23u32);
        let res = pin(y * two_n, one);
        select(nan, x, res)
    }

    #[cube]
    pub fn log_fixed(x: f32, one: f32) -> f32 {
        let bits = pin(x, one).to_bits();
        let e = f32::cast_from(bits >> 23u32) - 127.0f32;
        let m = f32::from_bits((bits & 0x007f_ffffu32) | 0x3f80_0000u32);
        let big = m > SQRT_HALF_X2;
        let m = select(big, m * 0.5f32, m);
        let e = select(big, e + 1.0f32, e);
        let f = pin(m - 1.0f32, one);
        let z = pin(f * f, one);
        let p = mad(LP0, f, LP1, one);
        let p = mad(p, f, LP2, one);
        let p = mad(p, f, LP3, one);
        let p = mad(p, f, LP4, one);
        let p = mad(p, f, LP5, one);
        let p = mad(p, f, LP6, one);
        let p = mad(p, f, LP7, one);
        let p = mad(p, f, LP8, one);
        let y = pin(p * f, one);
        let y = pin(y * z, one);
        let y = mad(e, NEG_LN2_LO, y, one);
        let y = mad(-0.5f32, z, y, one);
        let r = pin(f + y, one);
        mad(e, LN2_HI, r, one)
    }

    #[cube]
    pub fn sigmoid_fixed(x: f32, one: f32) -> f32 {
        let x = pin(x, one);
        let xc = select(x < -40.0f32, -40.0f32, x);
        let xc = select(xc > 40.0f32, 40.0f32, xc);
        let e = exp_fixed(-xc, one);
        recip_fixed(pin(1.0f32 + e, one), one)
    }

    #[cube]
    pub fn tanh_fixed(x: f32, one: f32) -> f32 {
        let s = sigmoid_fixed(pin(2.0f32 * pin(x, one), one), one);
        pin(pin(2.0f32 * s, one) - 1.0f32, one)
    }

    /// `(q, e)` of the CPU `gauss_tail`, the same operations in the same order.
    #[cube]
    fn gauss_tail(x: f32, one: f32) -> (f32, f32) {
        let ax = select(x < 0.0f32, -x, x);
        let ax = select(ax > 10.0f32, 10.0f32, ax);
        let z = pin(ax * INV_SQRT2, one);
        let t = recip_fixed(mad(ERF_P, z, 1.0f32, one), one);
        let p = mad(ERF_A5, t, ERF_A4, one);
        let p = mad(p, t, ERF_A3, one);
        let p = mad(p, t, ERF_A2, one);
        let p = mad(p, t, ERF_A1, one);
        let p = pin(p * t, one);
        let e = exp_fixed(-pin(z * z, one), one);
        (pin(p * e, one), e)
    }

    #[cube]
    fn phi_cdf(x: f32, q: f32, one: f32) -> f32 {
        let h = pin(0.5f32 * q, one);
        select(x < 0.0f32, h, pin(1.0f32 - h, one))
    }

    #[cube]
    pub fn gelu_fixed(x: f32, one: f32) -> f32 {
        let x = pin(x, one);
        let (q, _e) = gauss_tail(x, one);
        pin(x * phi_cdf(x, q, one), one)
    }

    #[cube]
    pub fn gelu_grad_fixed(x: f32, one: f32) -> f32 {
        let x = pin(x, one);
        let (q, e) = gauss_tail(x, one);
        mad(x, pin(e * INV_SQRT_2PI, one), phi_cdf(x, q, one), one)
    }

    /// The CPU `recip_fixed`: its Newton steps need no flush, but still the `pin` barriers (no
    /// compiler may fuse them).
    #[cube]
    pub fn recip_fixed(d: f32, one: f32) -> f32 {
        let d = select(d < RECIP_LO, RECIP_LO, d);
        let d = select(d > RECIP_HI, RECIP_HI, d);
        let mut y = f32::from_bits(0x7ef3_11c3u32 - d.to_bits());
        for _ in 0..4u32 {
            let t = mad(-d, y, 2.0f32, one);
            y = pin(y * t, one);
        }
        y
    }

    #[cube]
    pub fn rsqrt_fixed(a: f32, one: f32) -> f32 {
        let a = pin(a, one);
        let a = select(a < 0.0f32, f32::from_bits(0x7fc0_0000u32), a);
        let mut y = f32::from_bits(0x5f37_59dfu32 - (a.to_bits() >> 1u32));
        for _ in 0..3u32 {
            let hy = pin(pin(a * y, one) * 0.5f32, one);
            let t = mad(-hy, y, 1.5f32, one);
            y = pin(y * t, one);
        }
        y
    }

    #[cube]
    pub fn sqrt_fixed(a: f32, one: f32) -> f32 {
        pin(pin(a, one) * rsqrt_fixed(a, one), one)
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

    /// `pow2i` is `2^n` on every integer `exp_fixed` can reach (its argument clamped to
    /// [-87, 88]: `n` in [-126, 127]), and exactly the powers of two at the clamp's ends.
    #[test]
    fn pow2i_is_the_power_of_two() {
        for n in -126..=127 {
            assert_eq!(pow2i(n as f32).to_bits(), 2f32.powi(n).to_bits(), "2^{n}");
        }
        for x in [EXP_LO, EXP_HI] {
            let n = add(mul(x, LOG2E), 0.5).floor();
            assert!((-126.0..=127.0).contains(&n), "n = {n} at x = {x}");
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

    fn ulps(a: f32, b: f32) -> u32 {
        let ord = |x: f32| {
            let b = x.to_bits() as i32;
            if b < 0 { i32::MIN - b } else { b }
        };
        ord(a).abs_diff(ord(b))
    }

    #[test]
    fn sqrt_and_rsqrt_fixed_are_within_two_ulp_of_the_correctly_rounded_values() {
        let (mut worst_s, mut worst_r) = (0, 0);
        let mut a = 2f32.powi(-125);
        while a < 2f32.powi(125) {
            let exact = (a as f64).sqrt();
            worst_s = worst_s.max(ulps(sqrt_fixed(a), exact as f32));
            worst_r = worst_r.max(ulps(rsqrt_fixed(a), (1.0 / exact) as f32));
            a *= 1.000_37;
        }
        assert!(
            worst_s <= 2 && worst_r <= 2,
            "sqrt {worst_s} ULP, rsqrt {worst_r} ULP"
        );
        assert_eq!(sqrt_fixed(0.0).to_bits(), 0);
        assert_eq!(
            sqrt_fixed(f32::from_bits(5)).to_bits(),
            0,
            "a subnormal reads as 0"
        );
    }

    #[test]
    fn flush_zeroes_exactly_the_magnitudes_up_to_min_positive_keeping_the_sign() {
        for (x, want) in [
            (f32::MIN_POSITIVE, 0.0f32),
            (-f32::MIN_POSITIVE, -0.0),
            (f32::from_bits(1), 0.0),
            (-f32::from_bits(0x7f_ffff), -0.0),
            (-0.0, -0.0),
            (f32::from_bits(0x0080_0001), f32::from_bits(0x0080_0001)),
            (-1.5, -1.5),
            (f32::INFINITY, f32::INFINITY),
        ] {
            assert_eq!(flush(x).to_bits(), want.to_bits(), "flush({x:e})");
        }
        assert!(flush(f32::NAN).is_nan());
        // The corner: a product whose exact value lies just below MIN_POSITIVE rounds up to it
        // under gradual underflow — and is flushed like the FTZ result (0).
        let p = std::hint::black_box(f32::from_bits(0x3f7f_ffff)) * f32::MIN_POSITIVE;
        assert_eq!(
            mul(f32::from_bits(0x3f7f_ffff), f32::MIN_POSITIVE).to_bits(),
            0
        );
        assert!(p == f32::MIN_POSITIVE || p.is_subnormal());
    }

    /// Every scalar op gives the same bits with the CPU's FTZ/DAZ modes on and off, over
    /// subnormals, `±MIN_POSITIVE`, zeros and arguments whose intermediates underflow.
    #[test]
    fn scalar_ops_give_the_same_bits_with_cpu_ftz_on_and_off() {
        let mut xs = vec![
            0.0f32,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::NAN,
        ];
        for e in 0..=30 {
            let t = 2f32.powi(-100 - e);
            xs.extend([
                t,
                -t,
                t * 1.37,
                f32::from_bits(1 << (e % 23)),
                -f32::from_bits(77 * e as u32 + 1),
            ]);
        }
        xs.extend((0..200).map(|i| -100.0 + i as f32 * 0.5));
        xs.extend((0..64).map(|i| -86.0 - i as f32 * 0.05));
        for op in Unary::ALL {
            let run = |on: bool| -> Vec<u32> {
                crate::ftz::run_with(on, || xs.iter().map(|&x| op.cpu()(x).to_bits()).collect())
            };
            assert_eq!(run(false), run(true), "{op:?}");
        }
        let run = |on: bool| -> Vec<u32> {
            crate::ftz::run_with(on, || {
                xs.iter()
                    .flat_map(|&x| [sqrt_fixed(x.abs()), rsqrt_fixed(x.abs() + 1e-30)])
                    .map(f32::to_bits)
                    .collect()
            })
        };
        assert_eq!(run(false), run(true), "sqrt/rsqrt");
    }

    #[test]
    fn recip_fixed_is_close_to_division() {
        let mut d = 2f32.powi(-125);
        while d < 2f32.powi(125) {
            let (a, b) = (recip_fixed(d), 1.0 / d);
            assert!(((a - b) / b).abs() < 3e-7, "d = {d}: {a} vs {b}");
            d *= 1.0007;
        }
    }
}
