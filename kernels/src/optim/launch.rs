//! The optimizer steps on the CPU backends (`cpu.rs`) and on CubeCL (`gpu.rs`).

use super::{AdamHyper, Decay, OptimOps, SgdHyper, cpu, gpu};
use crate::seam::cube::{ONE, contiguous, empty, grid};
use crate::seam::host::{HostRead, cpu_backends, read, upload};
use burn::backend::{Cube, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl OptimOps {
        fn det_sgd_step(
            w: FloatTensor<Self>,
            g: FloatTensor<Self>,
            buf: FloatTensor<Self>,
            hp: SgdHyper,
            decay: Decay,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            let device = w.device();
            let (wv, s) = read::<Self>(w);
            let ((gv, _), (bv, _)) = (read::<Self>(g), read::<Self>(buf));
            let (wo, bo) = cpu::sgd(&wv, &gv, &bv, hp, decay);
            (
                upload::<Self>(wo, s.clone(), &device),
                upload::<Self>(bo, s, &device),
            )
        }
        fn det_adam_step(
            mut w: FloatTensor<Self>,
            g: FloatTensor<Self>,
            mut m: FloatTensor<Self>,
            mut v: FloatTensor<Self>,
            hp: AdamHyper,
            decay: Decay,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            // The optimizer hands over the only references to `w`, `m` and `v` (the training
            // loop moves them in): then they are updated in place, without three new tensors.
            // `g` is held while they are checked, so none that shares its storage is unique.
            let (gv, _) = read::<Self>(g);
            let in_place = match (
                Self::unique_mut(&mut w),
                Self::unique_mut(&mut m),
                Self::unique_mut(&mut v),
            ) {
                (Some(ws), Some(ms), Some(vs))
                    if ws.len() == gv.len() && ms.len() == gv.len() && vs.len() == gv.len() =>
                {
                    cpu::adam_in_place(ws, &gv, ms, vs, hp, decay);
                    true
                }
                _ => false,
            };
            if in_place {
                return (w, m, v);
            }
            let device = w.device();
            let (wv, s) = read::<Self>(w);
            let ((mv, _), (vv, _)) = (read::<Self>(m), read::<Self>(v));
            let (wo, mo, vo) = cpu::adam(&wv, &gv, &mv, &vv, hp, decay);
            (
                upload::<Self>(wo, s.clone(), &device),
                upload::<Self>(mo, s.clone(), &device),
                upload::<Self>(vo, s, &device),
            )
        }
    }
}

impl OptimOps for Cube {
    fn det_sgd_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        buf: FloatTensor<Self>,
        hp: SgdHyper,
        decay: Decay,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [w, g, buf] = contiguous([w, g, buf], "det_sgd_step");
        let shape = w.shape();
        let len = shape.num_elements();
        let (wo, bo) = (empty(&w, shape.clone()), empty(&w, shape));
        if len == 0 {
            return (wo, bo);
        }
        let (count, dim) = grid(&wo, len);
        let [lr, wd, mu] = hp;
        gpu::sgd_kernel::launch(
            &wo.client,
            count,
            dim,
            w.into_tensor_arg(),
            g.into_tensor_arg(),
            buf.into_tensor_arg(),
            wo.clone().into_tensor_arg(),
            bo.clone().into_tensor_arg(),
            lr,
            wd,
            mu,
            ONE,
            decay as u32,
        );
        (wo, bo)
    }

    fn det_adam_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        hp: AdamHyper,
        decay: Decay,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [w, g, m, v] = contiguous([w, g, m, v], "det_adam_step");
        let shape = w.shape();
        let len = shape.num_elements();
        let (wo, mo, vo) = (
            empty(&w, shape.clone()),
            empty(&w, shape.clone()),
            empty(&w, shape),
        );
        if len == 0 {
            return (wo, mo, vo);
        }
        let (count, dim) = grid(&wo, len);
        let [lr, wd, b1, b2, omb1, omb2, c1, c2, eps, lrwd] = hp;
        gpu::adam_kernel::launch(
            &wo.client,
            count,
            dim,
            w.into_tensor_arg(),
            g.into_tensor_arg(),
            m.into_tensor_arg(),
            v.into_tensor_arg(),
            wo.clone().into_tensor_arg(),
            mo.clone().into_tensor_arg(),
            vo.clone().into_tensor_arg(),
            lr,
            wd,
            b1,
            b2,
            omb1,
            omb2,
            c1,
            c2,
            eps,
            lrwd,
            ONE,
            decay as u32,
        );
        (wo, mo, vo)
    }
}
