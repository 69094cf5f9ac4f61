//! Reductions in one canonical order, the same on every backend.
//!
//! - `sum_rows` (`[m, n] -> [1, n]`, the bias gradient and the batch mean): column `j` is
//!   `acc = 0.0; for i in 0..m { acc = fl(acc + fl(x[i, j])) }` (`fl` = `arith::flush`). CPU: threads split over columns; GPU:
//!   one thread per column, one launch per block of 32768 rows carrying `acc` (lavapipe's loop
//!   cap, `arith::gpu::LOOP_BLOCK`): the same additions in the same order.
//! - `sum_all` (any shape, row-major): chunks of exactly `CHUNK` = 256 consecutive elements, each
//!   summed in order from 0.0 (chunk `c` covers `256c .. min(256c + 256, len)`); then the chunk
//!   partials summed in order from 0.0; every read and every sum flushed as in `sum_rows`. Chunk boundaries depend only on the index, never on the
//!   thread or workgroup count. GPU: one thread per chunk, then the partials as a `[chunks, 1]`
//!   column through `sum_rows`.
//!
//! Backward of both (`backward.rs`): broadcast the incoming gradient (a copy, no arithmetic).

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

pub const CHUNK: usize = 256;

/// The reductions on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for
/// autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait ReduceOps: Backend {
    /// `[m, n] -> [1, n]`, rows in order.
    fn det_sum_rows(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Any shape `-> [1]`, 256-chunks then partials.
    fn det_sum_all(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Column sums `[m, n] -> [1, n]`, rows in order.
pub fn sum_rows(x: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as ReduceOps>::det_sum_rows(x.into_dispatch()))
}

/// Sum of all elements `-> [1]`, in the chunked order.
pub fn sum_all<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as ReduceOps>::det_sum_all(x.into_dispatch()))
}
