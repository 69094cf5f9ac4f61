//! CPU reductions in the canonical order (see `reduce`'s module doc).

use super::CHUNK;
use crate::arith::{add, flush};
use crate::rowgroup::columns;
use rayon::prelude::*;

/// `[m, n]` row-major -> `[n]`: rows added in order per column.
pub fn sum_rows(x: &[f32], m: usize, n: usize) -> Vec<f32> {
    assert_eq!(
        x.len(),
        m * n,
        "sum_rows: {} elements, expected {m}x{n}",
        x.len()
    );
    let mut out = vec![0f32; n];
    // Row-major walk with one accumulator per column: the same per-column order as the
    // column-at-a-time definition, but cache friendly. Threads split over column ranges.
    out.par_chunks_mut(256)
        .enumerate()
        .for_each(|(c, acc)| column_sums(x, (m, n), c * 256, acc));
    out
}

/// Columns `j0..j0 + acc.len()` of `x` `[m, n]`, rows added in order into `acc` (zeroed).
#[inline(always)]
fn column_sums_body(x: &[f32], (m, n): (usize, usize), j0: usize, acc: &mut [f32]) {
    for i in 0..m {
        let row = &x[i * n + j0..i * n + j0 + acc.len()];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a = add(*a, flush(v));
        }
    }
}

crate::simd::widest! {
    fn column_sums(x: &[f32], shape: (usize, usize), j0: usize, acc: &mut [f32]) = column_sums_body;
}

/// Chunks per thread task in `sum_all`.
const TASK_CHUNKS: usize = 64;
/// Chunks summed side by side, one per vector lane (each in its own order).
const LANES: usize = 16;

/// All elements: 256-element chunks summed in order, then the partials in order. The chunks'
/// in-order chains run `LANES` at a time in the lanes of a vector (`rowgroup`), each chain's
/// order unchanged.
pub fn sum_all(x: &[f32]) -> f32 {
    let chunks = x.len().div_ceil(CHUNK);
    let span = TASK_CHUNKS * CHUNK;
    let partials = crate::heap::par_zeroed(chunks, TASK_CHUNKS, |t, out| {
        chunk_sums(&x[t * span..(t * span + span).min(x.len())], out)
    });
    let mut total = 0f32;
    for p in partials {
        total = add(total, p);
    }
    total
}

/// The in-order sums of the `CHUNK`-element chunks of `x` (the last may be shorter) into `out`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane `r` of column `j`: constant-bound loops
fn chunk_sums_body(x: &[f32], out: &mut [f32]) {
    let mut xt = Vec::new();
    let mut c = 0;
    while (c + LANES) * CHUNK <= x.len() {
        columns::<LANES>(&x[c * CHUNK..(c + LANES) * CHUNK], CHUNK, &mut xt);
        let mut acc = [0f32; LANES];
        for col in xt.iter() {
            for r in 0..LANES {
                acc[r] = add(acc[r], flush(col[r]));
            }
        }
        out[c..c + LANES].copy_from_slice(&acc);
        c += LANES;
    }
    for (o, chunk) in out[c..].iter_mut().zip(x[c * CHUNK..].chunks(CHUNK)) {
        let mut acc = 0f32;
        for &v in chunk {
            acc = add(acc, flush(v));
        }
        *o = acc;
    }
}

crate::simd::widest! {
    fn chunk_sums(x: &[f32], out: &mut [f32]) = chunk_sums_body;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_all_follows_the_chunked_order() {
        // 256 copies of 2^-24 then 1.0: in order the chunk sums to 2^-16, then + 1.
        let mut x = vec![f32::EPSILON / 2.0; 256];
        x.push(1.0);
        assert_eq!(sum_all(&x), 1.0 + 256.0 * (f32::EPSILON / 2.0));
        // The naive reverse order loses every tiny term.
        assert_eq!(x.iter().rev().fold(0.0f32, |a, &v| a + v), 1.0);
    }

    #[test]
    fn tiny_sums_flush_with_and_without_cpu_ftz() {
        // column 0: MIN_POSITIVE and a subnormal, both read as 0; column 1: 3*2^-126 - 2^-125 =
        // 2^-126 exactly, flushed to +0; column 2: ordinary.
        let m = f32::MIN_POSITIVE;
        let x = [m, 3.0 * m, 1.0, m / 2.0, -2.0 * m, 2.0 * m];
        for ftz in [false, true] {
            let got = crate::ftz::run_with(ftz, || sum_rows(&x, 2, 3));
            assert_eq!(
                got.map_bits(),
                vec![0.0f32, 0.0, 1.0 + 2.0 * m].map_bits(),
                "ftz={ftz}"
            );
            let all = crate::ftz::run_with(ftz, || sum_all(&[m, m / 4.0, -m / 2.0]));
            assert_eq!(all.to_bits(), 0, "ftz={ftz}");
        }
    }

    trait Bits {
        fn map_bits(&self) -> Vec<u32>;
    }
    impl Bits for Vec<f32> {
        fn map_bits(&self) -> Vec<u32> {
            self.iter().map(|v| v.to_bits()).collect()
        }
    }

    #[test]
    fn sum_rows_is_sequential_per_column() {
        let x = [1e8f32, 1.0, 1.0, 1.0, -1e8, 1.0];
        // column 0: (1e8 + 1) - 1e8 = 0 in f32; column 1: 3.
        assert_eq!(sum_rows(&x, 3, 2), vec![0.0, 3.0]);
    }

    /// Values whose sums depend on the order: random mantissas, magnitudes from 1e-4 to 1e4,
    /// and subnormals.
    fn order_sensitive(len: usize) -> Vec<f32> {
        let mut h = 0x9e37_79b9u32;
        (0..len)
            .map(|i| {
                h ^= h << 13;
                h ^= h >> 17;
                h ^= h << 5;
                let v = (h as f32 / u32::MAX as f32) - 0.5;
                match i % 7 {
                    5 => f32::MIN_POSITIVE * 0.25,
                    e => v * [1e-4, 1e-2, 1.0, 1e2, 1e4, 0.0, 3.0][e],
                }
            })
            .collect()
    }

    /// The chunks' in-order sums, `LANES` side by side in a task (and the tails one by one),
    /// against the plain loop of the module doc's definition, on lengths around every boundary
    /// (chunk, lane group, task) — and the data is such that another order gives other bits.
    #[test]
    fn sum_all_matches_the_plain_chunked_loop() {
        let task = TASK_CHUNKS * CHUNK;
        for len in [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            LANES * CHUNK - 1,
            LANES * CHUNK,
            LANES * CHUNK + 5,
            task - 1,
            task,
            2 * task + 3 * LANES * CHUNK + 77,
        ] {
            let x = order_sensitive(len);
            let chunk_sums: Vec<f32> = x
                .chunks(CHUNK)
                .map(|c| c.iter().fold(0f32, |acc, &v| add(acc, flush(v))))
                .collect();
            let want = chunk_sums.iter().fold(0f32, |t, &p| add(t, p));
            assert_eq!(sum_all(&x).to_bits(), want.to_bits(), "{len} elements");
            if len == 2 * task + 3 * LANES * CHUNK + 77 {
                let reversed = chunk_sums.iter().rev().fold(0f32, |t, &p| add(t, p));
                let flat = x.iter().fold(0f32, |acc, &v| add(acc, flush(v)));
                assert_ne!(
                    want.to_bits(),
                    reversed.to_bits(),
                    "the data must be order-sensitive"
                );
                assert_ne!(
                    want.to_bits(),
                    flat.to_bits(),
                    "the data must be order-sensitive"
                );
            }
        }
    }
}
