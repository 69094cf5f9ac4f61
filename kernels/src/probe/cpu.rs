//! The CPU probe (`probe`'s module doc): plain `a * b + c`, two roundings.

/// `a[i] * b[i] + c[i]` for every element.
pub fn mad_plain(a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
    a.iter()
        .zip(b.iter())
        .zip(c.iter())
        .map(|((&a, &b), &c)| a * b + c)
        .collect()
}
