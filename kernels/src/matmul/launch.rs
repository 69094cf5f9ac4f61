//! `det_matmul` on the CPU backends (`cpu.rs`) and on CubeCL (`product`, shared with `bmm`:
//! `gpu.rs`'s tiled kernel when both output dims are at least 32, else one thread per output; k
//! in launches of `LOOP_BLOCK` steps, the accumulator carried between them).

use super::{MatmulOps, cpu, gpu};
use crate::seam::cube::{ONE, accumulate_in_blocks, empty, f32_only, grid};
use crate::seam::host::{cpu_backends, dims2, read_mat, upload};
use burn::backend::{Cube, Shape, TensorMetadata, tensor::FloatTensor};
use burn_cubecl::kernel::untile;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::{CubeCount, CubeDim};

cpu_backends! {
    impl MatmulOps {
        fn det_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>, fused: bool) -> FloatTensor<Self> {
            let device = a.device();
            // Transposed views (the backward's) are read in place.
            let ((av, sa, at), (bv, sb, bt)) = (read_mat::<Self>(a), read_mat::<Self>(b));
            let ((m, k), (k2, n)) = (dims2(&sa, "det_matmul"), dims2(&sb, "det_matmul"));
            assert_eq!(k, k2, "det_matmul: inner dims differ: {sa:?} x {sb:?}");
            let out = cpu::matmul_t((&av, at), (&bv, bt), m, k, n, fused);
            upload::<Self>(out, Shape::new([m, n]), &device)
        }
    }
}

impl MatmulOps for Cube {
    fn det_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>, fused: bool) -> FloatTensor<Self> {
        f32_only(&a, "det_matmul");
        f32_only(&b, "det_matmul");
        let (a, b) = (untile(a), untile(b));
        let ([m, k], [k2, n]) = (a.shape().dims::<2>(), b.shape().dims::<2>());
        assert_eq!(k, k2, "det_matmul: inner dims differ");
        product(&a, &b, Shape::new([m, n]), (1, m, k, n), fused)
    }
}

/// Whether `[m, n]` outputs take the tiled kernel (both dims at least 32: narrower products,
/// such as a convolution's 8 output channels, would leave most of a 64 x 64 tile idle). Either
/// kernel gives the same bits.
fn tiled(m: usize, n: usize) -> bool {
    m >= 32 && n >= 32
}

/// `a · b` on CubeCL: `[m, k] x [k, n]` when `shape` has rank 2 (`batch` 1), else `batch`
/// products of rank-3 operands (`bmm`); the tiled kernel when `tiled(m, n)`, else one thread per
/// output, in launches of `LOOP_BLOCK` k steps. Both kernels give the same bits.
pub(crate) fn product(
    a: &CubeTensor,
    b: &CubeTensor,
    shape: Shape,
    (batch, m, k, n): (usize, usize, usize, usize),
    fused: bool,
) -> CubeTensor {
    let units = batch * m * n;
    if units == 0 {
        return empty(a, shape);
    }
    let batched = shape.num_dims() == 3;
    let tile = tiled(m, n);
    let (count, dim) = if tile {
        tiled_grid(m, n, batch)
    } else {
        grid(a, units)
    };
    accumulate_in_blocks(a, shape, k, |acc, out, p0, p1, first| {
        let args = (
            a.clone().into_tensor_arg(),
            b.clone().into_tensor_arg(),
            acc.into_tensor_arg(),
            out.clone().into_tensor_arg(),
        );
        // Two kernels (different CubeCL functions) with one argument list.
        macro_rules! launch {
            ($kernel:path) => {
                $kernel(
                    &out.client,
                    count.clone(),
                    dim,
                    args.0,
                    args.1,
                    args.2,
                    args.3,
                    p0,
                    p1,
                    ONE,
                    first,
                    fused,
                    batched,
                )
            };
        }
        if tile {
            launch!(gpu::matmul_tiled_kernel::launch)
        } else {
            launch!(gpu::matmul_kernel::launch)
        }
    })
}

/// The tiled kernel's grid: one cube per `TILE x TILE` block of outputs, `batch` deep.
fn tiled_grid(m: usize, n: usize, batch: usize) -> (CubeCount, CubeDim) {
    let blocks = |len: usize| u32::try_from(len.div_ceil(gpu::TILE)).expect("grid fits u32");
    (
        CubeCount::Static(
            blocks(n),
            blocks(m),
            u32::try_from(batch).expect("batch fits u32"),
        ),
        CubeDim::new_2d(gpu::THREADS as u32, gpu::THREADS as u32),
    )
}
