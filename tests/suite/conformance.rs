//! The conformance suite itself: passes under the declared table, fails a deliberately broken
//! kernel, and flags burn-wgpu's stock reduction defect instead of silently accepting it.

use crate::kernels_bitwise::devices;
use lockstep_train::conformance::{broken_case, cases, failures, run};

fn backends() -> Vec<(String, burn::tensor::Device)> {
    devices()
        .into_iter()
        .map(|(n, d)| (n.to_string(), d))
        .collect()
}

#[test]
fn suite_passes_with_the_declared_table() {
    let rows = run(&cases(), &backends());
    assert!(rows.len() >= 250, "{} rows", rows.len());
    let bad = failures(&rows);
    assert!(
        bad.is_empty(),
        "rows outside the declared tolerance:\n{}",
        lockstep_train::conformance::format_table(&bad.into_iter().cloned().collect::<Vec<_>>())
    );
    // Every lockstep-kernel row is bitwise on every backend.
    assert!(
        rows.iter()
            .filter(|r| r.kernels == "lockstep")
            .all(|r| r.max_ulp == 0 && r.max_abs == 0.0)
    );
}

#[test]
fn a_kernel_with_one_reordered_sum_is_caught() {
    let b = backends();
    let rows = run(&[broken_case(&b[0].1)], &b);
    let others: Vec<_> = rows.iter().filter(|r| r.backend != b[0].0).collect();
    assert!(!others.is_empty());
    for r in others {
        assert!(
            !r.passed && r.known_defect.is_none() && r.mismatches > 0,
            "broken kernel passed on {}: {r:?}",
            r.backend
        );
    }
}

#[test]
fn stock_wgpu_sum_defect_is_detected_not_used() {
    let b = backends();
    if !b.iter().any(|(n, _)| n == "wgpu") {
        return; // devices() already failed (CI) or recorded the skip
    }
    let cases: Vec<_> = cases()
        .into_iter()
        .filter(|c| c.op == "sum_dim" && c.shape == "1x1000000")
        .collect();
    let rows = run(&cases, &b);
    let wgpu = rows.iter().find(|r| r.backend == "wgpu").expect("wgpu row");
    assert!(
        !wgpu.passed && wgpu.known_defect.is_some(),
        "the listed sum_dim defect no longer reproduces: {wgpu:?} (update tolerance::KNOWN_DEFECTS)"
    );
}
