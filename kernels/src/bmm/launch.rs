//! `det_bmm` on the CPU backends (`cpu.rs`) and on CubeCL (`matmul`'s tiled kernel, one cube
//! layer per batch element, when both output dims are at least 32, else `gpu.rs`: one thread per
//! output; k in launches of `LOOP_BLOCK` steps, the accumulator carried between them).

use super::{BmmOps, cpu, gpu};
use crate::matmul::launch::{tiled, tiled_product};
use crate::seam::cube::{ONE, accumulate_in_blocks, empty, f32_only, grid};
use crate::seam::host::{cpu_backends, dims3, read, upload};
use burn::backend::{Cube, Shape, TensorMetadata, tensor::FloatTensor};
use burn_cubecl::kernel::untile;

cpu_backends! {
    impl BmmOps {
        fn det_bmm(a: FloatTensor<Self>, b: FloatTensor<Self>, fused: bool) -> FloatTensor<Self> {
            let device = a.device();
            let ((av, sa), (bv, sb)) = (read::<Self>(a), read::<Self>(b));
            let ([bt, m, k], [bt2, k2, n]) = (dims3(&sa, "det_bmm"), dims3(&sb, "det_bmm"));
            assert!(bt == bt2 && k == k2, "det_bmm: shapes differ: {sa:?} x {sb:?}");
            let out = cpu::bmm(&av, &bv, bt, m, k, n, fused);
            upload::<Self>(out, Shape::new([bt, m, n]), &device)
        }
    }
}

impl BmmOps for Cube {
    fn det_bmm(a: FloatTensor<Self>, b: FloatTensor<Self>, fused: bool) -> FloatTensor<Self> {
        f32_only(&a, "det_bmm");
        f32_only(&b, "det_bmm");
        let (a, b) = (untile(a), untile(b));
        let ([bt, m, k], [bt2, k2, n]) = (a.shape().dims::<3>(), b.shape().dims::<3>());
        assert!(bt == bt2 && k == k2, "det_bmm: shapes differ");
        let shape = Shape::new([bt, m, n]);
        let units = bt * m * n;
        if units == 0 {
            return empty(&a, shape);
        }
        if tiled(m, n) {
            return tiled_product(&a, &b, shape, (bt, m, k, n), fused);
        }
        let (count, dim) = grid(&a, units);
        accumulate_in_blocks(&a, shape, k, |acc, out, p0, p1, first| {
            gpu::bmm_kernel::launch(
                &out.client,
                count.clone(),
                dim,
                a.clone().into_tensor_arg(),
                b.clone().into_tensor_arg(),
                acc.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                p0,
                p1,
                ONE,
                first,
                fused,
            )
        })
    }
}
