//! CPU element-wise functions (`unary`'s module doc): `arith`'s, one element after another.
//!
//! Element-wise, so neither threads (chunks of `CHUNK` elements) nor SIMD lanes can change any
//! result: each element runs the same scalar operations (`+ - *`, comparisons, `floor`, bit
//! casts — all exact or correctly rounded, never contracted into FMA by rustc). On x86-64 with
//! AVX2 the loop is compiled a second time with AVX2 enabled, so `floor` becomes one instruction
//! and the branch-free parts vectorise; the results are the same bits.

use crate::arith::{
    Unary, exp_fixed, gelu_fixed, gelu_grad_fixed, log_fixed, recip_fixed, sigmoid_fixed,
    tanh_fixed,
};
use rayon::prelude::*;

/// Elements per thread task.
const CHUNK: usize = 1 << 14;

/// The loop over one chunk, with each `arith` function (all `#[inline(always)]`) inlined
/// straight into it, so the AVX2 copy below can vectorise it.
macro_rules! map_loop {
    ($i:ident, $o:ident, $op:ident) => {
        match $op {
            Unary::Exp => $o.iter_mut().zip($i).for_each(|(y, &x)| *y = exp_fixed(x)),
            Unary::Log => $o.iter_mut().zip($i).for_each(|(y, &x)| *y = log_fixed(x)),
            Unary::Sigmoid => $o.iter_mut().zip($i).for_each(|(y, &x)| *y = sigmoid_fixed(x)),
            Unary::Tanh => $o.iter_mut().zip($i).for_each(|(y, &x)| *y = tanh_fixed(x)),
            Unary::Gelu => $o.iter_mut().zip($i).for_each(|(y, &x)| *y = gelu_fixed(x)),
            Unary::GeluGrad => $o
                .iter_mut()
                .zip($i)
                .for_each(|(y, &x)| *y = gelu_grad_fixed(x)),
            Unary::Recip => $o.iter_mut().zip($i).for_each(|(y, &x)| *y = recip_fixed(x)),
        }
    };
}

fn map_chunk_generic(i: &[f32], o: &mut [f32], op: Unary) {
    map_loop!(i, o, op)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn map_chunk_avx2(i: &[f32], o: &mut [f32], op: Unary) {
    map_loop!(i, o, op)
}

fn map_chunk(i: &[f32], o: &mut [f32], op: Unary) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        #[allow(unsafe_code)]
        unsafe {
            map_chunk_avx2(i, o, op)
        };
        return;
    }
    map_chunk_generic(i, o, op)
}

/// `op` of every element of `x`.
pub fn map(x: &[f32], op: Unary) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, i)| map_chunk(i, o, op));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threaded, AVX2-compiled map gives the scalar function's bits on every element.
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
