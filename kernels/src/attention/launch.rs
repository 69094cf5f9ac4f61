//! `det_attention` and its backward on the CPU backends (`cpu.rs`) and on CubeCL (the
//! written-out form, `written`: `bmm`'s and `causal`'s kernels and burn's data movement).

use super::{AttentionOps, Dims, cpu};
use crate::bmm::BmmOps;
use crate::causal::CausalOps;
use crate::seam::host::{cpu_backends, dims2, read, upload};
use burn::backend::{Backend, Cube, Shape, Slice, TensorMetadata, tensor::FloatTensor};

cpu_backends! {
    impl AttentionOps {
        fn det_attention(
            qkv: FloatTensor<Self>,
            b: usize,
            nh: usize,
            scale: f32,
            fused: bool,
        ) -> FloatTensor<Self> {
            Self::det_attention_keep(qkv, b, nh, scale, fused).0
        }
        fn det_attention_keep(
            qkv: FloatTensor<Self>,
            b: usize,
            nh: usize,
            scale: f32,
            fused: bool,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            let device = qkv.device();
            let (x, s) = read::<Self>(qkv);
            let (r, c3) = dims2(&s, "det_attention");
            let d = Dims::of(r, c3, b, nh);
            let (y, att) = cpu::forward(&x, d, scale, fused);
            (
                upload::<Self>(y, Shape::new([r, d.c()]), &device),
                upload::<Self>(att, Shape::new([b * nh * d.t, d.t]), &device),
            )
        }
        fn det_attention_backward(
            qkv: FloatTensor<Self>,
            att: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            b: usize,
            nh: usize,
            scale: f32,
            fused: bool,
        ) -> FloatTensor<Self> {
            let device = qkv.device();
            let ((x, s), (a, _), (g, _)) =
                (read::<Self>(qkv), read::<Self>(att), read::<Self>(dy));
            let (r, c3) = dims2(&s, "det_attention_backward");
            let d = Dims::of(r, c3, b, nh);
            upload::<Self>(cpu::backward(&x, &a, &g, d, scale, fused), s, &device)
        }
    }
}

impl AttentionOps for Cube {
    fn det_attention(
        qkv: FloatTensor<Self>,
        b: usize,
        nh: usize,
        scale: f32,
        fused: bool,
    ) -> FloatTensor<Self> {
        written::forward::<Self>(qkv, b, nh, scale, fused).0
    }

    fn det_attention_keep(
        qkv: FloatTensor<Self>,
        b: usize,
        nh: usize,
        scale: f32,
        fused: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        written::forward::<Self>(qkv, b, nh, scale, fused)
    }

    fn det_attention_backward(
        qkv: FloatTensor<Self>,
        att: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        b: usize,
        nh: usize,
        scale: f32,
        fused: bool,
    ) -> FloatTensor<Self> {
        written::backward::<Self>(qkv, att, dy, (b, nh, scale, fused))
    }
}

/// The written-out form on any backend with `bmm` and `causal`: the reshapes, transposes and
/// slices a model would write, and — for the backward — what burn's autodiff runs for them
/// (each slice's gradient assigned into zeros, the three added).
pub(crate) mod written {
    use super::*;

    fn dims<B: Backend>(qkv: &FloatTensor<B>, b: usize, nh: usize) -> Dims {
        let [r, c3] = qkv.shape().dims::<2>();
        Dims::of(r, c3, b, nh)
    }

    fn reshape<B: Backend, const N: usize>(x: FloatTensor<B>, s: [usize; N]) -> FloatTensor<B> {
        B::float_reshape(x, Shape::new(s))
    }

    /// Heads `part*nh..(part+1)*nh` of `[b, 3nh, t, hd]`.
    fn part_slices(d: Dims, part: usize) -> [Slice; 4] {
        [
            Slice::from(0..d.b),
            Slice::from(part * d.nh..(part + 1) * d.nh),
            Slice::from(0..d.t),
            Slice::from(0..d.hd),
        ]
    }

    /// `q`, `k`, `v`, each `[b*nh, t, hd]`.
    fn heads<B: Backend>(qkv: FloatTensor<B>, d: Dims) -> [FloatTensor<B>; 3] {
        let Dims { b, t, nh, hd } = d;
        let x = B::float_swap_dims(reshape::<B, _>(qkv, [b, t, 3 * nh, hd]), 1, 2);
        [0, 1, 2].map(|part| {
            reshape::<B, _>(
                B::float_slice(x.clone(), &part_slices(d, part)),
                [b * nh, t, hd],
            )
        })
    }

    /// `att = causal_softmax(q · kᵀ)`, `[b*nh*t, t]`.
    fn att<B: BmmOps + CausalOps>(
        q: FloatTensor<B>,
        k: FloatTensor<B>,
        d: Dims,
        scale: f32,
        fused: bool,
    ) -> FloatTensor<B> {
        let (bh, t) = (d.b * d.nh, d.t);
        let s = B::det_bmm(q, B::float_swap_dims(k, 1, 2), fused);
        B::det_causal_softmax(reshape::<B, _>(s, [bh * t, t]), scale)
    }

    /// `(y [b*t, c], att [b*nh*t, t])`.
    pub(crate) fn forward<B: BmmOps + CausalOps>(
        qkv: FloatTensor<B>,
        b: usize,
        nh: usize,
        scale: f32,
        fused: bool,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let d = dims::<B>(&qkv, b, nh);
        let [q, k, v] = heads::<B>(qkv, d);
        let att = att::<B>(q, k, d, scale, fused);
        let p = reshape::<B, _>(att.clone(), [b * nh, d.t, d.t]);
        let y = B::det_bmm(p, v, fused);
        let y = B::float_swap_dims(reshape::<B, _>(y, [d.b, nh, d.t, d.hd]), 1, 2);
        (reshape::<B, _>(y, [d.b * d.t, d.c()]), att)
    }

    /// The gradient of `qkv` `[b*t, 3c]`.
    pub(crate) fn backward<B: BmmOps + CausalOps>(
        qkv: FloatTensor<B>,
        att: FloatTensor<B>,
        dy: FloatTensor<B>,
        (b, nh, scale, fused): (usize, usize, f32, bool),
    ) -> FloatTensor<B> {
        let d = dims::<B>(&qkv, b, nh);
        let Dims { t, hd, .. } = d;
        let bh = b * nh;
        let (device, dtype) = (qkv.device(), qkv.dtype());
        let [q, k, v] = heads::<B>(qkv, d);
        let g = reshape::<B, _>(
            B::float_swap_dims(reshape::<B, _>(dy, [b, t, nh, hd]), 1, 2),
            [bh, t, hd],
        );
        let p = reshape::<B, _>(att.clone(), [bh, t, t]);
        let d_att = B::det_bmm(g.clone(), B::float_swap_dims(v, 1, 2), fused);
        let d_v = B::det_bmm(B::float_swap_dims(p, 1, 2), g, fused);
        let ds = B::det_causal_softmax_backward(att, reshape::<B, _>(d_att, [bh * t, t]), scale);
        let ds = reshape::<B, _>(ds, [bh, t, t]);
        let d_q = B::det_bmm(ds.clone(), k, fused);
        let d_k = B::float_swap_dims(B::det_bmm(B::float_swap_dims(q, 1, 2), ds, fused), 1, 2);
        let full = Shape::new([b, 3 * nh, t, hd]);
        let sum = [d_q, d_k, d_v]
            .into_iter()
            .enumerate()
            .map(|(part, g)| {
                let zeros = B::float_zeros(full.clone(), &device, dtype.into());
                B::float_slice_assign(
                    zeros,
                    &part_slices(d, part),
                    reshape::<B, _>(g, [b, nh, t, hd]),
                )
            })
            .reduce(|old, new| B::float_add(new, old))
            .expect("three parts");
        reshape::<B, _>(B::float_swap_dims(sum, 1, 2), [b * t, 3 * d.c()])
    }
}
