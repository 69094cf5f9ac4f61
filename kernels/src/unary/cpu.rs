//! CPU element-wise functions (`unary`'s module doc): `arith`'s, one element after another.
//!
//! Element-wise, so neither threads (chunks of `CHUNK` elements) nor SIMD lanes can change any
//! result: each element runs the same scalar operations (`+ - *`, comparisons, `floor`, bit
//! casts — all exact or correctly rounded, never contracted into FMA by rustc). On x86-64 the
//! loop is also compiled with AVX-512F and with AVX2 enabled (`simd::widest!` runs the widest the
//! CPU has), so `floor` becomes one instruction and the branch-free parts vectorise; the results
//! are the same bits.
//!
//! GELU and its derivative skip the subnormal flushes on a block of `SAFE_BLOCK` elements when
//! every element is `±0`, NaN or at least `GELU_SAFE_MIN` (2^-20) in magnitude (`gelu_safe`):
//! then no intermediate of `arith::gelu_fixed` / `gelu_grad_fixed` is ever subnormal or
//! `±MIN_POSITIVE` — `z = min(|x|, 10)/sqrt2` is 0 or at least 2^-21, `z*z` at least 2^-42, the
//! erfc polynomial's terms O(1), `exp(-z*z)` at least e^-50 (its reduced argument an exact
//! difference of f32s: zero or at least 2^-48), `erfc` at least 2^-77, `x * phi(x)` at least
//! 2^-96, and a sum of two values of magnitude at least 2^-100 is zero or at least 2^-123 — so
//! every `flush` there is the identity, and the flush-free twin (`gelu_nf_block`: the same
//! operations in the same order, without `flush`) gives the same bits. Checked on every
//! f32 in that set (NaN results compared as NaN: their sign and payload follow the compiler's
//! operand order and are no result's part) (`cargo test --release --workspace --lib -- --ignored
//! gelu_without_flushes_is_exact_on_every_f32`, about seven minutes) and on a sample of them in
//! the ordinary tests. Other blocks take the flushed functions.

use crate::arith::{
    EP0, EP1, EP2, EP3, EP4, EP5, ERF_A1, ERF_A2, ERF_A3, ERF_A4, ERF_A5, ERF_P, EXP_HI, EXP_LO,
    INV_SQRT_2PI, INV_SQRT2, LN2_LO, LOG2E, NEG_LN2_HI, Unary, exp_fixed, gelu_fixed,
    gelu_grad_fixed, log_fixed, pow2i, recip_fixed, sigmoid_fixed, tanh_fixed,
};

/// The smallest nonzero magnitude for which GELU's flushes are all the identity (module doc).
pub const GELU_SAFE_MIN: f32 = 1.0 / 1_048_576.0; // 2^-20

/// Elements per safety decision (a block is checked, then computed with or without flushes).
const SAFE_BLOCK: usize = 256;

/// Whether `x` lies where GELU's flushes are all the identity: `±0`, NaN, or `|x| >= 2^-20`.
#[inline(always)]
pub fn gelu_safe(x: f32) -> bool {
    let mag = x.to_bits() & 0x7fff_ffff;
    mag == 0 || mag >= GELU_SAFE_MIN.to_bits()
}

/// `arith::exp_fixed` without its flushes (inputs here are in [-50, 0] or NaN).
#[inline(always)]
fn exp_nf(x: f32) -> f32 {
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
    let two_n = pow2i(n);
    if x.is_nan() { x } else { y * two_n }
}

/// `gauss_tail`'s `z = min(|x|, 10) / sqrt2` and the argument of its reciprocal.
#[inline(always)]
fn tail_arg(x: f32) -> (f32, f32) {
    let ax = if x < 0.0 { -x } else { x };
    let ax = if ax > 10.0 { 10.0 } else { ax };
    let z = ax * INV_SQRT2;
    (z, ERF_P * z + 1.0)
}

/// `gauss_tail`'s erfc polynomial in `t`, times `t`.
#[inline(always)]
#[allow(clippy::assign_op_pattern)] // written out to mirror `arith::gauss_tail` op for op
fn tail_poly(t: f32) -> f32 {
    let mut p = ERF_A5;
    p = p * t + ERF_A4;
    p = p * t + ERF_A3;
    p = p * t + ERF_A2;
    p = p * t + ERF_A1;
    p * t
}

/// `arith::gelu_fixed` (`grad`: `gelu_grad_fixed`) without its flushes, for `gelu_safe` inputs
/// (at most `SAFE_BLOCK`): `gauss_tail`'s stages (`tail_arg`, `recip_fixed`, `tail_poly`,
/// `exp_nf(-(z * z))`, the product) in separate loops over the block; each element runs
/// `arith`'s operations in its order, so the same bits (module doc). One loop doing all ~60
/// operations of an element chains each vector's operations end to end and the CPU waits on
/// their latency; short loops let it overlap consecutive vectors (3x faster).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn gelu_nf_block(xs: &[f32], ys: &mut [f32], grad: bool) {
    let n = xs.len();
    let (mut z, mut t) = ([0f32; SAFE_BLOCK], [0f32; SAFE_BLOCK]);
    let (z, t, ys) = (&mut z[..n], &mut t[..n], &mut ys[..n]);
    for j in 0..n {
        (z[j], t[j]) = tail_arg(xs[j]);
    }
    for j in 0..n {
        t[j] = recip_fixed(t[j]);
    }
    for j in 0..n {
        t[j] = tail_poly(t[j]);
    }
    // z becomes e = exp(-z^2), t becomes q = p * e.
    for j in 0..n {
        z[j] = exp_nf(-(z[j] * z[j]));
    }
    for j in 0..n {
        t[j] *= z[j];
    }
    if grad {
        for j in 0..n {
            let x = xs[j];
            ys[j] = x * (z[j] * INV_SQRT_2PI) + phi_cdf_nf(x, t[j]);
        }
    } else {
        for j in 0..n {
            let x = xs[j];
            ys[j] = x * phi_cdf_nf(x, t[j]);
        }
    }
}

#[inline(always)]
fn phi_cdf_nf(x: f32, q: f32) -> f32 {
    let h = 0.5 * q;
    if x < 0.0 { h } else { 1.0 - h }
}

/// GELU (`grad`: its derivative) over a chunk: blocks of `SAFE_BLOCK` whose elements are all
/// `gelu_safe` run the flush-free `gelu_nf_block`, others the flushed function. Plain loops, so
/// the AVX-512 and AVX2 copies vectorise every part.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn gelu_chunk(i: &[f32], o: &mut [f32], grad: bool) {
    for (xs, ys) in i.chunks(SAFE_BLOCK).zip(o.chunks_mut(SAFE_BLOCK)) {
        let mut safe = true;
        for &x in xs {
            safe &= gelu_safe(x);
        }
        // Plain index loops: iterator closures would not be inlined into the vector copies.
        let n = xs.len();
        match (safe, grad) {
            (true, _) => gelu_nf_block(xs, ys, grad),
            (false, false) => {
                for j in 0..n {
                    ys[j] = gelu_fixed(xs[j]);
                }
            }
            (false, true) => {
                for j in 0..n {
                    ys[j] = gelu_grad_fixed(xs[j]);
                }
            }
        }
    }
}

/// Elements per thread task.
const CHUNK: usize = 1 << 14;

/// The loop over one chunk, with each `arith` function (all `#[inline(always)]`) inlined
/// straight into it, so the AVX-512 and AVX2 copies (`simd::widest!`) can vectorise it.
macro_rules! map_loop {
    ($i:ident, $o:ident, $op:ident) => {
        match $op {
            Unary::Exp => $o.iter_mut().zip($i).for_each(|(y, &x)| *y = exp_fixed(x)),
            Unary::Log => $o.iter_mut().zip($i).for_each(|(y, &x)| *y = log_fixed(x)),
            Unary::Sigmoid => $o.iter_mut().zip($i).for_each(|(y, &x)| *y = sigmoid_fixed(x)),
            Unary::Tanh => $o.iter_mut().zip($i).for_each(|(y, &x)| *y = tanh_fixed(x)),
            Unary::Gelu => gelu_chunk($i, $o, false),
            Unary::GeluGrad => gelu_chunk($i, $o, true),
            Unary::Recip => $o.iter_mut().zip($i).for_each(|(y, &x)| *y = recip_fixed(x)),
        }
    };
}

#[inline(always)]
fn map_chunk_body(i: &[f32], o: &mut [f32], op: Unary) {
    map_loop!(i, o, op)
}

crate::simd::widest! {
    fn map_chunk(i: &[f32], o: &mut [f32], op: Unary) = map_chunk_body;
}

/// `op` of every element of `x`.
pub fn map(x: &[f32], op: Unary) -> Vec<f32> {
    crate::heap::par_zeroed(x.len(), CHUNK, |c, o| {
        map_chunk(&x[c * CHUNK..c * CHUNK + o.len()], o, op)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// The same bits, or both NaN: a NaN's sign and payload depend on which operand order the
    /// compiler picked for each instruction, and are not part of any result (a run stops at a
    /// NaN loss; inputs and checkpoints holding NaN are refused).
    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// The flush-free block (`gelu_nf_block`, through `map_chunk` as `map` runs it) against the
    /// flushed functions on the `gelu_safe` inputs whose bits are `start, start + step, ...`
    /// (every one of them when `step` is 1).
    fn flush_free_gelu_mismatches(start: u32, step: u32) -> Vec<(u32, &'static str)> {
        // every tested pattern, counted: the loop must not be empty
        let tested = std::sync::atomic::AtomicU64::new(0);
        let bad = std::sync::Mutex::new(Vec::new());
        let count = (u64::from(u32::MAX - start)) / u64::from(step) + 1;
        const PER_TASK: u64 = 1 << 16;
        (0..count.div_ceil(PER_TASK))
            .into_par_iter()
            .for_each(|task| {
                let xs: Vec<f32> = (task * PER_TASK..count.min((task + 1) * PER_TASK))
                    .map(|i| f32::from_bits((u64::from(start) + i * u64::from(step)) as u32))
                    .filter(|&x| gelu_safe(x))
                    .collect();
                tested.fetch_add(xs.len() as u64, std::sync::atomic::Ordering::Relaxed);
                let mut ys = vec![0f32; xs.len()];
                for (op, name, f) in [
                    (Unary::Gelu, "gelu", gelu_fixed as fn(f32) -> f32),
                    (Unary::GeluGrad, "gelu_grad", gelu_grad_fixed),
                ] {
                    map_chunk(&xs, &mut ys, op);
                    for (&x, y) in xs.iter().zip(&ys) {
                        if !same(*y, f(x)) {
                            bad.lock()
                                .expect("no test thread panics holding it")
                                .push((x.to_bits(), name));
                        }
                    }
                }
            });
        let tested = tested.into_inner();
        // the safe set is 58% of all patterns (exponents 107..=255, both signs, and the zeros)
        assert!(
            tested * 2 > count,
            "only {tested} of {count} patterns were safe inputs"
        );
        bad.into_inner()
            .expect("no test thread panicked holding it")
    }

    /// The flush-free GELU block gives the flushed functions' bits on a sample of the safe set
    /// (every 4099th bit pattern, both signs, all exponents) and on its edges.
    #[test]
    fn gelu_without_flushes_is_exact_on_a_sample() {
        let bad = flush_free_gelu_mismatches(7, 4099);
        assert!(
            bad.is_empty(),
            "first mismatches: {:?}",
            &bad[..bad.len().min(5)]
        );
        for x in [
            GELU_SAFE_MIN,
            -GELU_SAFE_MIN,
            10.0,
            -10.0,
            10.000001,
            -3.0e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            0.0,
            -0.0,
        ] {
            assert!(gelu_safe(x));
            let (mut y, mut dy) = ([0f32], [0f32]);
            gelu_nf_block(&[x], &mut y, false);
            gelu_nf_block(&[x], &mut dy, true);
            assert!(same(y[0], gelu_fixed(x)), "gelu({x})");
            assert!(same(dy[0], gelu_grad_fixed(x)), "gelu_grad({x})");
        }
        let below = f32::from_bits(GELU_SAFE_MIN.to_bits() - 1);
        assert!(!gelu_safe(below) && !gelu_safe(-below) && !gelu_safe(1e-40));
    }

    /// The same on every f32 (6 min 38 s on two cores): `cargo test --release --workspace --lib
    /// -- --ignored gelu_without_flushes_is_exact_on_every_f32`.
    #[test]
    #[ignore]
    fn gelu_without_flushes_is_exact_on_every_f32() {
        let bad = flush_free_gelu_mismatches(0, 1);
        assert!(
            bad.is_empty(),
            "{} mismatches, first: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }

    /// A block holding one unsafe element (a subnormal, `2^-21`) takes the flushed path, and its
    /// safe neighbours still get their bits.
    #[test]
    fn gelu_blocks_with_tiny_inputs_take_the_flushed_path() {
        let mut x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.013).collect();
        x[300] = 1e-40;
        x[301] = 1.0 / 2_097_152.0;
        x[302] = -f32::MIN_POSITIVE;
        for op in [Unary::Gelu, Unary::GeluGrad] {
            let f = op.cpu();
            for (a, &v) in map(&x, op).iter().zip(&x) {
                assert_eq!(a.to_bits(), f(v).to_bits(), "{op:?}({v})");
            }
        }
    }

    /// The threaded, vector-compiled (AVX-512 or AVX2) map gives the scalar function's bits on every element.
    #[test]
    fn map_equals_the_scalar_function() {
        let x: Vec<f32> = (0..100_003)
            .map(|i| f32::from_bits(0x9e37_79b9u32.wrapping_mul(i as u32 + 1)))
            .filter(|v| v.is_finite())
            .map(|v| v.clamp(-200.0, 200.0))
            .chain([0.0, -0.0, 1e-40, -1e-40, 88.5, -87.5, 1e30])
            .collect();
        for op in Unary::ALL {
            let f = op.cpu();
            let got = map(&x, op);
            for (a, &v) in got.iter().zip(&x) {
                assert_eq!(a.to_bits(), f(v).to_bits(), "{op:?}({v})");
            }
        }
    }
}
