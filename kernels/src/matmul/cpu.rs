//! CPU matmul in the fixed k order (see the module doc of `matmul`).

use rayon::prelude::*;

/// Output rows per parallel task (a multiple of every register tile's row count).
const ROWS: usize = 8;

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

/// The widest register tile this CPU runs. Only speed depends on the choice: every tile computes
/// each output with its own accumulator in k order, so all of them give the same bits.
fn block_dispatch<const FUSED: bool>(a: &[f32], b: &[f32], out: &mut [f32], k: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `block_avx512` is compiled for (checked above).
            #[allow(unsafe_code)]
            unsafe {
                return block_avx512::<FUSED>(a, b, out, k, n);
            }
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `block_avx2` is compiled for (checked above).
            #[allow(unsafe_code)]
            unsafe {
                return block_avx2::<FUSED>(a, b, out, k, n);
            }
        }
    }
    tiled::<FUSED, 4, 8>(a, b, out, k, n)
}

/// 8 rows x 32 columns of accumulators in 16 zmm registers (`a * b + c` stays two roundings:
/// rustc never contracts; FMA is used only by `mul_add`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn block_avx512<const FUSED: bool>(a: &[f32], b: &[f32], out: &mut [f32], k: usize, n: usize) {
    tiled::<FUSED, 8, 32>(a, b, out, k, n)
}

/// 4 rows x 16 columns of accumulators in 8 ymm registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_avx2<const FUSED: bool>(a: &[f32], b: &[f32], out: &mut [f32], k: usize, n: usize) {
    tiled::<FUSED, 4, 16>(a, b, out, k, n)
}

#[inline(always)]
fn mad<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// Rows of `out` (`[rows, n]`, zeroed) in register tiles of `R x W` outputs (then `R x 16` and
/// `R x 8` for the last columns): per tile, the accumulators stay in registers for the whole k
/// loop (p = 0, 1, ..., k-1) and are stored once. Whatever is left (fewer than `R` rows or 8
/// columns) takes `span`, the same order without tiling.
#[inline(always)]
fn tiled<const FUSED: bool, const R: usize, const W: usize>(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    k: usize,
    n: usize,
) {
    let rows = out.len() / n;
    let mut r0 = 0;
    while r0 + R <= rows {
        let arows: [&[f32]; R] = std::array::from_fn(|r| &a[(r0 + r) * k..(r0 + r + 1) * k]);
        let mut j0 = 0;
        while j0 + W <= n {
            tile::<FUSED, R, W>(&arows, b, out, n, r0, j0);
            j0 += W;
        }
        if W > 16 && j0 + 16 <= n {
            tile::<FUSED, R, 16>(&arows, b, out, n, r0, j0);
            j0 += 16;
        }
        if W > 8 && j0 + 8 <= n {
            tile::<FUSED, R, 8>(&arows, b, out, n, r0, j0);
            j0 += 8;
        }
        span::<FUSED>(a, b, out, k, n, r0..r0 + R, j0..n);
        r0 += R;
    }
    span::<FUSED>(a, b, out, k, n, r0..rows, 0..n);
}

/// One `R x W` tile of outputs at row `r0`, column `j0`.
#[inline(always)]
fn tile<const FUSED: bool, const R: usize, const W: usize>(
    arows: &[&[f32]; R],
    b: &[f32],
    out: &mut [f32],
    n: usize,
    r0: usize,
    j0: usize,
) {
    let mut acc = [[0f32; W]; R];
    for p in 0..arows[0].len() {
        let bw: &[f32; W] = b[p * n + j0..p * n + j0 + W].try_into().expect("W columns");
        for r in 0..R {
            let av = arows[r][p];
            for j in 0..W {
                acc[r][j] = mad::<FUSED>(av, bw[j], acc[r][j]);
            }
        }
    }
    for r in 0..R {
        out[(r0 + r) * n + j0..(r0 + r) * n + j0 + W].copy_from_slice(&acc[r]);
    }
}

/// Outputs `rows x cols` of `out` (zeroed): for p in 0..k in order, add `a[r,p] * b[p, cols]`.
#[inline(always)]
fn span<const FUSED: bool>(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    k: usize,
    n: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    if cols.is_empty() {
        return;
    }
    for p in 0..k {
        let brow = &b[p * n + cols.start..p * n + cols.end];
        for r in rows.clone() {
            let av = a[r * k + p];
            let crow = &mut out[r * n + cols.start..r * n + cols.end];
            for (cv, &bv) in crow.iter_mut().zip(brow) {
                *cv = mad::<FUSED>(av, bv, *cv);
            }
        }
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
            (17, 40, 97),
            (8, 3, 32),
            (128, 784, 256),
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

    /// Each dispatch target (the portable 4x8 tile, AVX2's 4x16, AVX-512's 8x32 and the tails)
    /// gives the reference loop's bits, so the CPU a run lands on cannot change its results.
    #[test]
    fn every_register_tile_gives_the_reference_bits() {
        for (m, k, n) in [(8, 5, 40), (13, 33, 57), (16, 100, 72), (3, 2, 9)] {
            let (a, b) = (seeded(m * k, "a"), seeded(k * n, "b"));
            let want = matmul_reference(&a, &b, m, k, n);
            let mut tiles: Vec<(&str, Vec<f32>)> = Vec::new();
            let mut run = |name, f: &dyn Fn(&mut [f32])| {
                let mut out = vec![0f32; m * n];
                f(&mut out);
                tiles.push((name, out));
            };
            run("4x8", &|o| tiled::<false, 4, 8>(&a, &b, o, k, n));
            run("4x16", &|o| tiled::<false, 4, 16>(&a, &b, o, k, n));
            run("8x32", &|o| tiled::<false, 8, 32>(&a, &b, o, k, n));
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the features were just detected.
                #[allow(unsafe_code)]
                run("avx512", &|o| unsafe {
                    block_avx512::<false>(&a, &b, o, k, n)
                });
            }
            for (name, got) in tiles {
                let bad = got
                    .iter()
                    .zip(&want)
                    .position(|(x, y)| x.to_bits() != y.to_bits());
                assert_eq!(bad, None, "{name} {m}x{k}x{n}: first mismatch at {bad:?}");
            }
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
