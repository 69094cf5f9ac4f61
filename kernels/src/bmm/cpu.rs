//! CPU batched matmul: `matmul`'s CPU code per batch element (see `bmm`'s module doc).

use crate::matmul::cpu::matmul_into;

/// `a` `[bt, m, k]` and `b` `[bt, k, n]` row-major; returns `[bt, m, n]`. Threads over batch
/// elements; each is `matmul::cpu::matmul` of its two matrices (in the same profile, `fused`), bit
/// for bit.
pub fn bmm(a: &[f32], b: &[f32], bt: usize, m: usize, k: usize, n: usize, fused: bool) -> Vec<f32> {
    bmm_t((a, false), (b, false), bt, (m, k, n), fused)
}

/// `bmm` with either operand given as the row-major storage of its per-element transpose
/// (`(data, true)`: `a` stored `[bt, k, m]`, `b` stored `[bt, n, k]`, as `q·kᵀ` and the backward
/// hold them), read in place (`matmul::cpu::matmul_t`): the same bits.
pub fn bmm_t(
    (a, a_t): (&[f32], bool),
    (b, b_t): (&[f32], bool),
    bt: usize,
    (m, k, n): (usize, usize, usize),
    fused: bool,
) -> Vec<f32> {
    assert!(
        a.len() == bt * m * k && b.len() == bt * k * n,
        "bmm: {} and {} elements for {bt}x{m}x{k} x {bt}x{k}x{n}",
        a.len(),
        b.len()
    );
    if m * n == 0 {
        return vec![0f32; bt * m * n];
    }
    // One batch element: the whole pool works on it; several: one element per task.
    let threads = bt == 1;
    crate::heap::par_zeroed(bt * m * n, m * n, |e, o| {
        let ae = &a[e * m * k..(e + 1) * m * k];
        let be = &b[e * k * n..(e + 1) * k * n];
        matmul_into((ae, a_t), (be, b_t), o, (m, k, n), fused, threads);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matmul::cpu::matmul_reference;
    use lockstep_core::SeedStream;

    fn seeded(n: usize, name: &str) -> Vec<f32> {
        let mut s = SeedStream::new(9, name);
        (0..n).map(|_| s.uniform_range(-2.0, 2.0)).collect()
    }

    /// Each batch element is the plain flushed k-order loop bit for bit (so `matmul`'s bits),
    /// and close to the f64 product.
    #[test]
    fn matches_the_reference_loop_per_batch_and_the_f64_definition() {
        for (bt, m, k, n) in [
            (1, 1, 1, 1),
            (1, 7, 33, 5),
            (3, 7, 33, 9),
            (5, 1, 13, 1),
            (2, 17, 64, 40),
            (2, 0, 3, 4),
            (2, 3, 0, 4),
            (0, 3, 2, 4),
        ] {
            let (a, b) = (seeded(bt * m * k, "a"), seeded(bt * k * n, "b"));
            let got = bmm(&a, &b, bt, m, k, n, false);
            assert_eq!(got.len(), bt * m * n);
            for e in 0..bt {
                let ae = &a[e * m * k..(e + 1) * m * k];
                let be = &b[e * k * n..(e + 1) * k * n];
                let want = matmul_reference(ae, be, m, k, n);
                let ge = &got[e * m * n..(e + 1) * m * n];
                for (i, (x, y)) in ge.iter().zip(&want).enumerate() {
                    assert_eq!(x.to_bits(), y.to_bits(), "{bt}x{m}x{k}x{n} [{e}][{i}]");
                }
                for i in 0..m {
                    for j in 0..n {
                        let f: f64 = (0..k)
                            .map(|p| ae[i * k + p] as f64 * be[p * n + j] as f64)
                            .sum();
                        let g = ge[i * n + j] as f64;
                        assert!((g - f).abs() <= 1e-5 * (1.0 + k as f64), "{g} vs {f}");
                    }
                }
            }
        }
    }
}
