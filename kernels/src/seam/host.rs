//! The CPU backends (ndarray, flex): their tensors' values handed to the `cpu.rs` loops as
//! row-major `[f32]`, and the loops' results uploaded back.

use burn::backend::{
    Backend, Flex, NdArray, Shape, TensorData, TensorMetadata, read_sync, tensor::FloatTensor,
};

/// Implements an op's trait for both CPU backends from one body, in which `Self` is the backend
/// (a `HostRead`).
macro_rules! cpu_backends {
    (impl $ops:ident { $($body:tt)* }) => {
        impl $ops for ::burn::backend::NdArray {
            $($body)*
        }
        impl $ops for ::burn::backend::Flex {
            $($body)*
        }
    };
}
pub(crate) use cpu_backends;

fn host<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    let data = read_sync(B::float_into_data(t)).expect("reading a CPU tensor cannot fail");
    data.convert::<f32>().into_vec::<f32>().expect("f32 data")
}

/// A CPU tensor's values as a row-major `[f32]`: the tensor itself when its storage already is
/// one (no copy), otherwise a contiguous copy.
pub(crate) struct Held<B: HostRead> {
    tensor: Option<FloatTensor<B>>,
    /// `tensor` is held through `HostRead::view_t` (a transposed view, `read_mat`).
    transposed: bool,
    copy: Vec<f32>,
}

impl<B: HostRead> std::ops::Deref for Held<B> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &self.tensor {
            Some(t) if self.transposed => B::view_t(t).expect("checked when held"),
            Some(t) => B::view(t).expect("checked when held"),
            None => &self.copy,
        }
    }
}

/// How a CPU backend hands a tensor's values to a host loop.
pub(crate) trait HostRead: Backend {
    /// The storage as row-major f32, when it is exactly that.
    fn view(t: &FloatTensor<Self>) -> Option<&[f32]>;

    /// When the tensor (rank >= 2) is a row-major tensor with its last two dims swapped, that
    /// tensor's storage (`[.., c, r]` row-major for a `[.., r, c]` view).
    fn view_t(t: &FloatTensor<Self>) -> Option<&[f32]>;

    /// The storage as row-major f32 to overwrite in place: when it is exactly that and no other
    /// tensor shares it (else `None`, and the op writes a new tensor). Only speed depends on it.
    fn unique_mut(t: &mut FloatTensor<Self>) -> Option<&mut [f32]> {
        let _ = t;
        None
    }

    /// A row-major copy (any layout).
    fn copy(t: FloatTensor<Self>) -> Vec<f32> {
        host::<Self>(t)
    }
}

/// `t`'s values (`Held`) and its shape.
pub(crate) fn read<B: HostRead>(t: FloatTensor<B>) -> (Held<B>, Shape) {
    let shape = t.shape();
    let held = if B::view(&t).is_some() {
        Held {
            tensor: Some(t),
            transposed: false,
            copy: Vec::new(),
        }
    } else {
        Held {
            tensor: None,
            transposed: false,
            copy: B::copy(t),
        }
    };
    (held, shape)
}

/// A matrix operand `[.., r, c]` for the products (`matmul_t`, `bmm_t`): its row-major values
/// (`false`), or — when it is a transposed view of a row-major tensor — that tensor's storage
/// `[.., c, r]` (`true`), read in place. Otherwise a row-major copy.
pub(crate) fn read_mat<B: HostRead>(t: FloatTensor<B>) -> (Held<B>, Shape, bool) {
    if B::view(&t).is_none() && B::view_t(&t).is_some() {
        let shape = t.shape();
        let held = Held {
            tensor: Some(t),
            transposed: true,
            copy: Vec::new(),
        };
        return (held, shape, true);
    }
    let (held, shape) = read(t);
    (held, shape, false)
}

impl HostRead for Flex {
    fn view(t: &FloatTensor<Self>) -> Option<&[f32]> {
        t.as_slice::<f32>()
    }

    fn unique_mut(t: &mut FloatTensor<Self>) -> Option<&mut [f32]> {
        if t.dtype() != burn::tensor::DType::F32 || !t.is_unique() {
            return None;
        }
        let (start, end) = t.layout().contiguous_offsets()?;
        t.try_storage_mut::<f32>()?.get_mut(start..end)
    }

    fn view_t(t: &FloatTensor<Self>) -> Option<&[f32]> {
        if t.dtype() != burn::tensor::DType::F32 {
            return None;
        }
        let layout = t.layout();
        let (dims, strides) = (layout.shape(), layout.strides());
        let d = dims.num_dims();
        if d < 2 {
            return None;
        }
        let (r, c) = (dims[d - 2], dims[d - 1]);
        // The swapped matrix dims, then the outer dims row-major over r*c blocks.
        let mut want = (r * c) as isize;
        let outer_ok = (0..d - 2).rev().all(|i| {
            let ok = dims[i] == 1 || strides[i] == want;
            want *= dims[i] as isize;
            ok
        });
        let inner_ok = (r == 1 || strides[d - 2] == 1) && (c == 1 || strides[d - 1] == r as isize);
        if !(outer_ok && inner_ok) {
            return None;
        }
        let start = layout.start_offset();
        t.storage::<f32>().get(start..start + layout.num_elements())
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

    fn view_t(t: &FloatTensor<Self>) -> Option<&[f32]> {
        match t {
            burn::backend::ndarray::NdArrayTensor::F32(storage) => {
                let mut v = storage.view();
                let d = v.ndim();
                if d < 2 {
                    return None;
                }
                v.swap_axes(d - 2, d - 1);
                v.to_slice()
            }
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
        host::<Self>(t)
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

/// A host loop's result as a tensor of `shape` on `device`.
pub(crate) fn upload<B: Backend>(v: Vec<f32>, shape: Shape, device: &B::Device) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(v, shape), device)
}

pub(crate) fn dims2(s: &Shape, op: &str) -> (usize, usize) {
    assert_eq!(s.num_dims(), 2, "{op}: expected a rank-2 tensor, got {s:?}");
    (s[0], s[1])
}

pub(crate) fn dims3(s: &Shape, op: &str) -> [usize; 3] {
    assert_eq!(s.num_dims(), 3, "{op}: expected a rank-3 tensor, got {s:?}");
    [s[0], s[1], s[2]]
}

pub(crate) fn dims4(s: &Shape, op: &str) -> [usize; 4] {
    assert_eq!(s.num_dims(), 4, "{op}: expected a rank-4 tensor, got {s:?}");
    [s[0], s[1], s[2], s[3]]
}
