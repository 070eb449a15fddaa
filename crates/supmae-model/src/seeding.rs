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

/// Draws every lazily initialised parameter of `module` now. Burn's initializers create
/// parameters that draw their random values on first use; without this, a model built under
/// the lock would draw later, outside it, from whatever the process-wide RNG holds then
/// (another thread's seeded stream, in a test binary or a server). Called inside the lock
/// by every `init` / `init_seeded`.
pub fn materialize<B: Backend, M: burn::module::Module<B>>(module: M) -> M {
    struct Touch;
    impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
    module
}

/// Seeds the backend RNG with `seed` and runs `f` under the lock of [`exclusive`], so the
/// random numbers `f` draws are exactly the stream of `seed`.
pub fn with_seed<B: Backend, T>(device: &B::Device, seed: u64, f: impl FnOnce() -> T) -> T {
    exclusive(|| {
        B::seed(device, seed);
        f()
    })
}

thread_local! {
    /// This thread's model-randomness stream (splitmix64 state), when one is set.
    static STREAM: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with the model's own random draws on this thread (stochastic depth masks) taken
/// from a stream seeded by `seed` instead of the backend's process-wide RNG. A learner
/// seeds every step from `(seed, epoch, step, rank)`, so an interrupted and resumed run
/// draws the same masks, and data-parallel peers on threads of one process do not draw
/// from each other's numbers.
pub fn with_stream<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    let previous = STREAM.with(|s| s.replace(Some(seed)));
    let out = f();
    STREAM.with(|s| s.set(previous));
    out
}

/// `n` Bernoulli(`keep`) draws as `0.0` / `1.0` from this thread's stream, if one is set
/// by [`with_stream`].
pub(crate) fn bernoulli(n: usize, keep: f64) -> Option<Vec<f32>> {
    STREAM.with(|s| {
        let mut state = s.get()?;
        let draws = (0..n)
            .map(|_| {
                // splitmix64
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                let u = (z >> 11) as f64 / (1u64 << 53) as f64;
                if u < keep { 1.0 } else { 0.0 }
            })
            .collect();
        s.set(Some(state));
        Some(draws)
    })
}
