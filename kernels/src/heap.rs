//! Memory for the CPU kernels: speed, never bits. Fresh output buffers zeroed in parallel
//! (`par_zeroed`) or, for a kernel that writes every element before reading it, not zeroed at
//! all (`par_overwritten`); large arrays read at scattered places on huge pages
//! (`with_huge_pages`); and freed memory kept in the process (glibc's `malloc` only):
//!
//! A training step allocates and frees the same ~100 tensors every step, many over glibc's
//! default 128 KiB `mmap` threshold. glibc then maps each one fresh and unmaps it on free, so
//! every step pays the kernel for page faults, zeroing and TLB shoot-downs (measured on the GPT
//! config: 2.3 s of system time in 30 steps, a third of the run). `keep_freed_memory` raises the
//! `mmap` threshold to glibc's maximum (32 MiB on 64-bit) and stops the heap being trimmed, so
//! freed blocks are reused (0.7 s of system time for the same run). The results are the same bits:
//! only where buffers live changes.

use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Once;

/// A new `len`-element vector built chunk by chunk on the thread pool: chunk `i` (elements
/// `i * chunk ..`, the last one shorter) is zeroed by the task that then runs `f(i, chunk)` on
/// it. The same contents as `vec![0.0; len]` followed by `f` on each `par_chunks_mut(chunk)`,
/// without the serial `memset` a fresh buffer costs before a kernel's parallel loop (it was
/// ~9% of the training thread's time in a GPT step); each chunk is zeroed by the thread that
/// writes it, while it is in that thread's cache.
pub fn par_zeroed(len: usize, chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let [v] = par_zeroed_n::<1>(len, chunk, |i, [c]| f(i, c));
    v
}

/// `par_zeroed` for `N` outputs of the same length, chunk `i` of each handed to one task.
pub fn par_zeroed_n<const N: usize>(
    len: usize,
    chunk: usize,
    f: impl Fn(usize, [&mut [f32]; N]) + Sync,
) -> [Vec<f32>; N] {
    let mut vs: [Vec<f32>; N] = std::array::from_fn(|_| Vec::with_capacity(len));
    {
        let chunk = chunk.max(1);
        let mut lists = vs.each_mut().map(|v| {
            v.spare_capacity_mut()[..len]
                .chunks_mut(chunk)
                .collect::<Vec<_>>()
                .into_iter()
        });
        // Chunk i of every output, side by side.
        let parts: Vec<[&mut [MaybeUninit<f32>]; N]> = (0..len.div_ceil(chunk))
            .map(|_| {
                lists
                    .each_mut()
                    .map(|l| l.next().expect("one chunk per output"))
            })
            .collect();
        parts.into_par_iter().enumerate().for_each(|(i, cs)| {
            let cs = cs.map(|c| {
                for x in c.iter_mut() {
                    x.write(0.0);
                }
                // SAFETY: every element of `c` was just initialised, and `MaybeUninit<f32>`
                // has `f32`'s layout.
                #[allow(unsafe_code)]
                let c = unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) };
                c
            });
            f(i, cs)
        });
    }
    for v in &mut vs {
        // SAFETY: the chunks cover `0..len` and each was initialised above (had a task
        // panicked, the panic would have propagated out of `for_each` before this line).
        #[allow(unsafe_code)]
        unsafe {
            v.set_len(len)
        };
    }
    vs
}

/// `par_zeroed` without the zeros, for a loop that overwrites its whole chunk before it reads
/// any of it (the matmul: its first k block stores every output without loading it). The
/// zeroing pass is a full write of the output through memory when a task's chunk is larger
/// than its cache (a 512-row task of the large MLP's products: 4 MiB), ~2.5% of that step.
///
/// # Safety
///
/// `f(i, chunk)` must write every element of `chunk` before it reads that element: the
/// elements start as whatever the allocator hands out (never read, so never seen).
#[allow(unsafe_code)]
pub(crate) unsafe fn par_overwritten(
    len: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| {
            // SAFETY: `MaybeUninit<f32>` has `f32`'s layout; the caller's `f` writes every
            // element before reading it, so no uninitialised value is ever read.
            #[allow(unsafe_code)]
            let c = unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) };
            f(i, c)
        });
    // SAFETY: the chunks cover `0..len` and `f` wrote every element of each (had a task
    // panicked, the panic would have propagated out of `for_each` before this line).
    #[allow(unsafe_code)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// Raise glibc's `mmap` and trim thresholds (once per process; elsewhere a no-op).
pub fn keep_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(imp::tune);
}

/// A vector with room for `len` elements whose whole 2 MiB pages the OS is asked to back with
/// transparent huge pages when they are first written (Linux: `MADV_HUGEPAGE`; elsewhere, or
/// when refused, an ordinary vector). For large arrays read at scattered places — a training
/// set whose batches pick rows from all over it, where with 4 KiB pages every row read missed
/// the TLB. Speed only: it changes how memory is mapped, never what it holds.
pub fn with_huge_pages(len: usize) -> Vec<f32> {
    let v: Vec<f32> = Vec::with_capacity(len);
    imp::huge_pages(v.as_ptr().cast(), v.capacity() * std::mem::size_of::<f32>());
    v
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::ffi::c_int;

    // glibc <malloc.h>
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    /// glibc's largest accepted `M_MMAP_THRESHOLD` on 64-bit (`DEFAULT_MMAP_THRESHOLD_MAX`).
    const MMAP_MAX: c_int = 32 << 20;

    #[allow(unsafe_code)]
    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    pub(super) fn tune() {
        // SAFETY: `mallopt` only sets allocator parameters; it is thread-safe and any value is
        // accepted or refused (returning 0) without effect on existing allocations.
        #[allow(unsafe_code)]
        unsafe {
            mallopt(M_MMAP_THRESHOLD, MMAP_MAX);
            mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        }
    }

    // <sys/mman.h>
    const MADV_HUGEPAGE: c_int = 14;
    const HUGE: usize = 2 << 20;

    #[allow(unsafe_code)]
    unsafe extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: c_int) -> c_int;
    }

    pub(super) fn huge_pages(at: *const u8, len: usize) {
        let (start, end) = (
            (at as usize).next_multiple_of(HUGE),
            (at as usize + len) / HUGE * HUGE,
        );
        if end > start {
            // SAFETY: `start..end` lies inside one live allocation (the caller's buffer,
            // rounded inwards to whole huge pages); the advice only changes how pages not yet
            // written will be mapped, never a byte's value. A refusal (an older kernel, THP
            // off) returns -1 and changes nothing.
            #[allow(unsafe_code)]
            unsafe {
                madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE);
            }
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn tune() {}
    pub(super) fn huge_pages(_: *const u8, _: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `with_huge_pages` is an empty vector with the room asked for, which holds what is
    /// written to it (the advice changes no value), small or spanning several huge pages.
    #[test]
    fn huge_page_vectors_hold_what_is_written() {
        for len in [0, 3, 5 << 20] {
            let mut v = with_huge_pages(len);
            assert!(v.is_empty() && v.capacity() >= len);
            v.extend((0..len).map(|i| i as f32));
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
        }
    }

    /// `par_zeroed_n` hands each task chunk `i` of every output, zeroed, and returns what the
    /// tasks wrote: the same vectors as `vec![0.0; len]` and a serial loop over the chunks (short
    /// last chunk, empty outputs, chunks the tasks leave untouched included).
    #[test]
    fn par_zeroed_gives_what_the_serial_loop_gives() {
        for (len, chunk) in [(0, 4), (1, 4), (10, 4), (12, 4), (100_003, 1 << 14), (5, 0)] {
            let got = par_zeroed_n::<3>(len, chunk, |i, [a, b, c]| {
                assert!(a.iter().chain(&*b).chain(&*c).all(|&x| x.to_bits() == 0));
                if i % 2 == 0 {
                    for (j, ((a, b), c)) in a.iter_mut().zip(b).zip(c).enumerate() {
                        (*a, *b, *c) = (i as f32, j as f32, -1.0);
                    }
                }
            });
            let mut want = [vec![0f32; len], vec![0f32; len], vec![0f32; len]];
            let size = chunk.max(1);
            for start in (0..len).step_by(size) {
                let i = start / size;
                if i % 2 == 0 {
                    for j in 0..size.min(len - start) {
                        want[0][start + j] = i as f32;
                        want[1][start + j] = j as f32;
                        want[2][start + j] = -1.0;
                    }
                }
            }
            assert_eq!(got, want, "len {len}, chunk {chunk}");
            let one = par_zeroed(len, chunk, |i, a| a.fill(i as f32));
            let serial: Vec<f32> = (0..len).map(|k| (k / size) as f32).collect();
            assert_eq!(one, serial, "par_zeroed, len {len}, chunk {chunk}");
        }
    }
}
