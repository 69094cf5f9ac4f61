//! `to_host`: a tensor's values on the host, row-major, without burn-ndarray's element-by-element
//! walk. Data movement only (no arithmetic, so no tolerance row and no place in `ops!`): the
//! bits read are the bits the tensor holds.
//!
//! burn-ndarray's `into_data` walks an array element by element whenever it is shared (autodiff
//! keeps a reference to what it saved) or not row-major: ~30 ns per element, which made reading
//! back a sharded step's gradients (`train.shards`) cost more than the step. The CPU backends
//! here first take a row-major copy through `seam::host::read` (no copy when the storage already
//! is one), which then reads back as one block; a CubeCL tensor reads back as it is.

mod backward;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `det_row_major` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for
/// autodiff (untracked: a read-back has no gradient).
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait ReadbackOps: Backend {
    /// The same values in a tensor of its own with row-major storage (CPU); `x` itself (GPU).
    fn det_row_major(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `t`'s values, row-major, on the host.
pub fn to_host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    Tensor::<D>::from_dispatch(<Dispatch as ReadbackOps>::det_row_major(t.into_dispatch()))
        .try_into_vec_as::<f32>()
        .expect("a float tensor reads back as f32")
}
