//! Race-free, reproducible weight initialisation.
//!
//! Burn's CPU backend keeps one process-wide RNG: `B::seed` stores it, and every random op
//! on any thread draws from it. Two models initialised at the same time on different threads
//! (a server building models concurrently, or tests running in parallel) would take numbers
//! from each other's stream, so `B::seed(s); config.init()` would silently give weights that
//! are not those of `s`. Every model initialisation in this crate therefore runs under one
//! process-wide lock: [`crate::MaeConfig::init_seeded`] / [`crate::VitConfig::init_seeded`]
//! seed and draw inside it, and the unseeded `init` takes it too, so it cannot steal numbers
//! from a seeded one.
//!
//! Random ops of your own that run concurrently with a seeded initialisation still draw from
//! the same RNG; wrap them in [`exclusive`] if they must not interfere.

use std::sync::Mutex;

use burn::tensor::backend::Backend;

static INIT: Mutex<()> = Mutex::new(());

/// Runs `f` while holding the process-wide initialisation lock. Not re-entrant: `f` must not
/// initialise a model through `init` / `init_seeded` itself.
pub fn exclusive<T>(f: impl FnOnce() -> T) -> T {
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f()
}

/// Seeds the backend RNG with `seed` and runs `f` under the lock of [`exclusive`], so the
/// random numbers `f` draws are exactly the stream of `seed`.
pub fn with_seed<B: Backend, T>(device: &B::Device, seed: u64, f: impl FnOnce() -> T) -> T {
    exclusive(|| {
        B::seed(device, seed);
        f()
    })
}
