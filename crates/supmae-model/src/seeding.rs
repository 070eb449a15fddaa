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

/// Where this thread's model-randomness (stochastic depth masks) comes from.
#[derive(Debug, Clone)]
enum Stream {
    /// A splitmix64 state.
    Seeded(u64),
    /// Masks given by the caller, consumed in order.
    Given(std::collections::VecDeque<f32>),
}

thread_local! {
    /// This thread's model-randomness stream, when one is set.
    static STREAM: std::cell::RefCell<Option<Stream>> = const { std::cell::RefCell::new(None) };
}

fn with_stream_set<T>(stream: Stream, f: impl FnOnce() -> T) -> (T, Option<Stream>) {
    let previous = STREAM.with(|s| s.replace(Some(stream)));
    let out = f();
    let left = STREAM.with(|s| s.replace(previous));
    (out, left)
}

/// Runs `f` with the model's own random draws on this thread (stochastic depth masks) taken
/// from a stream seeded by `seed` instead of the backend's process-wide RNG. A learner
/// seeds every step from `(seed, epoch, step, rank)`, so an interrupted and resumed run
/// draws the same masks, and data-parallel peers on threads of one process do not draw
/// from each other's numbers.
pub fn with_stream<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    with_stream_set(Stream::Seeded(seed), f).0
}

/// Runs `f` with every stochastic-depth mask taken from `masks` instead of a random stream:
/// each residual branch that draws (rate > 0, training, in forward order: block 0's
/// attention then MLP branch, block 1's, ...) takes the next `N` values, one `0.0` (drop) or
/// `1.0` (keep) per sample. This is how a run is replayed with the draws of another
/// implementation (the PyTorch trajectory tests). Returns `f`'s result and how many values
/// were left unused; a branch that finds too few values draws nothing and keeps all samples,
/// and counts as a shortfall (the second value is then `Err` with the number missing).
pub fn with_masks<T>(masks: Vec<f32>, f: impl FnOnce() -> T) -> (T, Result<usize, usize>) {
    SHORT.with(|s| s.set(0));
    let (out, left) = with_stream_set(Stream::Given(masks.into()), f);
    let short = SHORT.with(|s| s.replace(0));
    let left = match left {
        Some(Stream::Given(rest)) => rest.len(),
        _ => 0,
    };
    (out, if short > 0 { Err(short) } else { Ok(left) })
}

thread_local! {
    static SHORT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` Bernoulli(`keep`) draws as `0.0` / `1.0` from this thread's stream, if one is set
/// by [`with_stream`] or [`with_masks`].
pub(crate) fn bernoulli(n: usize, keep: f64) -> Option<Vec<f32>> {
    STREAM.with(|s| {
        let mut stream = s.borrow_mut();
        match stream.as_mut()? {
            Stream::Seeded(state) => Some(
                (0..n)
                    .map(|_| {
                        let u = (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64;
                        if u < keep { 1.0 } else { 0.0 }
                    })
                    .collect(),
            ),
            Stream::Given(masks) => {
                if masks.len() < n {
                    SHORT.with(|c| c.set(c.get() + n - masks.len()));
                    masks.clear();
                    return Some(vec![1.0; n]);
                }
                Some(masks.drain(..n).collect())
            }
        }
    })
}
