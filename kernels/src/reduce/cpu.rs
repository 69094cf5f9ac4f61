//! CPU reductions in the canonical order (see `reduce`'s module doc).

use super::CHUNK;
use crate::arith::{add, flush};
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
    out.par_chunks_mut(256).enumerate().for_each(|(c, acc)| {
        let j0 = c * 256;
        for i in 0..m {
            let row = &x[i * n + j0..i * n + j0 + acc.len()];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a = add(*a, flush(v));
            }
        }
    });
    out
}

/// All elements: 256-element chunks summed in order, then the partials in order.
pub fn sum_all(x: &[f32]) -> f32 {
    let partials: Vec<f32> = x
        .par_chunks(CHUNK)
        .map(|chunk| {
            let mut acc = 0f32;
            for &v in chunk {
                acc = add(acc, flush(v));
            }
            acc
        })
        .collect();
    let mut total = 0f32;
    for p in partials {
        total = add(total, p);
    }
    total
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
}
