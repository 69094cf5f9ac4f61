//! `det_row_major` on the CPU backends (a row-major copy when the storage is not one) and on
//! CubeCL (the tensor itself: its read-back is a buffer copy already).

use super::ReadbackOps;
use crate::seam::host::{cpu_backends, read, upload};
use burn::backend::{Cube, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl ReadbackOps {
        fn det_row_major(x: FloatTensor<Self>) -> FloatTensor<Self> {
            let device = x.device();
            let (xv, s) = read::<Self>(x);
            upload::<Self>(xv.to_vec(), s, &device)
        }
    }
}

impl ReadbackOps for Cube {
    fn det_row_major(x: FloatTensor<Self>) -> FloatTensor<Self> {
        x
    }
}
