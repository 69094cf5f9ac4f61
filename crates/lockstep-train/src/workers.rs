//! Data parallelism: shards, workers and the one fixed tree that combines their gradients.
//!
//! A step's batch of `B` samples is cut into `S = train.shards` contiguous shards: shard `s`
//! holds samples `[s * B / S, (s + 1) * B / S)` of the batch (integer division; a full batch's
//! shards are equal, `train.shards` must divide `train.batch_size`, and a short last batch may
//! leave a shard empty). Each shard's forward/backward gives its loss share (its rows' summed
//! loss times `f32(1 / rows of the whole batch)`, so the loss is scaled once, the same way for
//! any worker count) and its gradient (the backward of that share, reduced over the shard's rows
//! in order by the kernels). An empty shard contributes zeros.
//!
//! ```text
//! tree(p_0 .. p_{S-1}):  level by level, pairs (0,1), (2,3), ... are added element-wise with
//!                        lockstep's flushed add (`arith::add`; on a device the `add_bias`
//!                        kernel, the same bits by the arithmetic contract), an odd last one
//!                        moves up unchanged, until one remains
//! ```
//!
//! The tree depends on the shard index only, never on the worker count. Worker `r` of `N` runs
//! the block of shards `[r * S / N, (r + 1) * S / N)` (`N` must divide `S`):
//!
//! - one worker runs the whole tree on its device (no read-back at all);
//! - when the block size `S / N` is a power of two, each block is a complete subtree: a worker
//!   reduces its block on its device and all-gathers one partial (f32 bytes), and every worker
//!   runs the tree's upper levels over the `N` partials on the host;
//! - otherwise every worker all-gathers its block's `S / N` partials and every worker runs the
//!   whole tree on the host.
//!
//! Either way every worker holds the same gradient bits and takes the same optimizer step; MPI
//! only moves bytes (never an MPI reduction, whose order MPI would choose). With `S = 1` there
//! is no tree: the gradient is the batch's, exactly as before shards existed.
//!
//! The [`Transport`] is a byte mover: [`Single`] (one process, no MPI) or the binary's MPI
//! transport (`mpirun -n N lockstep train ...`).

use crate::TrainError;
use std::sync::Arc;

/// Moves bytes between the workers of one job; nothing more (the arithmetic is lockstep's).
pub trait Transport: Send + Sync {
    /// This worker's index, `0..size()`.
    fn rank(&self) -> usize;
    /// How many workers the job has.
    fn size(&self) -> usize;
    /// Every worker's `mine` (all the same length, never 0), concatenated in rank order.
    /// Collective: every worker calls it the same number of times.
    fn all_gather(&self, mine: &[u8]) -> Vec<u8>;
    /// What carries the bytes, for messages (e.g. "Open MPI v4.1.4").
    fn describe(&self) -> String;
    /// End the whole job at once (after this worker failed alone: the others would wait for it
    /// forever). One process: nothing to do, its error ends it.
    fn abort(&self, code: i32) {
        let _ = code;
    }
}

/// One process: the job's only worker.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Transport for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather(&self, mine: &[u8]) -> Vec<u8> {
        mine.to_vec()
    }
    fn describe(&self) -> String {
        "one process".into()
    }
}

/// The workers of a job, as `RunOptions` carries them.
#[derive(Clone)]
pub struct Workers(pub Arc<dyn Transport>);

impl Default for Workers {
    fn default() -> Self {
        Workers(Arc::new(Single))
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Workers({} of {}, {})",
            self.rank(),
            self.size(),
            self.0.describe()
        )
    }
}

impl Workers {
    pub fn rank(&self) -> usize {
        self.0.rank()
    }
    pub fn size(&self) -> usize {
        self.0.size()
    }
    /// Whether this worker writes the run directory (rank 0 does; the others only compute).
    pub fn writes(&self) -> bool {
        self.rank() == 0
    }

    /// Every worker's `mine`, of any lengths, in rank order (two all-gathers: lengths, then
    /// the bytes padded to the longest).
    pub fn all_gather_var(&self, mine: &[u8]) -> Vec<Vec<u8>> {
        let n = self.size();
        if n == 1 {
            return vec![mine.to_vec()];
        }
        let lens: Vec<usize> = self
            .0
            .all_gather(&(mine.len() as u64).to_le_bytes())
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as usize)
            .collect();
        let most = lens.iter().copied().max().unwrap_or(0);
        if most == 0 {
            // Every worker has nothing (no second exchange: MPI refuses empty buffers that share
            // an address, and there is nothing to move).
            return vec![vec![]; n];
        }
        let mut padded = mine.to_vec();
        padded.resize(most, 0);
        let all = self.0.all_gather(&padded);
        all.chunks_exact(most)
            .zip(&lens)
            .map(|(c, &l)| c[..l].to_vec())
            .collect()
    }

    /// Collective check that every worker holds the same `what` (given as `value`, shown in
    /// the error, and hashed): a [`TrainError::Workers`] naming the ranks that differ, on every
    /// worker alike.
    pub fn agree(&self, what: &str, value: &str, fix: &str) -> Result<(), TrainError> {
        if self.size() == 1 {
            return Ok(());
        }
        let all = self.all_gather_var(value.as_bytes());
        let differ: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(_, v)| v.as_slice() != all[0].as_slice())
            .map(|(r, v)| format!("rank {r} has {}", String::from_utf8_lossy(v)))
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(TrainError::Workers {
            what: format!(
                "the {} workers disagree on {what}: rank 0 has {}, {}",
                self.size(),
                String::from_utf8_lossy(&all[0]),
                differ.join(", ")
            ),
            fix: fix.into(),
        })
    }

    /// Collective: `mine`'s value when every worker's result is `Ok`, otherwise an error on
    /// every worker (`all_ok`). One worker: `mine` itself.
    pub fn together<T>(&self, mine: Result<T, TrainError>) -> Result<T, TrainError> {
        match mine {
            Ok(v) => self.all_ok(Ok(())).map(|()| v),
            Err(e) => Err(self.all_ok(Err(e)).expect_err("a failing worker fails all")),
        }
    }

    /// Collective: `Ok` when every worker's `mine` is `Ok`; otherwise, on every worker, the
    /// first failing rank's error (as text, naming the rank).
    pub fn all_ok(&self, mine: Result<(), TrainError>) -> Result<(), TrainError> {
        if self.size() == 1 {
            return mine;
        }
        let text = match &mine {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        let all = self.all_gather_var(text.as_bytes());
        if all.iter().all(|t| *t == all[0]) {
            // The same on every worker: fine, or the same error everywhere (said as is).
            return mine.map_err(|e| TrainError::Everywhere(Box::new(e)));
        }
        match all.iter().position(|t| !t.is_empty()) {
            None => Ok(()),
            Some(r) => Err(TrainError::Workers {
                what: format!(
                    "rank {r} of {} stopped: {}",
                    self.size(),
                    String::from_utf8_lossy(&all[r])
                ),
                fix: format!("see rank {r}'s message, fix what it names, then launch again"),
            }),
        }
    }
}

/// Samples `[lo, hi)` of a batch of `batch` samples that shard `s` of `shards` holds.
pub fn shard_range(batch: usize, shards: usize, s: usize) -> (usize, usize) {
    (s * batch / shards, (s + 1) * batch / shards)
}

/// The shards worker `rank` of `workers` runs: a contiguous block, in increasing order.
pub fn shards_of(rank: usize, workers: usize, shards: usize) -> std::ops::Range<usize> {
    let b = shards / workers;
    rank * b..(rank + 1) * b
}

/// `workers` must divide `shards`: a clear error otherwise, before any work.
pub fn check_placement(shards: usize, workers: usize) -> Result<(), TrainError> {
    if shards.is_multiple_of(workers) {
        return Ok(());
    }
    let fits: Vec<String> = (1..=shards)
        .filter(|d| shards.is_multiple_of(*d))
        .map(|d| d.to_string())
        .collect();
    Err(TrainError::Workers {
        what: format!(
            "{workers} workers cannot share train.shards = {shards} shards evenly (worker r runs the block of shards r * {shards}/{workers} .. (r + 1) * {shards}/{workers})"
        ),
        fix: format!(
            "launch a worker count dividing {shards} ({}), or set train.shards to a multiple of {workers} in a new run",
            fits.join(", ")
        ),
    })
}

/// `parts` (in shard order) combined in the fixed tree (see the module doc) with `add`.
pub fn tree<T>(mut parts: Vec<T>, add: impl Fn(T, T) -> T) -> T {
    assert!(!parts.is_empty(), "at least one shard");
    while parts.len() > 1 {
        let mut next = Vec::with_capacity(parts.len().div_ceil(2));
        let mut it = parts.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => add(a, b),
                None => a,
            });
        }
        parts = next;
    }
    parts.pop().expect("one remains")
}

/// The tree over host vectors with lockstep's flushed add (element-wise, so any split over
/// threads gives the same bits).
pub fn combine(parts: Vec<Vec<f32>>) -> Vec<f32> {
    tree(parts, |mut a, b| {
        use rayon::prelude::*;
        a.par_chunks_mut(1 << 14)
            .zip(b.par_chunks(1 << 14))
            .for_each(|(xs, ys)| {
                for (x, y) in xs.iter_mut().zip(ys) {
                    *x = lockstep_kernels::arith::add(*x, *y);
                }
            });
        a
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_pairs_neighbours_level_by_level() {
        // Values chosen so that every grouping rounds differently: the tree's exact shape shows.
        let v = [1.0f32, 1e8, -1e8, 3.0, 0.5, 7.0, -2.5];
        let parts: Vec<Vec<f32>> = v.iter().map(|&x| vec![x]).collect();
        let f = |a: f32, b: f32| a + b;
        // ((0+1) + (2+3)) + ((4+5) + 6)
        let want = f(f(f(v[0], v[1]), f(v[2], v[3])), f(f(v[4], v[5]), v[6]));
        assert_eq!(combine(parts)[0].to_bits(), want.to_bits());
        assert_eq!(combine(vec![vec![2.5, -1.0]]), vec![2.5, -1.0]);
        // A block of 2^l shards is a complete subtree: reducing blocks first, then the blocks'
        // results, is the same tree.
        let v: Vec<f32> = (0..8)
            .map(|i| 1.0 + (i as f32) * 1e-7 * 3f32.powi(i))
            .collect();
        let leaf = |i: usize| vec![v[i]];
        let whole = combine((0..8).map(leaf).collect());
        for block in [1, 2, 4, 8] {
            let blocks = (0..8 / block)
                .map(|r| combine((r * block..(r + 1) * block).map(leaf).collect()))
                .collect();
            assert_eq!(
                combine(blocks)[0].to_bits(),
                whole[0].to_bits(),
                "block {block}"
            );
        }
    }

    #[test]
    fn shards_cover_the_batch_in_order_and_workers_take_every_nth() {
        for (b, s) in [(32, 4), (13, 4), (3, 4), (0, 2), (64, 1)] {
            let mut next = 0;
            for i in 0..s {
                let (lo, hi) = shard_range(b, s, i);
                assert_eq!(lo, next);
                assert!(hi >= lo);
                next = hi;
            }
            assert_eq!(next, b);
        }
        assert_eq!(shards_of(1, 2, 8), 4..8);
        assert_eq!(shards_of(2, 3, 6), 4..6);
        assert!(check_placement(8, 3).is_err());
        assert!(check_placement(8, 4).is_ok());
    }
}
