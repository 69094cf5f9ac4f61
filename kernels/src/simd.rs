//! One loop compiled for the widest x86-64 vector extension the CPU has: speed only, never bits.
//!
//! `widest!` turns a function of plain loops (`#[inline(always)]`, so it is compiled into each
//! copy) into a dispatcher that runs a copy built with AVX-512F where the CPU has it, else one
//! built with AVX2, else the baseline build. The compiler only vectorises what keeps every
//! operation and its order (rustc sets no fast-math flag: no reassociation, no contraction into
//! FMA), so every copy computes the same bits; the wider ones do it in fewer instructions, with
//! `floor`, `min`/`max` and selects inline.

/// `widest! { fn name(args) -> ret = body; }`: `name` calls `body(args)` through the widest copy
/// (module doc).
macro_rules! widest {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked on the line above).
                    #[allow(unsafe_code)]
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked on the line above).
                    #[allow(unsafe_code)]
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use widest;
