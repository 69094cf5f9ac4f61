//! `det_sum_rows` and `det_sum_all` on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{CHUNK, ReduceOps, cpu, gpu};
use crate::seam::cube::{ONE, accumulate_in_blocks, empty, f32_only, grid};
use crate::seam::host::{cpu_backends, dims2, read, upload};
use burn::backend::{Cube, DType, Shape, TensorMetadata, ops::FloatTensorOps, tensor::FloatTensor};
use burn_cubecl::kernel::{into_contiguous, untile};
use burn_cubecl::ops::numeric::zeros_client;

cpu_backends! {
    impl ReduceOps {
        fn det_sum_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
            let device = x.device();
            let (xv, s) = read::<Self>(x);
            let (m, n) = dims2(&s, "det_sum_rows");
            upload::<Self>(cpu::sum_rows(&xv, m, n), Shape::new([1, n]), &device)
        }
        fn det_sum_all(x: FloatTensor<Self>) -> FloatTensor<Self> {
            let device = x.device();
            let (xv, _) = read::<Self>(x);
            upload::<Self>(vec![cpu::sum_all(&xv)], Shape::new([1]), &device)
        }
    }
}

impl ReduceOps for Cube {
    /// One thread per column, rows in launches of `LOOP_BLOCK`, the sums carried between them.
    fn det_sum_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
        f32_only(&x, "det_sum_rows");
        let x = untile(x);
        let [m, n] = x.shape().dims::<2>();
        let shape = Shape::new([1, n]);
        if n == 0 {
            return empty(&x, shape);
        }
        let (count, dim) = grid(&x, n);
        accumulate_in_blocks(&x, shape, m, |acc, out, i0, i1, first| {
            gpu::sum_rows_kernel::launch(
                &out.client,
                count.clone(),
                dim,
                x.clone().into_tensor_arg(),
                acc.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                i0,
                i1,
                ONE,
                first,
            )
        })
    }

    /// Chunks of 256 summed in order (one thread each), then the chunk partials summed in
    /// order: the partials are a `[chunks, 1]` column, summed by `det_sum_rows`.
    fn det_sum_all(x: FloatTensor<Self>) -> FloatTensor<Self> {
        f32_only(&x, "det_sum_all");
        let len = x.shape().num_elements();
        let sum = if len == 0 {
            zeros_client(
                x.client.clone(),
                x.device.clone(),
                Shape::new([1, 1]),
                DType::F32,
            )
        } else {
            let x = into_contiguous(x);
            let chunks = len.div_ceil(CHUNK);
            let partials = empty(&x, Shape::new([chunks, 1]));
            let (count, dim) = grid(&partials, chunks);
            gpu::sum_chunks_kernel::launch(
                &x.client.clone(),
                count,
                dim,
                x.into_tensor_arg(),
                partials.clone().into_tensor_arg(),
                ONE,
            );
            Self::det_sum_rows(partials)
        };
        Self::float_reshape(sum, Shape::new([1]))
    }
}
