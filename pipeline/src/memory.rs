//! The allocator's settings for runs of a million rows.
//!
//! A run builds whole columns stage after stage, and on these VMs the first
//! touch of a fresh page costs about 3 µs (a 1M run touched 2.5 GB: ~2 CPU-s
//! of page faults). glibc's defaults hand most of that memory back and take
//! new pages again: blocks of 128 KiB and more are `mmap`ed and unmapped on
//! free, the top of the heap is trimmed, and each thread (tokio workers,
//! rayon, blocking pool) allocates from its own arena, so what one stage's
//! threads free the next stage's threads cannot reuse. Measured on the 1M
//! bench (BENCHMARKS.md, sixteenth session): page faults 630k -> 425k,
//! system time -0.5 s. Memory kept is given back after each daemon run
//! (`release`), so a long-lived daemon does not hold a run's peak.
//!
//! A user's own `GLIBC_TUNABLES` or `MALLOC_ARENA_MAX` wins: nothing is set
//! then. Other allocators and platforms are left alone.

/// Set the allocator for large, short-lived columns: one arena per core, no
/// `mmap` for large blocks, freed memory kept for reuse. Call first thing in
/// `main`, before any thread starts (arenas are per thread).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("GLIBC_TUNABLES").is_some() || std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes allocator parameters; it is
        // thread-safe and these are documented, valid values.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        }
    }
}

/// Give freed memory back to the system (after a run, in the daemon).
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; always safe to call.
    unsafe {
        libc::malloc_trim(0);
    }
}
