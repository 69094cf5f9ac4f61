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
pub(crate) trait HostRead: Backend {
    /// The storage as row-major f32, when it is exactly that.
    fn view(t: &FloatTensor<Self>) -> Option<&[f32]>;

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
            copy: Vec::new(),
        }
    } else {
        Held {
            tensor: None,
            copy: B::copy(t),
        }
    };
    (held, shape)
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
