//! CPU matmul in the fixed k order (see the module doc of `matmul`).

use rayon::prelude::*;

const ROWS: usize = 4;
const COLS: usize = 512;

/// `a` `[m, k]` and `b` `[k, n]` row-major. `fused` selects the fused multiply-add profile.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, fused: bool) -> Vec<f32> {
    assert_eq!(
        a.len(),
        m * k,
        "matmul: lhs has {} elements, expected {m}x{k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "matmul: rhs has {} elements, expected {k}x{n}",
        b.len()
    );
    let mut c = vec![0f32; m * n];
    if n == 0 || m == 0 {
        return c;
    }
    c.par_chunks_mut(n * ROWS)
        .enumerate()
        .for_each(|(blk, out)| {
            let a_rows = &a[blk * ROWS * k..(blk * ROWS * k + out.len() / n * k)];
            if fused {
                block_dispatch::<true>(a_rows, b, out, k, n)
            } else {
                block_dispatch::<false>(a_rows, b, out, k, n)
            }
        });
    c
}

fn block_dispatch<const FUSED: bool>(a: &[f32], b: &[f32], out: &mut [f32], k: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `block_avx2` is compiled for (checked above).
            #[allow(unsafe_code)]
            unsafe {
                return block_avx2::<FUSED>(a, b, out, k, n);
            }
        }
    }
    block::<FUSED>(a, b, out, k, n)
}

/// The same loop compiled with AVX2 (wider lanes; each lane still one output's accumulator, and
/// `a * b + c` stays two roundings: rustc never contracts, FMA is used only by `mul_add`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_avx2<const FUSED: bool>(a: &[f32], b: &[f32], out: &mut [f32], k: usize, n: usize) {
    block::<FUSED>(a, b, out, k, n)
}

/// Up to `ROWS` output rows: for each column tile, for p in 0..k in order, add a[r,p]*b[p,:].
#[inline(always)]
fn block<const FUSED: bool>(a: &[f32], b: &[f32], out: &mut [f32], k: usize, n: usize) {
    let rows = out.len() / n;
    let mut j0 = 0;
    while j0 < n {
        let j1 = (j0 + COLS).min(n);
        for p in 0..k {
            let brow = &b[p * n + j0..p * n + j1];
            for r in 0..rows {
                let av = a[r * k + p];
                let crow = &mut out[r * n + j0..r * n + j1];
                for (cv, &bv) in crow.iter_mut().zip(brow) {
                    *cv = if FUSED {
                        av.mul_add(bv, *cv)
                    } else {
                        av * bv + *cv
                    };
                }
            }
        }
        j0 = j1;
    }
}

/// The plain triple loop: the reference the fast version must match bit for bit.
#[allow(clippy::assign_op_pattern)] // `acc = a*b + acc` is the documented order
pub fn matmul_reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for p in 0..k {
                acc = a[i * k + p] * b[p * n + j] + acc;
            }
            out[i * n + j] = acc;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_core::SeedStream;

    fn seeded(n: usize, name: &str) -> Vec<f32> {
        let mut s = SeedStream::new(5, name);
        (0..n).map(|_| s.uniform_range(-2.0, 2.0)).collect()
    }

    #[test]
    fn fast_matmul_matches_the_reference_loop_bitwise() {
        for (m, k, n) in [
            (1, 1, 1),
            (3, 7, 5),
            (4, 1, 600),
            (9, 513, 17),
            (33, 64, 1030),
            (0, 3, 2),
            (2, 0, 3),
        ] {
            let (a, b) = (seeded(m * k, "a"), seeded(k * n, "b"));
            let fast = matmul(&a, &b, m, k, n, false);
            let slow = matmul_reference(&a, &b, m, k, n);
            let bad = fast
                .iter()
                .zip(&slow)
                .position(|(x, y)| x.to_bits() != y.to_bits());
            assert_eq!(bad, None, "{m}x{k}x{n}: first mismatch at {bad:?}");
        }
    }

    #[test]
    fn fused_profile_differs_where_fma_rounds_once() {
        // acc = -1, then x*x + acc with x = 1 + 2^-12: x*x = 1 + 2^-11 + 2^-24 needs 25 bits,
        // so the unfused product rounds to 1 + 2^-11 and the fused result keeps the 2^-24.
        let x = 1.0 + f32::EPSILON * 2048.0;
        let a = [-1.0, x];
        let b = [1.0, x];
        let unfused = matmul(&a, &b, 1, 2, 1, false)[0];
        let fused = matmul(&a, &b, 1, 2, 1, true)[0];
        assert_eq!(unfused, matmul_reference(&a, &b, 1, 2, 1)[0]);
        assert_ne!(unfused.to_bits(), fused.to_bits());
    }
}
