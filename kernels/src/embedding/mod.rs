//! `embedding`: rows of a table gathered by token id, `out[r, c] = table[ids[r], c]`, and its
//! backward as a fixed-order segmented sum — never a scatter with atomics.
//!
//! Order (both sides, every backend):
//!
//! - forward: `out[r, c] = fl(+0 + fl(table[ids[r], c]))` — a copy, except that a `-0` entry
//!   comes out `+0` (the `+0 +` makes the gather give exactly what a one-hot row times the table
//!   gives under `matmul`'s order, whose sum starts from `+0`);
//! - backward: for each vocabulary row `v` and column `c`: `acc = +0; for r in positions(v) { acc
//!   = fl(acc + fl(g[r, c])) }; dtable[v, c] = acc`, where `positions(v)` are the rows `r` with
//!   `ids[r] = v` in increasing `r`. `fl` = `arith::flush` after each rounding.
//!
//! Both are bit for bit what `matmul(onehot(ids), table)` and its `dB = onehot(ids)ᵀ · G` give in
//! either arithmetic profile: the skipped terms are products with `0`, i.e. `±0`, and adding `±0`
//! changes no accumulator here (it starts at `+0` and can never become `-0`; `fma(1, g, acc)` is
//! `acc + g` rounded once, as the unfused step) — so switching a model from one-hot matmuls to
//! this op keeps its bits (`tests/suite/gpt_kernels.rs` checks both ways) while costing `C` per
//! token instead of `V * C`.
//!
//! The host builds the segments once per call (`Segments`: the positions sorted by id, stable,
//! and each id's offset into them): CPU threads over vocabulary rows; GPU one thread per
//! `(v, c)` walking its segment in order (per thread at most `N` steps: lavapipe's loop cap
//! allows 65,535 positions per id).

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::{Tensor, TensorData};

/// `embedding` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for
/// autodiff. Integer inputs travel as f32 tensors (exact below 2^24).
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait EmbeddingOps: Backend {
    /// `table` `[V, C]` gathered at `ids` `[N]` -> `[N, C]`; `order` `[N]` and `offsets`
    /// `[V + 1]` are the segments (`Segments`) its backward sums over.
    fn det_embedding(
        table: FloatTensor<Self>,
        ids: FloatTensor<Self>,
        order: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// `g` `[N, C]` summed into `[V, C]` along the segments, in position order.
    fn det_embedding_backward(
        g: FloatTensor<Self>,
        order: FloatTensor<Self>,
        offsets: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// The rows of each id: `order` lists the positions sorted by id (positions increasing within an
/// id), `offsets[v]..offsets[v + 1]` is id `v`'s part of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segments {
    pub order: Vec<usize>,
    pub offsets: Vec<usize>,
}

impl Segments {
    /// Segments of `ids` (each `< vocab`; panics otherwise).
    pub fn new(ids: &[usize], vocab: usize) -> Self {
        let mut offsets = vec![0usize; vocab + 1];
        for &v in ids {
            assert!(
                v < vocab,
                "embedding: id {v} outside a vocabulary of {vocab}"
            );
            offsets[v + 1] += 1;
        }
        for v in 0..vocab {
            offsets[v + 1] += offsets[v];
        }
        let mut next = offsets.clone();
        let mut order = vec![0usize; ids.len()];
        for (r, &v) in ids.iter().enumerate() {
            order[next[v]] = r;
            next[v] += 1;
        }
        Segments { order, offsets }
    }
}

fn f32s(v: &[usize]) -> Vec<f32> {
    v.iter()
        .map(|&x| {
            assert!(x < 1 << 24, "embedding: index {x} is not exact in f32");
            x as f32
        })
        .collect()
}

/// `table[ids[r], :]` for each `r` (`[N, C]`); the table's gradient is the segmented sum.
pub fn embedding(table: Tensor<2>, ids: &[usize]) -> Tensor<2> {
    let device = table.device();
    let [vocab, _] = table.dims();
    let seg = Segments::new(ids, vocab);
    let t1 = |v: Vec<f32>| {
        let n = v.len();
        Tensor::<1>::from_data(TensorData::new(v, [n]), &device).into_dispatch()
    };
    Tensor::from_dispatch(<Dispatch as EmbeddingOps>::det_embedding(
        table.into_dispatch(),
        t1(f32s(ids)),
        t1(f32s(&seg.order)),
        t1(f32s(&seg.offsets)),
    ))
}
