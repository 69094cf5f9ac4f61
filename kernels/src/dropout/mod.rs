//! `dropout`: inverted-dropout masks from a named ChaCha8 stream, generated where they are used.
//!
//! Element `i` (row-major) of a mask is word `first + i` of the stream `(seed, name)` of
//! `lockstep_core::seed`: word `w % 16` of ChaCha8 block `w / 16` for `w = first + i`, key = the
//! stream key, stream id 0. `first` is 0 for a whole batch; a shard of the batch passes the index
//! of its first element, so the mask never depends on how the batch was cut. The element is
//! `scale` if `(word >> 8) as f32 * 2^-24 >= p`, else `0.0` — exactly `SeedStream::uniform_f32()
//! >= p`. The CPU version runs the ChaCha8 block function on the host (tested against
//! `rand_chacha`'s stream); the GPU kernel runs it too (one thread per block, 16 words each,
//! integer arithmetic only), so masks are made on the device with the host's bits and never
//! copied.
//! A mask has no gradient (`backward.rs` makes it on the inner backend, untracked).

mod backward;
pub mod cpu;
pub mod gpu;
mod launch;

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::tensor::Tensor;

/// `dropout` on every backend: `launch.rs` for ndarray, flex and CubeCL, `backward.rs` for
/// autodiff.
#[backend_extension(NdArray, Flex, Cube, Autodiff)]
pub trait DropoutOps: Backend {
    /// Dropout mask shaped like `like` from ChaCha8 key `key`, stream word `first` on.
    fn det_dropout_mask(
        like: &FloatTensor<Self>,
        key: [u32; 8],
        first: u64,
        p: f32,
        scale: f32,
    ) -> FloatTensor<Self>;
}

/// Dropout mask shaped like `like` from a named stream, made on `like`'s device; element `i` is
/// stream word `first + i` (a shard of a batch passes the index of its first element in the
/// whole batch's activation, so its mask is exactly its rows of the whole batch's mask).
pub fn dropout_mask<const D: usize>(
    like: &Tensor<D>,
    seed: u64,
    name: &str,
    first: u64,
    p: f32,
) -> Tensor<D> {
    let key = cpu::key_words(&lockstep_core::seed::stream_key(seed, name));
    let scale = (1.0 / (1.0 - p as f64)) as f32;
    let like = like.clone().into_dispatch();
    Tensor::from_dispatch(<Dispatch as DropoutOps>::det_dropout_mask(
        &like, key, first, p, scale,
    ))
}
