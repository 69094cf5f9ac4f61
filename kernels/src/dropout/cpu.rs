//! CPU dropout masks and the ChaCha8 block function the GPU kernel implements.

/// Mask of `len` elements from stream `name` under `seed`, from stream word `first` on (see
/// `dropout`'s module doc).
pub fn mask(seed: u64, name: &str, first: u64, len: usize, p: f32, scale: f32) -> Vec<f32> {
    let key = key_words(&lockstep_core::seed::stream_key(seed, name));
    mask_from_key(&key, first, len, p, scale)
}

/// The same mask from the stream's key words (`key_words`), block by block, starting at stream
/// word `first`: what the CPU backends run (the GPU kernel computes the same blocks, one thread
/// each). `first` is how a shard of a batch draws exactly its rows of the whole batch's mask.
pub fn mask_from_key(key: &[u32; 8], first: u64, len: usize, p: f32, scale: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    let mut blk = first / 16;
    let mut skip = (first % 16) as usize;
    while out.len() < len {
        for w in chacha8_block(key, blk, 0).into_iter().skip(skip) {
            if out.len() < len {
                let u = (w >> 8) as f32 * super::gpu::INV_2_24;
                out.push(if u >= p { scale } else { 0.0 });
            }
        }
        skip = 0;
        blk += 1;
    }
    out
}

/// The 8 little-endian key words of a 32-byte ChaCha key.
pub fn key_words(key: &[u8; 32]) -> [u32; 8] {
    core::array::from_fn(|i| {
        u32::from_le_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]])
    })
}

fn qr(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(16);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(12);
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(8);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(7);
}

/// One ChaCha8 block: 4 double rounds, 64-bit counter in words 12-13, stream id in 14-15.
pub fn chacha8_block(key: &[u32; 8], counter: u64, stream: u64) -> [u32; 16] {
    let init: [u32; 16] = [
        0x6170_7865,
        0x3320_646e,
        0x7962_2d32,
        0x6b20_6574,
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
        stream as u32,
        (stream >> 32) as u32,
    ];
    let mut x = init;
    for _ in 0..4 {
        qr(&mut x, 0, 4, 8, 12);
        qr(&mut x, 1, 5, 9, 13);
        qr(&mut x, 2, 6, 10, 14);
        qr(&mut x, 3, 7, 11, 15);
        qr(&mut x, 0, 5, 10, 15);
        qr(&mut x, 1, 6, 11, 12);
        qr(&mut x, 2, 7, 8, 13);
        qr(&mut x, 3, 4, 9, 14);
    }
    core::array::from_fn(|i| x[i].wrapping_add(init[i]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_core::SeedStream;
    use lockstep_core::seed::stream_key;

    #[test]
    fn block_function_reproduces_the_seed_stream() {
        let key = key_words(&stream_key(42, "dropout/l0/step-7"));
        let mut s = SeedStream::new(42, "dropout/l0/step-7");
        for blk in 0..9u64 {
            for (w, word) in chacha8_block(&key, blk, 0).into_iter().enumerate() {
                assert_eq!(word, s.next_u32(), "block {blk} word {w}");
            }
        }
    }

    #[test]
    fn a_mask_from_word_first_is_that_tail_of_the_stream() {
        let (p, scale) = (0.3f32, 2.0f32);
        for first in [0u64, 1, 15, 16, 17, 37, 160, 1000] {
            let mut s = SeedStream::new(9, "dropout/h.0.mlp.dropout/step-3");
            let want: Vec<f32> = (0..first + 70)
                .map(|_| if s.uniform_f32() >= p { scale } else { 0.0 })
                .skip(first as usize)
                .collect();
            assert_eq!(
                mask(9, "dropout/h.0.mlp.dropout/step-3", first, 70, p, scale),
                want,
                "first {first}"
            );
        }
    }
}
