//! Giving memory back to the system (glibc's malloc).
//!
//! Loading a config builds and drops documents of several megabytes, file by file, between
//! the allocations that live on (the jobs). glibc keeps what is freed inside its heap for
//! later use; for a daemon that allocates little after its start, that is memory held for
//! nothing. Two calls limit it: a fixed mmap threshold at start ([`keep_large_blocks_apart`])
//! and a trim once a config is loaded ([`give_back_freed`]).

/// glibc's malloc raises its mmap threshold each time a large block is freed, so after a
/// config's parse later large blocks come from the heap, between the jobs, and the holes they
/// leave are never given back: at 100 000 jobs the daemon held 100 MiB for 63 MiB of live
/// data. A fixed threshold keeps blocks of 64 KiB and more in their own mappings, returned to
/// the system when freed (82 MiB; jemalloc, tried too, held 87–125 MiB). Call it first thing
/// in `main`, before any other thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn keep_large_blocks_apart() {
    // SAFETY: mallopt only sets a malloc parameter; the caller runs it before any other
    // thread exists, and a refusal (0) leaves glibc's default, which is correct, only larger.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

/// Returns the free pages inside the heap to the system: the small blocks of a config's
/// parse (table entries, keys, strings) leave holes between the jobs that outlive it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn give_back_freed() {
    // SAFETY: malloc_trim only releases free memory held by malloc; it takes malloc's own
    // locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_large_blocks_apart() {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back_freed() {}
