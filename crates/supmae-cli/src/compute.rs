//! Where a command runs: on a thread of the compute pool, not on the main thread.
//!
//! Burn's Flex backend runs its parallel loops (and `gemm` its products, and our kernels
//! their rows) on rayon's global pool. Called from the main thread, every such loop hands its
//! work to the pool and puts the main thread to sleep until the pool is done, then wakes it:
//! two context switches per op, hundreds of ops per step, and on a 2-core machine three busy
//! threads for two cores. Run from a pool thread, the same loop splits its work in place and
//! the other pool threads steal from it (rayon's work stealing), with no hand-off. The
//! results do not change: every parallel loop of a step splits its work into fixed pieces
//! (the main job's parameters are bit-identical either way). Measured on the main job:
//! 2,139 -> 2,607 images/s (docs/benchmarks.md).
//!
//! Only a command whose work runs on one thread goes there: several data-parallel peers in
//! one process keep their own threads, because a peer that waits for the others in an
//! all-reduce must not hold a pool thread they need.

/// Runs `command` on a thread of rayon's global pool and returns its result; the calling
/// thread waits. The pool's threads get the main thread's 8 MiB stack (rayon's default is
/// the platform's 2 MiB), set before anything else starts the pool.
pub fn on_pool<R: Send>(command: impl FnOnce() -> R + Send) -> R {
    // Fails only when the pool already exists (something ran on it first); the command then
    // runs on that pool with its stack size.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
    let mut result = None;
    rayon::scope(|_| result = Some(command()));
    match result {
        Some(result) => result,
        None => unreachable!("rayon::scope returns after its closure has run"),
    }
}
