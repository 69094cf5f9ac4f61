//! Opening a backend: the device, its thread settings, and the facts recorded in the manifest.
//!
//! burn 0.22 dispatches at run time: one `Device` type, the backend chosen by how it is built.
//! Training uses `device.autodiff()`; evaluation and the optimizer use the plain device.

use crate::TrainError;
use burn::tensor::{Device, DeviceKind};
use lockstep_core::config::{Arith, BackendKind};
use std::collections::BTreeMap;

/// An opened backend and what the manifest should say about it.
#[derive(Clone, Debug)]
pub struct Backend {
    pub kind: BackendKind,
    pub device: Device,
    pub facts: BTreeMap<String, String>,
    /// The start-up probe found lockstep's kernels give the CPU's bits on this device
    /// (`lockstep_kernels::profile`).
    pub lockstep_bitwise: bool,
}

impl Backend {
    /// Say loudly when a lockstep-kernel run lands on a device where those kernels cannot give
    /// the CPU's bits (the probe found fused multiply-adds, or `+ - *` and the flush not behaving
    /// as `lockstep_kernels::arith` assumes, in them).
    pub fn warn_if_not_bitwise(&self, kernels: lockstep_core::config::KernelSet) {
        if kernels == lockstep_core::config::KernelSet::Lockstep && !self.lockstep_bitwise {
            eprintln!(
                "warning: on this device lockstep's kernels do NOT reproduce the CPU's bits (arith.lockstep_mad = {}, arith.optim_exact = {}); this run is deterministic here but will differ from CPU runs of the same config",
                self.facts
                    .get("arith.lockstep_mad")
                    .map_or("?", |s| s.as_str()),
                self.facts
                    .get("arith.optim_exact")
                    .map_or("?", |s| s.as_str()),
            );
        }
    }
}

impl Backend {
    /// Refuse an `fma`-profile job on a device whose `fma` the probe did not find fused
    /// (`arith.lockstep_fma`): lockstep never falls back to two roundings silently, since that
    /// would give other bits than the same config elsewhere.
    pub fn require_arith(&self, arith: Arith) -> Result<(), TrainError> {
        let probed = self
            .facts
            .get("arith.lockstep_fma")
            .map_or("unknown", |s| s.as_str());
        if arith == Arith::Fma && probed != "fused" {
            return Err(TrainError::Backend {
                backend: format!("{:?}", self.kind).to_lowercase(),
                what: format!(
                    "train.arith = \"fma\" needs a fused multiply-add that rounds once, but this device's probe found arith.lockstep_fma = {probed:?} (its fma gives other bits than IEEE's single rounding)"
                ),
                fix: "set train.arith = \"unfused\" (every device gives it), or run on a device whose fma rounds once (every CPU; NVIDIA/AMD GPUs)".into(),
            });
        }
        Ok(())
    }
}

/// Which wgpu adapter to use: `default`, `cpu` (software), `discrete:N`, `integrated:N`, `virtual:N`.
pub fn parse_device_selector(s: &str) -> Option<DeviceKind> {
    let (kind, idx) = s
        .split_once(':')
        .map(|(k, i)| (k, i.parse::<usize>().ok()))
        .unwrap_or((s, Some(0)));
    let idx = idx?;
    Some(match kind {
        "default" => DeviceKind::DefaultDevice,
        "cpu" => DeviceKind::Cpu,
        "discrete" => DeviceKind::DiscreteGpu(idx),
        "integrated" => DeviceKind::IntegratedGpu(idx),
        "virtual" => DeviceKind::VirtualGpu(idx),
        _ => return None,
    })
}

/// Open `kind`. `threads` is recorded (the caller sizes the thread pools before any tensor work,
/// see `configure_threads`). `selector` picks a wgpu adapter.
pub fn open(
    kind: BackendKind,
    threads: usize,
    selector: Option<&str>,
) -> Result<Backend, TrainError> {
    let mut facts = BTreeMap::new();
    let device = match kind {
        BackendKind::Ndarray => {
            #[allow(deprecated)]
            let d = Device::ndarray();
            facts.insert(
                "matmul".into(),
                "matrixmultiply (k order fixed, independent of thread count)".into(),
            );
            d
        }
        BackendKind::Flex => {
            facts.insert("matmul".into(), "gemm (rayon)".into());
            Device::flex()
        }
        BackendKind::Wgpu => {
            let sel = selector.unwrap_or("default");
            let dk = parse_device_selector(sel).ok_or_else(|| TrainError::Backend {
                backend: "wgpu".into(),
                what: format!("--device {sel:?} is not an adapter selector"),
                fix: "use default, cpu, discrete:N, integrated:N or virtual:N".into(),
            })?;
            let found = adapters();
            if !selects(&dk, &found) {
                return Err(TrainError::Backend {
                    backend: "wgpu".into(),
                    what: format!(
                        "--device {sel}: this machine has no such adapter; adapters present: {}",
                        adapter_list(&found)
                    ),
                    fix: if found.is_empty() {
                        "install a Vulkan driver (Debian: apt-get install mesa-vulkan-drivers for the lavapipe software adapter) or use --backend ndarray".into()
                    } else {
                        format!(
                            "pass one of the selectors above (e.g. --device {}) or --device default",
                            found[0].selector
                        )
                    },
                });
            }
            let init = std::panic::catch_unwind(|| {
                Device::wgpu_options()
                    .device_kind(dk.clone())
                    .init_with_setup()
            });
            let (device, setup) = match init {
                Ok(Ok(x)) => x,
                // Initialised earlier in this process (library use): the adapter works, but its
                // driver facts can no longer be queried.
                Ok(Err(burn::tensor::wgpu::WgpuInitError::Registration { .. })) => {
                    facts.insert(
                        "adapter".into(),
                        "(runtime initialised earlier in this process)".into(),
                    );
                    let device = Device::wgpu(dk);
                    return Ok(finish(kind, device, threads, facts));
                }
                Ok(Err(e)) => {
                    return Err(no_adapter(format!(
                        "--device {sel} failed to initialise: {e}; adapters present: {}",
                        adapter_list(&found)
                    )));
                }
                Err(_) => {
                    return Err(no_adapter(format!(
                        "--device {sel}: the adapter request panicked; adapters present: {}",
                        adapter_list(&found)
                    )));
                }
            };
            let info = setup.adapter.get_info();
            facts.insert("adapter".into(), info.name.clone());
            facts.insert("vendor".into(), format!("0x{:04x}", info.vendor));
            facts.insert("device_id".into(), format!("0x{:04x}", info.device));
            facts.insert("device_type".into(), format!("{:?}", info.device_type));
            facts.insert("driver".into(), info.driver.clone());
            facts.insert("driver_info".into(), info.driver_info.clone());
            facts.insert("api".into(), format!("{:?}", info.backend));
            device
        }
    };
    Ok(finish(kind, device, threads, facts))
}

fn finish(
    kind: BackendKind,
    device: Device,
    threads: usize,
    mut facts: BTreeMap<String, String>,
) -> Backend {
    facts.insert("threads".into(), threads.to_string());
    facts.insert("cpu".into(), cpu_model());
    {
        use burn::backend::Backend as _;
        facts.insert(
            "runtime".into(),
            burn::backend::Dispatch::name(device.as_dispatch()),
        );
    }
    let profile = lockstep_kernels::profile::probe(&device);
    facts.extend(profile.facts());
    Backend {
        lockstep_bitwise: profile.lockstep_bitwise(),
        kind,
        device,
        facts,
    }
}

/// One wgpu adapter this machine has, with the `--device` selector that picks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterEntry {
    pub selector: String,
    pub name: String,
    pub device_type: String,
    pub driver: String,
    pub api: String,
}

/// The adapters cubecl would choose from: those of Vulkan when Vulkan has any (cubecl's `Auto`
/// means Vulkan wherever it exists), else those of every other API. Asked through a wgpu
/// instance of our own, before any device is handed to burn, so a bad selector is an error
/// listing what exists instead of a panic on cubecl's device thread.
pub fn adapters() -> Vec<AdapterEntry> {
    use burn::tensor::wgpu::wgpu;
    let list = |backends: wgpu::Backends| -> Vec<wgpu::AdapterInfo> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        block_on(instance.enumerate_adapters(backends))
            .iter()
            .map(wgpu::Adapter::get_info)
            .collect()
    };
    let found = std::panic::catch_unwind(|| {
        let vk = list(wgpu::Backends::VULKAN);
        if vk.is_empty() {
            list(wgpu::Backends::all())
        } else {
            vk
        }
    })
    .unwrap_or_default();
    let mut counts = BTreeMap::<&str, usize>::new();
    found
        .iter()
        .map(|info| {
            let kind = match info.device_type {
                wgpu::DeviceType::DiscreteGpu => "discrete",
                wgpu::DeviceType::IntegratedGpu => "integrated",
                wgpu::DeviceType::VirtualGpu => "virtual",
                wgpu::DeviceType::Cpu => "cpu",
                wgpu::DeviceType::Other => "other",
            };
            let n = counts.entry(kind).or_default();
            let selector = match kind {
                "cpu" if *n == 0 => "cpu".to_string(),
                "other" => format!("(no selector: {kind} adapter {n})"),
                _ => format!("{kind}:{n}"),
            };
            *n += 1;
            AdapterEntry {
                selector,
                name: info.name.clone(),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info),
                api: format!("{:?}", info.backend),
            }
        })
        .collect()
}

/// Whether `sel` names one of `found` (`default` names the first).
fn selects(sel: &DeviceKind, found: &[AdapterEntry]) -> bool {
    let want = match sel {
        DeviceKind::DefaultDevice => return !found.is_empty(),
        DeviceKind::Cpu => "cpu".to_string(),
        DeviceKind::DiscreteGpu(i) => format!("discrete:{i}"),
        DeviceKind::IntegratedGpu(i) => format!("integrated:{i}"),
        DeviceKind::VirtualGpu(i) => format!("virtual:{i}"),
        _ => return true,
    };
    found.iter().any(|a| a.selector == want)
}

fn adapter_list(found: &[AdapterEntry]) -> String {
    if found.is_empty() {
        return "none".into();
    }
    found
        .iter()
        .map(|a| {
            format!(
                "\n    --device {:<12} {} ({}, {}, {})",
                a.selector, a.name, a.device_type, a.api, a.driver
            )
        })
        .collect()
}

/// Poll a future that wgpu resolves without waiting (native adapter enumeration).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

fn no_adapter(detail: String) -> TrainError {
    TrainError::Backend {
        backend: "wgpu".into(),
        what: format!("no usable GPU/Vulkan adapter ({detail})"),
        fix: "install a Vulkan driver (Debian: apt-get install mesa-vulkan-drivers for the lavapipe software adapter) or use --backend ndarray".into(),
    }
}

/// Whether a wgpu adapter works in this process (used by tests to skip loudly when there is
/// none). Computed once: a small tensor round trip on the default adapter.
pub fn wgpu_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::panic::catch_unwind(|| {
            let d = Device::wgpu(DeviceKind::DefaultDevice);
            burn::tensor::Tensor::<1>::zeros([1], &d)
                .try_into_vec_as::<f32>()
                .is_ok()
        })
        .unwrap_or(false)
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The largest thread count `configure_threads` accepts on a machine with `cores` cores: 4 per
/// core, at least 64 (enough to exercise thread-count invariance anywhere), at most
/// `MAX_THREADS`. Oversubscribing further only adds overhead (1024 threads on 2 cores made a
/// 1-second job take minutes), and at 100000 the OS fails to start them.
pub fn max_threads(cores: usize) -> usize {
    (4 * cores).clamp(64, lockstep_core::config::MAX_THREADS)
}

/// Stack size of each pool thread (the standard library's default for spawned threads).
const POOL_STACK: usize = 2 << 20;

/// Address space one pool thread takes beyond its stack: guard page, signal stack, TLS and
/// slack, rounded up generously.
const POOL_THREAD_EXTRA: usize = 256 << 10;

/// `Some(reason)` when `threads` pool threads' stacks would not fit in the address space left
/// under the process's `RLIMIT_AS` (read from `/proc/self/limits` and `/proc/self/status`);
/// `None` when they fit, the limit is unlimited, or the files are unreadable (not Linux).
fn address_space_shortfall(threads: usize) -> Option<String> {
    // Word `at` of the line of `file` that starts with `key`, as a number.
    let field = |file: &str, key: &str, at: usize| -> Option<u64> {
        let text = std::fs::read_to_string(file).ok()?;
        let line = text.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(at)?.parse().ok()
    };
    // "Max address space  <soft> <hard> bytes" ("unlimited" does not parse: no limit).
    let limit = field("/proc/self/limits", "Max address space", 3)?;
    let used = field("/proc/self/status", "VmSize:", 1)? * 1024;
    let need = threads as u64 * (POOL_STACK + POOL_THREAD_EXTRA) as u64;
    let left = limit.saturating_sub(used);
    (need > left).then(|| {
        format!(
            "their stacks need {} MiB of address space and only {} MiB is left under this process's limit of {} MiB (RLIMIT_AS, `ulimit -v`)",
            need >> 20,
            left >> 20,
            limit >> 20
        )
    })
}

/// Size the CPU thread pools. Must run before any tensor work, on the thread that will train
/// (it becomes worker 0 of the pool); `0`: one thread per core.
/// Rayon (ndarray element-wise ops, flex, the lockstep kernels' CPU loops) gets `threads`;
/// matrixmultiply (ndarray's stock matmul) reads `MATMUL_NUM_THREADS`, which the binary sets
/// before calling this. Under `LOCKSTEP_CPU_FTZ=1` this thread and every pool thread run with
/// the CPU's flush-to-zero and denormals-are-zero modes on (`lockstep_kernels::ftz`).
pub fn configure_threads(threads: usize) -> Result<(), TrainError> {
    lockstep_kernels::heap::keep_freed_memory();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let most = max_threads(cores);
    if threads > most {
        return Err(TrainError::Backend {
            backend: "cpu".into(),
            what: format!(
                "--threads / train.threads {threads} is more than {most}, the most lockstep starts on this machine ({cores} cores: 4 per core, at least 64, at most {})",
                lockstep_core::config::MAX_THREADS
            ),
            fix: format!(
                "use 0 (all cores) or at most {most}: the bits never depend on the thread count, and past {cores} threads only add overhead"
            ),
        });
    }
    let ftz = lockstep_kernels::ftz::requested();
    if ftz && !lockstep_kernels::ftz::set_this_thread(true) {
        return Err(TrainError::Backend {
            backend: "cpu".into(),
            what: format!(
                "{}=1 asks for flush-to-zero, which this CPU architecture has no control for",
                lockstep_kernels::ftz::ENV
            ),
            fix: format!("unset {}", lockstep_kernels::ftz::ENV),
        });
    }
    let cannot = |e: String| {
        TrainError::Backend {
        backend: "cpu".into(),
        what: format!("cannot start a pool of {threads} threads: {e}"),
        fix: "use fewer --threads / train.threads (0 = all cores), or raise the process's thread and memory limits".into(),
    }
    };
    // Refuse up front when the stacks cannot fit under the address-space limit: a thread that
    // the OS creates but cannot finish setting up (its signal stack, its TLS) aborts the whole
    // process inside the standard library, which no error path here can catch.
    if let Some(short) = address_space_shortfall(if threads > 0 { threads } else { cores }) {
        return Err(cannot(short));
    }
    // The calling thread (the one that trains) is worker 0 of the pool: a kernel's parallel loop
    // then starts on it directly instead of being handed to a sleeping pool thread and waited
    // for (measured on the GPT config: 30% more steps/s; the bits never depend on threads).
    let mut pool = rayon::ThreadPoolBuilder::new()
        .stack_size(POOL_STACK)
        .use_current_thread();
    if threads > 0 {
        pool = pool.num_threads(threads);
    }
    // Every pool thread reports in once started; a thread the OS could not set up (out of
    // memory, a process limit) never does, and rayon would then wait for it forever.
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    pool = pool.start_handler(move |_| {
        if ftz {
            lockstep_kernels::ftz::set_this_thread(true);
        }
        STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    if let Err(e) = pool.build_global() {
        // An earlier call (a library user's second run) already sized the global pool: with
        // no thread count or FTZ asked for, the existing pool serves as well.
        if threads == 0 && !ftz {
            return Ok(());
        }
        return Err(cannot(e.to_string()));
    }
    // Every thread but this one (worker 0, which runs no start handler) reports in.
    let want = rayon::current_num_threads().saturating_sub(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while STARTED.load(std::sync::atomic::Ordering::SeqCst) < want {
        if std::time::Instant::now() > deadline {
            return Err(cannot(format!(
                "only {} of {want} started within 60 s",
                STARTED.load(std::sync::atomic::Ordering::SeqCst)
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(())
}
