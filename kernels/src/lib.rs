//! lockstep-kernels: deterministic kernels, one folder per op, the CPU version and the GPU
//! kernel side by side. Each op's module doc states its exact arithmetic order, which is the
//! same on every backend and independent of thread count, workgroup count and device.
