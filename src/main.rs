//! The `beatd` binary: everything lives in the library; see `beatd::cli`.

fn main() -> std::process::ExitCode {
    release_freed_memory();
    beatd::cli::main()
}

/// glibc's malloc raises its mmap threshold each time a large block is freed, so after a
/// config's parse (documents of several megabytes, built and dropped one file at a time) later
/// large blocks come from the heap, between the jobs, and the holes they leave are never given
/// back: at 100 000 jobs the daemon held 100 MiB for 63 MiB of live data. A fixed threshold
/// keeps blocks of 64 KiB and more in their own mappings, returned to the system when freed
/// (82 MiB; jemalloc, tried too, held 87–125 MiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: mallopt only sets a malloc parameter; it is called before any other thread
    // exists, and a refusal (0) leaves glibc's default, which is correct, only larger.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}
