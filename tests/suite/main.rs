//! lockstep's integration suite: one binary, modules named by what they prove.
//!
//! Every determinism claim is checked against a second run, a recorded golden value, or an
//! independent reimplementation — never against the code path under test.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod arith_profiles;
mod artifacts;
mod bad_input;
mod checkpoint_format;
mod config_files;
mod conformance;
mod cross_backend;
mod gpt;
mod gpt_kernels;
mod harness;
mod init_weights;
mod kernels_bitwise;
mod model_api;
mod reference;
mod reliability;
mod reproducibility;
mod seed_streams;
mod subnormals;
mod tracking;
mod verify;
mod workers;
