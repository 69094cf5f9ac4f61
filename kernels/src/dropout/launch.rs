//! `det_dropout_mask` on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`: one thread per
//! ChaCha8 block of 16 elements).

use super::{DropoutOps, cpu, gpu};
use crate::seam::cube::{empty, grid};
use crate::seam::host::{cpu_backends, upload};
use burn::backend::{Cube, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl DropoutOps {
        fn det_dropout_mask(
            like: &FloatTensor<Self>,
            key: [u32; 8],
            first: u64,
            p: f32,
            scale: f32,
        ) -> FloatTensor<Self> {
            let shape = like.shape();
            let mask = cpu::mask_from_key(&key, first, shape.num_elements(), p, scale);
            upload::<Self>(mask, shape, &like.device())
        }
    }
}

impl DropoutOps for Cube {
    fn det_dropout_mask(
        like: &FloatTensor<Self>,
        key: [u32; 8],
        first: u64,
        p: f32,
        scale: f32,
    ) -> FloatTensor<Self> {
        let shape = like.shape();
        let len = shape.num_elements();
        let out = empty(like, shape);
        if len == 0 {
            return out;
        }
        let counter = first / 16;
        let skip = (first % 16) as u32;
        let k = gpu::ChaChaKeyLaunch::new(
            key[0],
            key[1],
            key[2],
            key[3],
            key[4],
            key[5],
            key[6],
            key[7],
            counter as u32,
            (counter >> 32) as u32,
        );
        let (count, dim) = grid(&out, (len + skip as usize).div_ceil(16));
        gpu::chacha8_mask_kernel::launch(
            &out.client,
            count,
            dim,
            out.clone().into_tensor_arg(),
            k,
            skip,
            p,
            scale,
        );
        out
    }
}
