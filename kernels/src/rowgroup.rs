//! Rows side by side: the CPU row kernels (`layernorm`, `xent`, `causal`) run `GROUP` rows at
//! once, each row's in-order sums in one vector lane. Only speed depends on this; every row keeps its own
//! order.

/// Rows per interleaved group: the `GROUP` independent in-order chains run side by side in the
/// lanes of one vector (the group is transposed into `[c][GROUP]` first, an exact copy).
pub(crate) const GROUP: usize = 8;

/// `[R, c]` rows as `[c][R]` columns in `xt` (resized). Plain loops, no iterator closures, so
/// that it is compiled into its callers' AVX-512 and AVX2 copies (`simd::widest!`).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane `r` of column `j`: constant-bound loops that vectorise
pub(crate) fn columns<const R: usize>(x: &[f32], c: usize, xt: &mut Vec<[f32; R]>) {
    xt.resize(c, [0f32; R]);
    for j in 0..c {
        for r in 0..R {
            xt[j][r] = x[r * c + j];
        }
    }
}
