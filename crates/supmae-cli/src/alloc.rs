//! The program's memory allocator: mimalloc, told to keep the memory it frees.
//!
//! A training step frees and re-allocates the same large buffers every step (activations,
//! gradients, AdamW's new moments and parameters: about 1.5 GB per ViT-B/16 step). By
//! default mimalloc hands freed pages back to the kernel after 1 s; steps longer than that
//! (ViT-B on a CPU takes about 2 s) then fault every buffer in again and the kernel zeroes
//! it: 150,000-190,000 page faults and 15% of a ViT-B step's time in `clear_page`. With the
//! purge turned off the pages stay with the process, as in PyTorch's caching allocator, and
//! the step has about 1,300 faults in all (`docs/benchmarks.md`). The cost is that the
//! process keeps its peak memory until it exits.
//!
//! The benchmark `benches/train_step.rs` includes this file, so it measures the same
//! allocator the program runs with.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 headers alike);
/// `libmimalloc-sys` 0.1.49 has no constant for it. The test below checks the index against
/// the `MIMALLOC_PURGE_DELAY` variable, which mimalloc reads into this slot.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed pages to the kernel. Call it first thing in `main`,
/// before any thread is started. `MIMALLOC_PURGE_DELAY` in the environment still wins, so
/// the old behaviour is one variable away (`MIMALLOC_PURGE_DELAY=1000`).
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // The workspace's one `unsafe` call outside tests (docs/decisions.md, "The `supmae`
    // program uses mimalloc"). SAFETY: `mi_option_set` stores a value in mimalloc's option table; it takes
    // no pointers, and the option accepts every value (-1 = never purge). The store is a
    // plain write, so it must not race with other threads reading options: `main` calls
    // this before it starts any thread.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
    }
}

#[cfg(test)]
mod tests {
    /// Run in a child process started with `MIMALLOC_PURGE_DELAY=4321`: the option read from
    /// the environment is in slot `PURGE_DELAY`, so that is the slot we set.
    #[test]
    fn the_purge_delay_slot_is_the_one_mimalloc_reads_from_its_variable() {
        if std::env::var_os("SUPMAE_ALLOC_CHILD").is_some() {
            #[allow(unsafe_code)]
            // SAFETY: reads mimalloc's option table; no pointers.
            let value = unsafe { libmimalloc_sys::mi_option_get(super::PURGE_DELAY) };
            assert_eq!(value, 4321);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "alloc::tests::the_purge_delay_slot_is_the_one_mimalloc_reads_from_its_variable",
                "--test-threads=1",
            ])
            .env("SUPMAE_ALLOC_CHILD", "1")
            .env("MIMALLOC_PURGE_DELAY", "4321")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("1 passed"),
            "the child ran no test: {stdout}"
        );
    }
}
