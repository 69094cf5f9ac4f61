//! CPU reductions in the canonical order (see `reduce`'s module doc).

use super::CHUNK;
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
                *a += v;
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
                acc += v;
            }
            acc
        })
        .collect();
    let mut total = 0f32;
    for p in partials {
        total += p;
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
    fn sum_rows_is_sequential_per_column() {
        let x = [1e8f32, 1.0, 1.0, 1.0, -1e8, 1.0];
        // column 0: (1e8 + 1) - 1e8 = 0 in f32; column 1: 3.
        assert_eq!(sum_rows(&x, 3, 2), vec![0.0, 3.0]);
    }
}
