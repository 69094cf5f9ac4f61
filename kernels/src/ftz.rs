//! `LOCKSTEP_CPU_FTZ=1`: the CPU as a stand-in for a GPU that flushes subnormals.
//!
//! Real GPUs flush f32 subnormal results to zero (FTZ) and read subnormal inputs as zero (DAZ);
//! the CPU keeps them. lockstep's kernels flush in software (`arith`'s module doc), so both must
//! give the same bits — and this switch lets a machine without a GPU check that: it sets the
//! x86-64 MXCSR FTZ and DAZ bits (AArch64: the FPCR FZ bit) on every thread that runs lockstep
//! kernels — the training thread and the rayon pool that ndarray, flex and the kernels' CPU
//! loops share (`lockstep_train::backend::configure_threads` installs `set_this_thread` as the
//! pool's start handler). matrixmultiply's own threads (stock ndarray matmul only) are not
//! covered: no lockstep kernel runs there.

/// The environment variable that turns the switch on (`1`).
pub const ENV: &str = "LOCKSTEP_CPU_FTZ";

/// Whether the environment asks for FTZ/DAZ (`LOCKSTEP_CPU_FTZ=1`).
pub fn requested() -> bool {
    std::env::var(ENV).is_ok_and(|v| v.trim() == "1")
}

/// Turn this thread's flush-to-zero and denormals-are-zero modes on or off. Returns `false`
/// where the CPU has no such control (then nothing changed).
pub fn set_this_thread(on: bool) -> bool {
    imp::set(on)
}

/// Whether this thread currently flushes subnormal results (measured, not read from a flag).
pub fn this_thread_flushes() -> bool {
    let tiny = std::hint::black_box(f32::MIN_POSITIVE);
    let half = std::hint::black_box(0.5f32);
    tiny * half == 0.0
}

/// Run `f` on a two-thread rayon pool whose threads (and so every `par_iter` inside `f`) have
/// FTZ/DAZ `on` or off — the harness of the kernels' "same bits with the switch on and off"
/// tests.
pub fn run_with<R: Send>(on: bool, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .start_handler(move |_| {
            set_this_thread(on);
        })
        .build()
        .expect("a two-thread pool")
        .install(f)
}

#[cfg(target_arch = "x86_64")]
mod imp {
    /// MXCSR bit 15 (FTZ) and bit 6 (DAZ).
    const BITS: u32 = (1 << 15) | (1 << 6);

    #[allow(unsafe_code, deprecated)]
    pub fn set(on: bool) -> bool {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        // SAFETY: reading and writing MXCSR only changes this thread's SSE rounding/flush modes;
        // FTZ and DAZ are defined, supported bits on every x86-64 CPU with SSE2 (all of them).
        unsafe {
            let csr = _mm_getcsr();
            _mm_setcsr(if on { csr | BITS } else { csr & !BITS });
        }
        true
    }
}

#[cfg(target_arch = "aarch64")]
mod imp {
    /// FPCR bit 24 (FZ: flush subnormal inputs and results to zero).
    const FZ: u64 = 1 << 24;

    #[allow(unsafe_code)]
    pub fn set(on: bool) -> bool {
        let mut fpcr: u64;
        // SAFETY: FPCR is this thread's floating-point control register; FZ only changes how
        // subnormals are handled.
        unsafe {
            std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack));
            fpcr = if on { fpcr | FZ } else { fpcr & !FZ };
            std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack));
        }
        true
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod imp {
    pub fn set(_on: bool) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_flushes_and_restores() {
        std::thread::spawn(|| {
            assert!(!this_thread_flushes(), "a fresh thread keeps subnormals");
            assert!(set_this_thread(true));
            assert!(this_thread_flushes());
            // DAZ: a subnormal input reads as zero.
            let s = std::hint::black_box(f32::from_bits(1));
            assert_eq!(s * std::hint::black_box(1024.0f32), 0.0);
            set_this_thread(false);
            assert!(!this_thread_flushes());
        })
        .join()
        .expect("thread");
    }
}
