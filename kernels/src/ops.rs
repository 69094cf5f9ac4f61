//! The kernel seam: one burn backend extension (`DetOps`) implemented for the CPU backends
//! (ndarray, flex: the `cpu.rs` loops over host memory), for every CubeCL runtime (wgpu: the
//! `gpu.rs` kernels) and for autodiff (custom backward passes built from the same kernels).
//!
//! Tensor-level wrappers at the bottom are what models call; they work on any device, with or
//! without autodiff.

#![allow(deprecated)] // burn's NdArray backend is deprecated upstream in favour of Flex.

use crate::arith::Unary;
use crate::optim::{AdamHyper, Decay, SgdHyper};
use crate::pool::Pool;
use crate::{bias, dropout, im2col, matmul, mul, optim, pool, reduce, softmax, xent};
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, Flex, NdArray, Shape, TensorData, TensorMetadata,
    autodiff::{
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients as AdGrads,
        ops::{Backward, Ops, OpsKind, unary},
    },
    backend_extension,
    ops::FloatTensorOps,
    read_sync,
    tensor::FloatTensor,
};
use burn::tensor::Tensor;

/// lockstep's deterministic ops. Every implementation follows the order in its op's module doc.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait DetOps: Backend {
    /// `[m, k] x [k, n] -> [m, n]`, k in order (`matmul`).
    fn det_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `[m, n] -> [1, n]`, rows in order (`reduce`).
    fn det_sum_rows(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Any shape `-> [1]`, 256-chunks then partials (`reduce`).
    fn det_sum_all(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `[m, n] + [1, n]` (one IEEE add per element); its bias gradient is `det_sum_rows`.
    fn det_add_bias(x: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `a * b` element-wise, same shapes (`mul`).
    fn det_mul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Softmax cross-entropy per row, `[m, c], [m, c] -> [m, 1]` (`xent`).
    fn det_xent(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The gradient of `det_xent` for incoming `g` `[m, 1]` (`xent`).
    fn det_xent_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// Dropout mask shaped like `like` from ChaCha8 key `key`, stream word 0 on (`dropout`).
    fn det_dropout_mask(
        like: &FloatTensor<Self>,
        key: [u32; 8],
        p: f32,
        scale: f32,
    ) -> FloatTensor<Self>;
    /// Element-wise `arith::exp_fixed`.
    fn det_exp(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Element-wise `arith::log_fixed`.
    fn det_log(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Element-wise `arith::sigmoid_fixed`; backward `g * s * (1 - s)`.
    fn det_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Element-wise `arith::tanh_fixed`; backward `g * (1 - t * t)`.
    fn det_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Element-wise `arith::gelu_fixed` (erf GELU); backward multiplies by `det_gelu_grad`.
    fn det_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Element-wise `arith::gelu_grad_fixed`, the derivative of `det_gelu`.
    fn det_gelu_grad(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Element-wise `arith::recip_fixed` (no backward; log's backward multiplies by it).
    fn det_recip(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `[n, c, h, w] -> [n, c, h / k, w / k]`, non-overlapping `k x k` windows (`pool`).
    fn det_pool2d(x: FloatTensor<Self>, k: usize, kind: Pool) -> FloatTensor<Self>;
    /// The gradient of `det_pool2d` with respect to `x` for incoming `dy` (`pool`).
    fn det_pool2d_backward(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        k: usize,
        kind: Pool,
    ) -> FloatTensor<Self>;
    /// Softmax (`log = false`) or log-softmax (`log = true`) of each row of `[m, c]` (`softmax`).
    fn det_softmax(x: FloatTensor<Self>, log: bool) -> FloatTensor<Self>;
    /// The gradient of `det_softmax` from its output `y` and the incoming `dy` (`softmax`).
    fn det_softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        log: bool,
    ) -> FloatTensor<Self>;
    /// One SGD-momentum step: `(w, g, buf) -> (w, buf)` (`optim`). Not differentiable.
    fn det_sgd_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        buf: FloatTensor<Self>,
        hp: SgdHyper,
        decay: Decay,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    /// One Adam / AdamW step: `(w, g, m, v) -> (w, m, v)` (`optim`). Not differentiable.
    fn det_adam_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        hp: AdamHyper,
        decay: Decay,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    /// `[n, c, h, w] -> [n*h*w, c*k*k]`, stride 1, `pad` zeros each side (`im2col`).
    fn det_im2col(x: FloatTensor<Self>, k: usize, pad: usize) -> FloatTensor<Self>;
    /// The gradient of `det_im2col` with respect to its input of shape `dims` (`im2col`).
    fn det_col2im(
        dcols: FloatTensor<Self>,
        dims: [usize; 4],
        k: usize,
        pad: usize,
    ) -> FloatTensor<Self>;
    /// `a * b + c` written plainly, as the device compiles it (the arithmetic-profile probe).
    fn det_probe_mad(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

// ---- CPU backends: host loops over contiguous copies ----------------------------------------

fn host<B: Backend>(t: FloatTensor<B>) -> (Vec<f32>, Shape) {
    let shape = t.shape();
    let data = read_sync(B::float_into_data(t)).expect("reading a CPU tensor cannot fail");
    let v = data.convert::<f32>().into_vec::<f32>().expect("f32 data");
    (v, shape)
}

/// A CPU tensor's values as a row-major `[f32]`: the tensor itself when its storage already is
/// one (no copy), otherwise a contiguous copy.
struct Held<B: HostRead> {
    tensor: Option<FloatTensor<B>>,
    copy: Vec<f32>,
}

impl<B: HostRead> std::ops::Deref for Held<B> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &self.tensor {
            Some(t) => B::view(t).expect("checked when held"),
            None => &self.copy,
        }
    }
}

/// How a CPU backend hands a tensor's values to a host loop.
trait HostRead: Backend {
    /// The storage as row-major f32, when it is exactly that.
    fn view(t: &FloatTensor<Self>) -> Option<&[f32]>;

    /// A row-major copy (any layout).
    fn copy(t: FloatTensor<Self>) -> Vec<f32> {
        host::<Self>(t).0
    }

    fn read(t: FloatTensor<Self>) -> (Held<Self>, Shape) {
        let shape = t.shape();
        let held = if Self::view(&t).is_some() {
            Held {
                tensor: Some(t),
                copy: Vec::new(),
            }
        } else {
            Held {
                tensor: None,
                copy: Self::copy(t),
            }
        };
        (held, shape)
    }
}

impl HostRead for Flex {
    fn view(t: &FloatTensor<Self>) -> Option<&[f32]> {
        t.as_slice::<f32>()
    }
}

/// burn-ndarray's `into_data` walks element by element whenever the array is shared (autodiff
/// keeps a reference to every saved input) or transposed; read the storage directly instead:
/// no copy for row-major arrays, a blocked transpose for transposed 2-D views.
impl HostRead for NdArray {
    fn view(t: &FloatTensor<Self>) -> Option<&[f32]> {
        match t {
            burn::backend::ndarray::NdArrayTensor::F32(storage) => storage.view().to_slice(),
            _ => None,
        }
    }

    fn copy(t: FloatTensor<Self>) -> Vec<f32> {
        let shape = t.shape();
        if let burn::backend::ndarray::NdArrayTensor::F32(storage) = &t {
            let v = storage.view();
            if v.ndim() == 2
                && let Some(s) = v.t().as_slice()
            {
                return transpose(s, shape[1], shape[0]);
            }
            // any permutation of a contiguous array (a conv output viewed as NCHW): walk it
            let strides: Vec<usize> = v
                .strides()
                .iter()
                .filter_map(|&s| usize::try_from(s).ok())
                .collect();
            if strides.len() == v.ndim()
                && let Some(s) = v.to_slice_memory_order()
            {
                let mut out = Vec::with_capacity(v.len());
                gather_strided(s, v.shape(), &strides, 0, &mut out);
                return out;
            }
        }
        host::<Self>(t).0
    }
}

/// Append the elements of the strided view (`shape`, non-negative `strides`, first element at
/// `src[base]`) to `out` in row-major order.
fn gather_strided(
    src: &[f32],
    shape: &[usize],
    strides: &[usize],
    base: usize,
    out: &mut Vec<f32>,
) {
    match shape {
        [] => out.push(src[base]),
        [n] => out.extend((0..*n).map(|i| src[base + i * strides[0]])),
        [n, rest @ ..] => {
            for i in 0..*n {
                gather_strided(src, rest, &strides[1..], base + i * strides[0], out);
            }
        }
    }
}

/// `src` is `[rows, cols]` row-major; returns its `[cols, rows]` transpose, in 32x32 blocks.
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const T: usize = 32;
    let mut out = vec![0f32; rows * cols];
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    out[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
    out
}

fn upload<B: Backend>(v: Vec<f32>, shape: Shape, device: &B::Device) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(v, shape), device)
}

fn host_unary<B: HostRead>(x: FloatTensor<B>, op: Unary) -> FloatTensor<B> {
    let device = x.device();
    let (xv, s) = B::read(x);
    let f = op.cpu();
    upload::<B>(xv.iter().map(|&v| f(v)).collect(), s, &device)
}

fn dims2(s: &Shape, op: &str) -> (usize, usize) {
    assert_eq!(s.num_dims(), 2, "{op}: expected a rank-2 tensor, got {s:?}");
    (s[0], s[1])
}

fn dims4(s: &Shape, op: &str) -> [usize; 4] {
    assert_eq!(s.num_dims(), 4, "{op}: expected a rank-4 tensor, got {s:?}");
    [s[0], s[1], s[2], s[3]]
}

macro_rules! impl_cpu_det_ops {
    ($b:ty) => {
        impl DetOps for $b {
            fn det_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
                let device = a.device();
                let ((av, sa), (bv, sb)) =
                    (<Self as HostRead>::read(a), <Self as HostRead>::read(b));
                let ((m, k), (k2, n)) = (dims2(&sa, "det_matmul"), dims2(&sb, "det_matmul"));
                assert_eq!(k, k2, "det_matmul: inner dims differ: {sa:?} x {sb:?}");
                upload::<Self>(
                    matmul::cpu::matmul(&av, &bv, m, k, n, false),
                    Shape::new([m, n]),
                    &device,
                )
            }
            fn det_sum_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
                let device = x.device();
                let (xv, s) = <Self as HostRead>::read(x);
                let (m, n) = dims2(&s, "det_sum_rows");
                upload::<Self>(
                    reduce::cpu::sum_rows(&xv, m, n),
                    Shape::new([1, n]),
                    &device,
                )
            }
            fn det_sum_all(x: FloatTensor<Self>) -> FloatTensor<Self> {
                let device = x.device();
                let (xv, _) = <Self as HostRead>::read(x);
                upload::<Self>(vec![reduce::cpu::sum_all(&xv)], Shape::new([1]), &device)
            }
            fn det_add_bias(x: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
                let device = x.device();
                let ((xv, s), (bv, _)) = (<Self as HostRead>::read(x), <Self as HostRead>::read(b));
                let (m, n) = dims2(&s, "det_add_bias");
                upload::<Self>(bias::cpu::add_bias(&xv, &bv, m, n), s, &device)
            }
            fn det_mul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
                let device = a.device();
                let ((av, s), (bv, sb)) =
                    (<Self as HostRead>::read(a), <Self as HostRead>::read(b));
                assert_eq!(s, sb, "det_mul: shapes differ");
                upload::<Self>(mul::cpu::mul(&av, &bv), s, &device)
            }
            fn det_xent(
                logits: FloatTensor<Self>,
                targets: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                let device = logits.device();
                let ((xv, s), (tv, _)) = (
                    <Self as HostRead>::read(logits),
                    <Self as HostRead>::read(targets),
                );
                let (m, c) = dims2(&s, "det_xent");
                upload::<Self>(
                    xent::cpu::forward(&xv, &tv, m, c),
                    Shape::new([m, 1]),
                    &device,
                )
            }
            fn det_xent_backward(
                logits: FloatTensor<Self>,
                targets: FloatTensor<Self>,
                g: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                let device = logits.device();
                let ((xv, s), (tv, _), (gv, _)) = (
                    <Self as HostRead>::read(logits),
                    <Self as HostRead>::read(targets),
                    <Self as HostRead>::read(g),
                );
                let (m, c) = dims2(&s, "det_xent_backward");
                upload::<Self>(xent::cpu::backward(&xv, &tv, &gv, m, c), s, &device)
            }
            fn det_dropout_mask(
                like: &FloatTensor<Self>,
                key: [u32; 8],
                p: f32,
                scale: f32,
            ) -> FloatTensor<Self> {
                let shape = like.shape();
                let n = shape.num_elements();
                let mut out = Vec::with_capacity(n);
                let mut blk = 0u64;
                while out.len() < n {
                    for w in dropout::cpu::chacha8_block(&key, blk, 0) {
                        if out.len() < n {
                            let u = (w >> 8) as f32 * dropout::gpu::INV_2_24;
                            out.push(if u >= p { scale } else { 0.0 });
                        }
                    }
                    blk += 1;
                }
                upload::<Self>(out, shape, &like.device())
            }
            fn det_exp(x: FloatTensor<Self>) -> FloatTensor<Self> {
                host_unary::<Self>(x, Unary::Exp)
            }
            fn det_log(x: FloatTensor<Self>) -> FloatTensor<Self> {
                host_unary::<Self>(x, Unary::Log)
            }
            fn det_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self> {
                host_unary::<Self>(x, Unary::Sigmoid)
            }
            fn det_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
                host_unary::<Self>(x, Unary::Tanh)
            }
            fn det_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
                host_unary::<Self>(x, Unary::Gelu)
            }
            fn det_gelu_grad(x: FloatTensor<Self>) -> FloatTensor<Self> {
                host_unary::<Self>(x, Unary::GeluGrad)
            }
            fn det_recip(x: FloatTensor<Self>) -> FloatTensor<Self> {
                host_unary::<Self>(x, Unary::Recip)
            }
            fn det_pool2d(x: FloatTensor<Self>, k: usize, kind: Pool) -> FloatTensor<Self> {
                let device = x.device();
                let (xv, s) = <Self as HostRead>::read(x);
                let [n, c, h, w] = dims4(&s, "det_pool2d");
                upload::<Self>(
                    pool::cpu::forward(&xv, n * c, h, w, k, kind),
                    Shape::new([n, c, h / k, w / k]),
                    &device,
                )
            }
            fn det_pool2d_backward(
                x: FloatTensor<Self>,
                dy: FloatTensor<Self>,
                k: usize,
                kind: Pool,
            ) -> FloatTensor<Self> {
                let device = x.device();
                let ((xv, s), (gv, _)) =
                    (<Self as HostRead>::read(x), <Self as HostRead>::read(dy));
                let [n, c, h, w] = dims4(&s, "det_pool2d_backward");
                upload::<Self>(
                    pool::cpu::backward(&xv, &gv, n * c, h, w, k, kind),
                    s,
                    &device,
                )
            }
            fn det_softmax(x: FloatTensor<Self>, log: bool) -> FloatTensor<Self> {
                let device = x.device();
                let (xv, s) = <Self as HostRead>::read(x);
                let (m, c) = dims2(&s, "det_softmax");
                upload::<Self>(softmax::cpu::forward(&xv, m, c, log), s, &device)
            }
            fn det_softmax_backward(
                y: FloatTensor<Self>,
                dy: FloatTensor<Self>,
                log: bool,
            ) -> FloatTensor<Self> {
                let device = y.device();
                let ((yv, s), (gv, _)) =
                    (<Self as HostRead>::read(y), <Self as HostRead>::read(dy));
                let (m, c) = dims2(&s, "det_softmax_backward");
                upload::<Self>(softmax::cpu::backward(&yv, &gv, m, c, log), s, &device)
            }
            fn det_sgd_step(
                w: FloatTensor<Self>,
                g: FloatTensor<Self>,
                buf: FloatTensor<Self>,
                hp: SgdHyper,
                decay: Decay,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                let device = w.device();
                let (wv, s) = <Self as HostRead>::read(w);
                let ((gv, _), (bv, _)) =
                    (<Self as HostRead>::read(g), <Self as HostRead>::read(buf));
                let (wo, bo) = optim::cpu::sgd(&wv, &gv, &bv, hp, decay);
                (
                    upload::<Self>(wo, s.clone(), &device),
                    upload::<Self>(bo, s, &device),
                )
            }
            fn det_adam_step(
                w: FloatTensor<Self>,
                g: FloatTensor<Self>,
                m: FloatTensor<Self>,
                v: FloatTensor<Self>,
                hp: AdamHyper,
                decay: Decay,
            ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
                let device = w.device();
                let (wv, s) = <Self as HostRead>::read(w);
                let (gv, _) = <Self as HostRead>::read(g);
                let ((mv, _), (vv, _)) = (<Self as HostRead>::read(m), <Self as HostRead>::read(v));
                let (wo, mo, vo) = optim::cpu::adam(&wv, &gv, &mv, &vv, hp, decay);
                (
                    upload::<Self>(wo, s.clone(), &device),
                    upload::<Self>(mo, s.clone(), &device),
                    upload::<Self>(vo, s, &device),
                )
            }
            fn det_im2col(x: FloatTensor<Self>, k: usize, pad: usize) -> FloatTensor<Self> {
                let device = x.device();
                let (xv, s) = <Self as HostRead>::read(x);
                let dims = dims4(&s, "det_im2col");
                let [n, c, h, w] = dims;
                upload::<Self>(
                    im2col::cpu::im2col(&xv, dims, k, pad),
                    Shape::new([n * h * w, c * k * k]),
                    &device,
                )
            }
            fn det_col2im(
                dcols: FloatTensor<Self>,
                dims: [usize; 4],
                k: usize,
                pad: usize,
            ) -> FloatTensor<Self> {
                let device = dcols.device();
                let (gv, _) = <Self as HostRead>::read(dcols);
                upload::<Self>(
                    im2col::cpu::col2im(&gv, dims, k, pad),
                    Shape::new(dims),
                    &device,
                )
            }
            fn det_probe_mad(
                a: FloatTensor<Self>,
                b: FloatTensor<Self>,
                c: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                let device = a.device();
                let ((av, s), (bv, _), (cv, _)) = (
                    <Self as HostRead>::read(a),
                    <Self as HostRead>::read(b),
                    <Self as HostRead>::read(c),
                );
                let out = av
                    .iter()
                    .zip(bv.iter())
                    .zip(cv.iter())
                    .map(|((&a, &b), &c)| a * b + c)
                    .collect();
                upload::<Self>(out, s, &device)
            }
        }
    };
}
impl_cpu_det_ops!(NdArray);
impl_cpu_det_ops!(Flex);

// ---- CubeCL (wgpu and every other cube runtime) ----------------------------------------------

mod cube_host {
    use super::{
        AdamHyper, Decay, Pool, SgdHyper, Unary, bias, dropout, im2col, matmul, mul, optim, pool,
        reduce, softmax, xent,
    };
    use crate::arith::gpu::LOOP_BLOCK;
    use burn::backend::{DType, Shape, TensorMetadata};
    use burn_cubecl::kernel::{into_contiguous, untile};
    use burn_cubecl::ops::numeric::{empty_device_contiguous_dtype, zeros_client};
    use burn_cubecl::tensor::CubeTensor;
    use cubecl::prelude::{CubeCount, CubeDim};

    /// The runtime multiply-by-one that keeps products rounded (crate doc). Never a literal.
    const ONE: f32 = 1.0;

    fn f32_only(t: &CubeTensor, op: &str) {
        assert_eq!(
            t.dtype,
            DType::F32,
            "{op}: lockstep kernels are f32-only, got {:?}",
            t.dtype
        );
    }

    /// f32-checked, contiguous inputs (a copy kernel where needed, no arithmetic).
    fn contiguous<const N: usize>(ts: [CubeTensor; N], op: &str) -> [CubeTensor; N] {
        ts.map(|t| {
            f32_only(&t, op);
            into_contiguous(t)
        })
    }

    fn grid(t: &CubeTensor, units: usize) -> (CubeCount, CubeDim) {
        assert!(units < u32::MAX as usize, "kernel indexing is 32-bit");
        let dim = CubeDim::new_1d(256);
        (
            cubecl::calculate_cube_count_elemwise(&t.client, units, dim),
            dim,
        )
    }

    /// A contiguous f32 output of `shape` beside `like`, and the grid for `units` threads —
    /// `None` when the output is empty (nothing to launch).
    fn output(
        like: &CubeTensor,
        shape: Shape,
        units: usize,
    ) -> (CubeTensor, Option<(CubeCount, CubeDim)>) {
        let empty_out = shape.num_elements() == 0 || units == 0;
        let out = empty(like, shape);
        let g = (!empty_out).then(|| grid(&out, units));
        (out, g)
    }

    fn empty(like: &CubeTensor, shape: Shape) -> CubeTensor {
        empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, DType::F32)
    }

    /// `[lo, hi)` blocks of `0..len` of at most `LOOP_BLOCK`, in order; one empty block for 0.
    fn blocks(len: usize) -> Vec<(u32, u32)> {
        assert!(len < u32::MAX as usize, "kernel indexing is 32-bit");
        let n = len.div_ceil(LOOP_BLOCK).max(1);
        (0..n)
            .map(|b| {
                let lo = b * LOOP_BLOCK;
                (lo as u32, (lo + LOOP_BLOCK).min(len) as u32)
            })
            .collect()
    }

    /// Runs `launch(acc_in, out, lo, hi, first)` for each block of `0..len` in order (`blocks`):
    /// every block writes a fresh `shape` output that the next block reads as its `acc_in`; the
    /// first starts from 0.0 and is handed an unread scratch tensor (a buffer of its own: wgpu
    /// forbids binding one buffer twice when a binding is writable). Returns the last output.
    fn accumulate_in_blocks(
        like: &CubeTensor,
        shape: Shape,
        len: usize,
        launch: impl Fn(CubeTensor, &CubeTensor, u32, u32, bool),
    ) -> CubeTensor {
        let mut acc = empty(like, shape.clone());
        for (i, (lo, hi)) in blocks(len).into_iter().enumerate() {
            let out = empty(like, shape.clone());
            launch(acc, &out, lo, hi, i == 0);
            acc = out;
        }
        acc
    }

    pub fn launch_matmul(a: CubeTensor, b: CubeTensor) -> CubeTensor {
        f32_only(&a, "det_matmul");
        f32_only(&b, "det_matmul");
        let (a, b) = (untile(a), untile(b));
        let ([m, k], [k2, n]) = (a.shape().dims::<2>(), b.shape().dims::<2>());
        assert_eq!(k, k2, "det_matmul: inner dims differ");
        let shape = Shape::new([m, n]);
        if m * n == 0 {
            return empty(&a, shape);
        }
        let (count, dim) = grid(&a, m * n);
        accumulate_in_blocks(&a, shape, k, |acc, out, p0, p1, first| {
            matmul::gpu::matmul_kernel::launch(
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
            )
        })
    }

    pub fn launch_sum_rows(x: CubeTensor) -> CubeTensor {
        f32_only(&x, "det_sum_rows");
        let x = untile(x);
        let [m, n] = x.shape().dims::<2>();
        let shape = Shape::new([1, n]);
        if n == 0 {
            return empty(&x, shape);
        }
        let (count, dim) = grid(&x, n);
        accumulate_in_blocks(&x, shape, m, |acc, out, i0, i1, first| {
            reduce::gpu::sum_rows_kernel::launch(
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
    /// order: the partials are a `[chunks, 1]` column, summed by `launch_sum_rows`.
    pub fn launch_sum_all(x: CubeTensor) -> CubeTensor {
        f32_only(&x, "det_sum_all");
        let len = x.shape().num_elements();
        if len == 0 {
            return zeros_client(
                x.client.clone(),
                x.device.clone(),
                Shape::new([1, 1]),
                DType::F32,
            );
        }
        let x = into_contiguous(x);
        let chunks = len.div_ceil(reduce::CHUNK);
        let partials = empty(&x, Shape::new([chunks, 1]));
        let (count, dim) = grid(&partials, chunks);
        reduce::gpu::sum_chunks_kernel::launch(
            &x.client.clone(),
            count,
            dim,
            x.into_tensor_arg(),
            partials.clone().into_tensor_arg(),
            ONE,
        );
        launch_sum_rows(partials)
    }

    pub fn launch_add_bias(x: CubeTensor, b: CubeTensor) -> CubeTensor {
        let [x, b] = contiguous([x, b], "det_add_bias");
        let shape = x.shape();
        let len = shape.num_elements();
        let (out, grid) = output(&x, shape, len);
        let Some((count, dim)) = grid else {
            return out;
        };
        bias::gpu::add_bias_kernel::launch(
            &out.client,
            count,
            dim,
            x.into_tensor_arg(),
            b.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ONE,
        );
        out
    }

    pub fn launch_mul(a: CubeTensor, b: CubeTensor) -> CubeTensor {
        let [a, b] = contiguous([a, b], "det_mul");
        let shape = a.shape();
        assert_eq!(shape, b.shape(), "det_mul: shapes differ");
        let len = shape.num_elements();
        let (out, grid) = output(&a, shape, len);
        let Some((count, dim)) = grid else {
            return out;
        };
        mul::gpu::mul_kernel::launch(
            &out.client,
            count,
            dim,
            a.into_tensor_arg(),
            b.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ONE,
        );
        out
    }

    pub fn launch_xent(x: CubeTensor, t: CubeTensor) -> CubeTensor {
        let [x, t] = contiguous([x, t], "det_xent");
        let [m, _] = x.shape().dims::<2>();
        let (out, grid) = output(&x, Shape::new([m, 1]), m);
        let Some((count, dim)) = grid else {
            return out;
        };
        xent::gpu::xent_forward_kernel::launch(
            &out.client,
            count,
            dim,
            x.into_tensor_arg(),
            t.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ONE,
        );
        out
    }

    pub fn launch_xent_backward(x: CubeTensor, t: CubeTensor, g: CubeTensor) -> CubeTensor {
        let [x, t, g] = contiguous([x, t, g], "det_xent_backward");
        let shape = x.shape();
        let m = shape[0];
        let (out, grid) = output(&x, shape, m);
        let Some((count, dim)) = grid else {
            return out;
        };
        xent::gpu::xent_backward_kernel::launch(
            &out.client,
            count,
            dim,
            x.into_tensor_arg(),
            t.into_tensor_arg(),
            g.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ONE,
        );
        out
    }

    pub fn launch_dropout_mask(like: &CubeTensor, key: [u32; 8], p: f32, scale: f32) -> CubeTensor {
        let shape = like.shape();
        let len = shape.num_elements();
        let out = empty(like, shape);
        if len == 0 {
            return out;
        }
        let k = dropout::gpu::ChaChaKeyLaunch::new(
            key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7], 0, 0,
        );
        let (count, dim) = grid(&out, len.div_ceil(16));
        dropout::gpu::chacha8_mask_kernel::launch(
            &out.client,
            count,
            dim,
            out.clone().into_tensor_arg(),
            k,
            p,
            scale,
        );
        out
    }

    pub fn launch_probe_mad(a: CubeTensor, b: CubeTensor, c: CubeTensor) -> CubeTensor {
        let [a, b, c] = contiguous([a, b, c], "det_probe_mad");
        let shape = a.shape();
        let len = shape.num_elements();
        let out = empty(&a, shape);
        let (count, dim) = grid(&out, len.max(1));
        crate::arith::gpu::mad_plain_kernel::launch(
            &out.client,
            count,
            dim,
            a.into_tensor_arg(),
            b.into_tensor_arg(),
            c.into_tensor_arg(),
            out.clone().into_tensor_arg(),
        );
        out
    }

    pub fn launch_pool(x: CubeTensor, k: usize, kind: Pool) -> CubeTensor {
        let [x] = contiguous([x], "det_pool2d");
        let [n, c, h, w] = x.shape().dims::<4>();
        assert!(k > 0, "det_pool2d: window 0");
        let shape = Shape::new([n, c, h / k, w / k]);
        let len = shape.num_elements();
        let (out, grid) = output(&x, shape, len);
        let Some((count, dim)) = grid else {
            return out;
        };
        pool::gpu::pool_forward_kernel::launch(
            &out.client,
            count,
            dim,
            x.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            Pool::inv(k),
            ONE,
            k,
            kind.code(),
        );
        out
    }

    pub fn launch_pool_backward(x: CubeTensor, g: CubeTensor, k: usize, kind: Pool) -> CubeTensor {
        let [x, g] = contiguous([x, g], "det_pool2d_backward");
        let shape = x.shape();
        let len = shape.num_elements();
        let (out, grid) = output(&x, shape, len);
        let Some((count, dim)) = grid else {
            return out;
        };
        pool::gpu::pool_backward_kernel::launch(
            &out.client,
            count,
            dim,
            x.into_tensor_arg(),
            g.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            Pool::inv(k),
            ONE,
            k,
            kind.code(),
        );
        out
    }

    pub fn launch_softmax(x: CubeTensor, log: bool) -> CubeTensor {
        let [x] = contiguous([x], "det_softmax");
        let shape = x.shape();
        let [m, _] = shape.dims::<2>();
        let (out, grid) = output(&x, shape, m);
        let Some((count, dim)) = grid else {
            return out;
        };
        softmax::gpu::softmax_forward_kernel::launch(
            &out.client,
            count,
            dim,
            x.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ONE,
            u32::from(log),
        );
        out
    }

    pub fn launch_softmax_backward(y: CubeTensor, g: CubeTensor, log: bool) -> CubeTensor {
        let [y, g] = contiguous([y, g], "det_softmax_backward");
        let shape = y.shape();
        let [m, _] = shape.dims::<2>();
        let (out, grid) = output(&y, shape, m);
        let Some((count, dim)) = grid else {
            return out;
        };
        softmax::gpu::softmax_backward_kernel::launch(
            &out.client,
            count,
            dim,
            y.into_tensor_arg(),
            g.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ONE,
            u32::from(log),
        );
        out
    }

    pub fn launch_sgd(
        w: CubeTensor,
        g: CubeTensor,
        buf: CubeTensor,
        hp: SgdHyper,
        decay: Decay,
    ) -> (CubeTensor, CubeTensor) {
        let [w, g, buf] = contiguous([w, g, buf], "det_sgd_step");
        let shape = w.shape();
        let len = shape.num_elements();
        let (wo, bo) = (empty(&w, shape.clone()), empty(&w, shape));
        if len == 0 {
            return (wo, bo);
        }
        let (count, dim) = grid(&wo, len);
        let [lr, wd, mu] = hp;
        optim::gpu::sgd_kernel::launch(
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

    pub fn launch_adam(
        w: CubeTensor,
        g: CubeTensor,
        m: CubeTensor,
        v: CubeTensor,
        hp: AdamHyper,
        decay: Decay,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
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
        optim::gpu::adam_kernel::launch(
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

    pub fn launch_im2col(x: CubeTensor, k: usize, pad: usize) -> CubeTensor {
        let [x] = contiguous([x], "det_im2col");
        let [n, c, h, w] = x.shape().dims::<4>();
        let shape = Shape::new([n * h * w, c * k * k]);
        let len = shape.num_elements();
        let (out, grid) = output(&x, shape, len);
        let Some((count, dim)) = grid else {
            return out;
        };
        im2col::gpu::im2col_kernel::launch(
            &out.client,
            count,
            dim,
            x.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ONE,
            k,
            pad,
        );
        out
    }

    pub fn launch_col2im(dcols: CubeTensor, dims: [usize; 4], k: usize, pad: usize) -> CubeTensor {
        let [g] = contiguous([dcols], "det_col2im");
        let shape = Shape::new(dims);
        let len = shape.num_elements();
        let (out, grid) = output(&g, shape, len);
        let Some((count, dim)) = grid else {
            return out;
        };
        im2col::gpu::col2im_kernel::launch(
            &out.client,
            count,
            dim,
            g.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ONE,
            k,
            pad,
        );
        out
    }

    pub fn launch_unary(x: CubeTensor, op: Unary) -> CubeTensor {
        let [x] = contiguous(
            [x],
            "det_exp/det_log/det_sigmoid/det_tanh/det_gelu/det_recip",
        );
        let shape = x.shape();
        let len = shape.num_elements();
        let (out, grid) = output(&x, shape, len);
        let Some((count, dim)) = grid else {
            return out;
        };
        crate::arith::gpu::unary_kernel::launch(
            &out.client,
            count,
            dim,
            x.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            ONE,
            op as u32,
        );
        out
    }
}

impl DetOps for burn::backend::Cube {
    fn det_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        cube_host::launch_matmul(a, b)
    }
    fn det_sum_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cube_host::launch_sum_rows(x)
    }
    fn det_sum_all(x: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as FloatTensorOps<Self>>::float_reshape(cube_host::launch_sum_all(x), Shape::new([1]))
    }
    fn det_add_bias(x: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        cube_host::launch_add_bias(x, b)
    }
    fn det_mul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        cube_host::launch_mul(a, b)
    }
    fn det_xent(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        cube_host::launch_xent(logits, targets)
    }
    fn det_xent_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        cube_host::launch_xent_backward(logits, targets, g)
    }
    fn det_dropout_mask(
        like: &FloatTensor<Self>,
        key: [u32; 8],
        p: f32,
        scale: f32,
    ) -> FloatTensor<Self> {
        cube_host::launch_dropout_mask(like, key, p, scale)
    }
    fn det_exp(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cube_host::launch_unary(x, Unary::Exp)
    }
    fn det_log(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cube_host::launch_unary(x, Unary::Log)
    }
    fn det_sigmoid(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cube_host::launch_unary(x, Unary::Sigmoid)
    }
    fn det_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cube_host::launch_unary(x, Unary::Tanh)
    }
    fn det_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cube_host::launch_unary(x, Unary::Gelu)
    }
    fn det_gelu_grad(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cube_host::launch_unary(x, Unary::GeluGrad)
    }
    fn det_recip(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cube_host::launch_unary(x, Unary::Recip)
    }
    fn det_probe_mad(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        cube_host::launch_probe_mad(a, b, c)
    }
    fn det_pool2d(x: FloatTensor<Self>, k: usize, kind: Pool) -> FloatTensor<Self> {
        cube_host::launch_pool(x, k, kind)
    }
    fn det_im2col(x: FloatTensor<Self>, k: usize, pad: usize) -> FloatTensor<Self> {
        cube_host::launch_im2col(x, k, pad)
    }
    fn det_col2im(
        dcols: FloatTensor<Self>,
        dims: [usize; 4],
        k: usize,
        pad: usize,
    ) -> FloatTensor<Self> {
        cube_host::launch_col2im(dcols, dims, k, pad)
    }
    fn det_sgd_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        buf: FloatTensor<Self>,
        hp: SgdHyper,
        decay: Decay,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        cube_host::launch_sgd(w, g, buf, hp, decay)
    }
    fn det_adam_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        hp: AdamHyper,
        decay: Decay,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        cube_host::launch_adam(w, g, m, v, hp, decay)
    }
    fn det_softmax(x: FloatTensor<Self>, log: bool) -> FloatTensor<Self> {
        cube_host::launch_softmax(x, log)
    }
    fn det_softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        log: bool,
    ) -> FloatTensor<Self> {
        cube_host::launch_softmax_backward(y, dy, log)
    }
    fn det_pool2d_backward(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        k: usize,
        kind: Pool,
    ) -> FloatTensor<Self> {
        cube_host::launch_pool_backward(x, dy, k, kind)
    }
}

// ---- Autodiff: backward passes from the same kernels ----------------------------------------

/// An element-wise op's autodiff: `$state` (the op's `input` or `output`) is kept for the
/// backward, which maps the incoming gradient `$g` with `$s` bound to that state.
macro_rules! unary_autodiff {
    ($name:ident, $backward:ident, $state:ident, |$g:ident, $s:ident| $body:expr) => {
        fn $name(x: FloatTensor<Self>) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct $backward;
            impl<B: DetOps> Backward<B, 1> for $backward {
                type State = FloatTensor<B>;
                fn backward(
                    self,
                    ops: Ops<Self::State, 1>,
                    grads: &mut AdGrads,
                    _c: &mut Checkpointer,
                ) {
                    let $s = ops.state;
                    unary::<B, _>(ops.parents, ops.node, grads, |$g| $body);
                }
            }
            match $backward.prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let (state, out) = unary_autodiff!(@keep $state, B::$name, x);
                    prep.finish(state, out)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::$name(x.into_primitive())),
            }
        }
    };
    (@keep output, $f:path, $x:ident) => {{
        let out = $f($x.into_primitive());
        (out.clone(), out)
    }};
    (@keep input, $f:path, $x:ident) => {{
        let xp = $x.primitive().clone();
        (xp.clone(), $f(xp))
    }};
}

/// A two-input op's autodiff that keeps both inputs for the backward, which maps the incoming
/// gradient `$g` to `$da` and `$db` with `$a`, `$b` bound to the inputs (each evaluated only when
/// that input takes part).
macro_rules! binary_autodiff {
    ($name:ident, $backward:ident, |$g:ident, $a:ident, $b:ident| ($da:expr, $db:expr)) => {
        fn $name(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct $backward;
            impl<B: DetOps> Backward<B, 2> for $backward {
                type State = (FloatTensor<B>, FloatTensor<B>);
                fn backward(
                    self,
                    ops: Ops<Self::State, 2>,
                    grads: &mut AdGrads,
                    _c: &mut Checkpointer,
                ) {
                    let [node_a, node_b] = ops.parents;
                    let $g = grads.consume::<B>(&ops.node);
                    let ($a, $b) = ops.state;
                    if let Some(node) = node_a {
                        grads.register::<B>(node.id, $da);
                    }
                    if let Some(node) = node_b {
                        grads.register::<B>(node.id, $db);
                    }
                }
            }
            match $backward
                .prepare::<C>([a.node(), b.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (pa, pb) = (a.primitive().clone(), b.primitive().clone());
                    let out = B::$name(pa.clone(), pb.clone());
                    prep.finish((pa, pb), out)
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(B::$name(a.into_primitive(), b.into_primitive()))
                }
            }
        }
    };
}

impl<B: DetOps, C: CheckpointStrategy> DetOps for Autodiff<B, C> {
    binary_autodiff!(det_matmul, MatmulBackward, |g, a, b| (
        B::det_matmul(g.clone(), B::float_transpose(b)),
        B::det_matmul(B::float_transpose(a), g)
    ));

    fn det_sum_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SumRowsBackward;
        impl<B: DetOps> Backward<B, 1> for SumRowsBackward {
            type State = Shape;
            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut AdGrads,
                _c: &mut Checkpointer,
            ) {
                let shape = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |g| B::float_expand(g, shape));
            }
        }
        match SumRowsBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let shape = x.primitive().shape();
                prep.finish(shape, B::det_sum_rows(x.into_primitive()))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::det_sum_rows(x.into_primitive())),
        }
    }

    fn det_sum_all(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SumAllBackward;
        impl<B: DetOps> Backward<B, 1> for SumAllBackward {
            type State = Shape;
            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut AdGrads,
                _c: &mut Checkpointer,
            ) {
                let shape = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |g| {
                    let ones: Shape = shape.iter().map(|_| 1usize).collect();
                    B::float_expand(B::float_reshape(g, ones), shape)
                });
            }
        }
        match SumAllBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let shape = x.primitive().shape();
                prep.finish(shape, B::det_sum_all(x.into_primitive()))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::det_sum_all(x.into_primitive())),
        }
    }

    fn det_add_bias(x: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AddBiasBackward;
        impl<B: DetOps> Backward<B, 2> for AddBiasBackward {
            type State = ();
            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut AdGrads,
                _c: &mut Checkpointer,
            ) {
                let [node_x, node_b] = ops.parents;
                let g = grads.consume::<B>(&ops.node);
                if let Some(node) = node_b {
                    grads.register::<B>(node.id, B::det_sum_rows(g.clone()));
                }
                if let Some(node) = node_x {
                    grads.register::<B>(node.id, g);
                }
            }
        }
        match AddBiasBackward
            .prepare::<C>([x.node(), b.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish((), B::det_add_bias(x.into_primitive(), b.into_primitive()))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::det_add_bias(x.into_primitive(), b.into_primitive()))
            }
        }
    }

    binary_autodiff!(det_mul, MulBackward, |g, a, b| (
        B::det_mul(g.clone(), b),
        B::det_mul(g, a)
    ));

    fn det_xent(logits: FloatTensor<Self>, targets: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct XentBackward;
        impl<B: DetOps> Backward<B, 1> for XentBackward {
            type State = (FloatTensor<B>, FloatTensor<B>);
            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut AdGrads,
                _c: &mut Checkpointer,
            ) {
                let (x, t) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |g| {
                    B::det_xent_backward(x, t, g)
                });
            }
        }
        let t = targets.primitive().clone();
        match XentBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = logits.primitive().clone();
                let out = B::det_xent(x.clone(), t.clone());
                prep.finish((x, t), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::det_xent(logits.into_primitive(), t)),
        }
    }

    fn det_xent_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        g: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::det_xent_backward(
            logits.into_primitive(),
            targets.into_primitive(),
            g.into_primitive(),
        ))
    }

    fn det_dropout_mask(
        like: &FloatTensor<Self>,
        key: [u32; 8],
        p: f32,
        scale: f32,
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::det_dropout_mask(like.primitive(), key, p, scale))
    }

    // `1 - s` and `1 - t*t` below are stock ops on flushed values in [0, 1]: exact multiples of
    // 2^-24 or more, never subnormal, so they need no flush; the products go through `det_mul`.
    unary_autodiff!(det_sigmoid, SigmoidBackward, output, |g, s| {
        let one_minus = B::float_add_scalar(B::float_neg(s.clone()), 1.0f32.into());
        B::det_mul(g, B::det_mul(s, one_minus))
    });

    unary_autodiff!(det_gelu, GeluBackward, input, |g, x| B::det_mul(
        g,
        B::det_gelu_grad(x)
    ));
    fn det_gelu_grad(x: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::det_gelu_grad(x.into_primitive()))
    }
    fn det_recip(x: FloatTensor<Self>) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::det_recip(x.into_primitive()))
    }

    unary_autodiff!(det_tanh, TanhBackward, output, |g, t| {
        let sq = B::det_mul(t.clone(), t);
        B::det_mul(g, B::float_add_scalar(B::float_neg(sq), 1.0f32.into()))
    });
    fn det_im2col(x: FloatTensor<Self>, k: usize, pad: usize) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Im2colBackward;
        impl<B: DetOps> Backward<B, 1> for Im2colBackward {
            type State = ([usize; 4], usize, usize);
            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut AdGrads,
                _c: &mut Checkpointer,
            ) {
                let (dims, k, pad) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |g| {
                    B::det_col2im(g, dims, k, pad)
                });
            }
        }
        let s = x.shape();
        let dims = [s[0], s[1], s[2], s[3]];
        match Im2colBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish((dims, k, pad), B::det_im2col(x.into_primitive(), k, pad))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::det_im2col(x.into_primitive(), k, pad)),
        }
    }
    fn det_col2im(
        dcols: FloatTensor<Self>,
        dims: [usize; 4],
        k: usize,
        pad: usize,
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::det_col2im(dcols.into_primitive(), dims, k, pad))
    }
    fn det_pool2d(x: FloatTensor<Self>, k: usize, kind: Pool) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct PoolBackward;
        impl<B: DetOps> Backward<B, 1> for PoolBackward {
            type State = (FloatTensor<B>, usize, Pool);
            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut AdGrads,
                _c: &mut Checkpointer,
            ) {
                let (x, k, kind) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |g| {
                    B::det_pool2d_backward(x, g, k, kind)
                });
            }
        }
        match PoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let xp = x.primitive().clone();
                prep.finish((xp.clone(), k, kind), B::det_pool2d(xp, k, kind))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::det_pool2d(x.into_primitive(), k, kind)),
        }
    }
    fn det_softmax(x: FloatTensor<Self>, log: bool) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SoftmaxBackward;
        impl<B: DetOps> Backward<B, 1> for SoftmaxBackward {
            type State = (FloatTensor<B>, bool);
            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut AdGrads,
                _c: &mut Checkpointer,
            ) {
                let (y, log) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |g| {
                    B::det_softmax_backward(y, g, log)
                });
            }
        }
        match SoftmaxBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::det_softmax(x.into_primitive(), log);
                prep.finish((out.clone(), log), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::det_softmax(x.into_primitive(), log)),
        }
    }
    fn det_sgd_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        buf: FloatTensor<Self>,
        hp: SgdHyper,
        decay: Decay,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (w, b) = B::det_sgd_step(
            w.into_primitive(),
            g.into_primitive(),
            buf.into_primitive(),
            hp,
            decay,
        );
        (
            <Self as AutodiffBackend>::from_inner(w),
            <Self as AutodiffBackend>::from_inner(b),
        )
    }
    fn det_adam_step(
        w: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        hp: AdamHyper,
        decay: Decay,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (w, m, v) = B::det_adam_step(
            w.into_primitive(),
            g.into_primitive(),
            m.into_primitive(),
            v.into_primitive(),
            hp,
            decay,
        );
        (
            <Self as AutodiffBackend>::from_inner(w),
            <Self as AutodiffBackend>::from_inner(m),
            <Self as AutodiffBackend>::from_inner(v),
        )
    }
    fn det_softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        log: bool,
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::det_softmax_backward(
            y.into_primitive(),
            dy.into_primitive(),
            log,
        ))
    }
    fn det_pool2d_backward(
        x: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        k: usize,
        kind: Pool,
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::det_pool2d_backward(
            x.into_primitive(),
            dy.into_primitive(),
            k,
            kind,
        ))
    }
    fn det_probe_mad(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::det_probe_mad(
            a.into_primitive(),
            b.into_primitive(),
            c.into_primitive(),
        ))
    }

    unary_autodiff!(det_exp, ExpBackward, output, |g, out| B::det_mul(g, out));

    // d log(x) = g * (1/x) with lockstep's reciprocal: no hardware division (`arith`).
    unary_autodiff!(det_log, LogBackward, input, |g, x| B::det_mul(
        g,
        B::det_recip(x)
    ));
}

// ---- Tensor-level API -----------------------------------------------------------------------

/// `a · b` in the fixed k order.
pub fn matmul(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_matmul(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// Column sums `[m, n] -> [1, n]`, rows in order.
pub fn sum_rows(x: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_sum_rows(x.into_dispatch()))
}

/// Sum of all elements `-> [1]`, in the chunked order.
pub fn sum_all<const D: usize>(x: Tensor<D>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_sum_all(x.into_dispatch()))
}

/// `x + b` with `b` `[1, n]`; the bias gradient uses `sum_rows`.
pub fn add_bias(x: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_add_bias(
        x.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// `a * b` element-wise (same shapes), flushed like every lockstep value (`mul`).
pub fn mul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_mul(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// Per-row softmax cross-entropy `[m, 1]`.
pub fn cross_entropy_nll(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_xent(
        logits.into_dispatch(),
        targets.into_dispatch(),
    ))
}

/// Dropout mask shaped like `like` from a named stream (see `dropout`), made on `like`'s device.
pub fn dropout_mask<const D: usize>(like: &Tensor<D>, seed: u64, name: &str, p: f32) -> Tensor<D> {
    let key = dropout::cpu::key_words(&lockstep_core::seed::stream_key(seed, name));
    let scale = (1.0 / (1.0 - p as f64)) as f32;
    let like = like.clone().into_dispatch();
    Tensor::from_dispatch(<Dispatch as DetOps>::det_dropout_mask(&like, key, p, scale))
}

/// Element-wise `arith::exp_fixed`.
pub fn exp<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_exp(x.into_dispatch()))
}

/// Element-wise `arith::log_fixed`.
pub fn log<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_log(x.into_dispatch()))
}

/// Plain `a * b + c` as the device compiles it (see `profile`).
pub fn probe_mad(a: Tensor<1>, b: Tensor<1>, c: Tensor<1>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_probe_mad(
        a.into_dispatch(),
        b.into_dispatch(),
        c.into_dispatch(),
    ))
}

/// Element-wise `arith::sigmoid_fixed`.
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_sigmoid(x.into_dispatch()))
}

/// Element-wise `arith::tanh_fixed`.
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_tanh(x.into_dispatch()))
}

/// Max pooling over non-overlapping `k x k` windows, ties to the earliest element (`pool`).
pub fn max_pool2d(x: Tensor<4>, k: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_pool2d(
        x.into_dispatch(),
        k,
        Pool::Max,
    ))
}

/// Average pooling over non-overlapping `k x k` windows (`pool`).
pub fn avg_pool2d(x: Tensor<4>, k: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_pool2d(
        x.into_dispatch(),
        k,
        Pool::Avg,
    ))
}

/// Softmax of each row of `[m, c]` (`softmax`).
pub fn softmax(x: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_softmax(x.into_dispatch(), false))
}

/// Log-softmax of each row of `[m, c]` (`softmax`).
pub fn log_softmax(x: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_softmax(x.into_dispatch(), true))
}

/// One fused SGD-momentum step (`optim`): returns the new `(w, buf)`.
pub fn sgd_step(
    w: Tensor<1>,
    g: Tensor<1>,
    buf: Tensor<1>,
    hp: SgdHyper,
    decay: Decay,
) -> (Tensor<1>, Tensor<1>) {
    let (w, b) = <Dispatch as DetOps>::det_sgd_step(
        w.into_dispatch(),
        g.into_dispatch(),
        buf.into_dispatch(),
        hp.map(crate::arith::flush),
        decay,
    );
    (Tensor::from_dispatch(w), Tensor::from_dispatch(b))
}

/// One fused Adam / AdamW step (`optim`): returns the new `(w, m, v)`.
pub fn adam_step(
    w: Tensor<1>,
    g: Tensor<1>,
    m: Tensor<1>,
    v: Tensor<1>,
    hp: AdamHyper,
    decay: Decay,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let (w, m, v) = <Dispatch as DetOps>::det_adam_step(
        w.into_dispatch(),
        g.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        hp.map(crate::arith::flush),
        decay,
    );
    (
        Tensor::from_dispatch(w),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}

/// Element-wise `arith::gelu_fixed` (the erf GELU, as burn's `gelu`).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_gelu(x.into_dispatch()))
}

/// The stride-1 convolution patch matrix `[n, c, h, w] -> [n*h*w, c*k*k]` with `pad` zeros on
/// each side (`im2col`); its backward is the fixed-order gather `col2im`.
pub fn im2col(x: Tensor<4>, k: usize, pad: usize) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as DetOps>::det_im2col(x.into_dispatch(), k, pad))
}
