//! `dropout`: inverted-dropout masks from a named ChaCha8 stream, generated where they are used.
//!
//! Element `i` (row-major) of a mask is word `i` of the stream `(seed, name)` of
//! `lockstep_core::seed`: word `i % 16` of ChaCha8 block `i / 16`, key = the stream key, stream
//! id 0. The element is `scale` if `(word >> 8) as f32 * 2^-24 >= p`, else `0.0` — exactly
//! `SeedStream::uniform_f32() >= p`. The CPU version draws from `rand_chacha` itself; the GPU
//! kernel runs the ChaCha8 block function (one thread per block, 16 words each, integer
//! arithmetic only), so masks are made on the device with the host's bits and never copied.

pub mod cpu;
pub mod gpu;
