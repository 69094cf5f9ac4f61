//! `det_bmm` on the CPU backends (`cpu.rs`) and on CubeCL (`matmul`'s kernels in their batched
//! form, `matmul::launch::product`: the tiled one, one cube layer per batch element, when both
//! output dims are at least 32, else one thread per output; k in launches of `LOOP_BLOCK` steps,
//! the accumulator carried between them).

use super::{BmmOps, cpu};
use crate::matmul::launch::product;
use crate::seam::cube::f32_only;
use crate::seam::host::{cpu_backends, dims3, read_mat, upload};
use burn::backend::{Cube, Shape, TensorMetadata, tensor::FloatTensor};
use burn_cubecl::kernel::untile;

cpu_backends! {
    impl BmmOps {
        fn det_bmm(a: FloatTensor<Self>, b: FloatTensor<Self>, fused: bool) -> FloatTensor<Self> {
            let device = a.device();
            // Transposed views (`kᵀ`, the backward's) are read in place.
            let ((av, sa, a_t), (bv, sb, b_t)) = (read_mat::<Self>(a), read_mat::<Self>(b));
            let ([bt, m, k], [bt2, k2, n]) = (dims3(&sa, "det_bmm"), dims3(&sb, "det_bmm"));
            assert!(bt == bt2 && k == k2, "det_bmm: shapes differ: {sa:?} x {sb:?}");
            let out = cpu::bmm_t((&av, a_t), (&bv, b_t), bt, (m, k, n), fused);
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
        product(&a, &b, Shape::new([bt, m, n]), (bt, m, k, n), fused)
    }
}
