//! How the process uses glibc's allocator, on Linux: the sync's stages free and allocate tens
//! of megabytes on several threads at once, and glibc gives every thread that allocates an
//! arena of its own (up to eight per core), whose free pages no other thread reuses.

/// Caps glibc's arenas at two for the whole process. Call it first thing, before any thread
/// starts. At 100 000 devices a full sync decides, saves and decodes on four threads at once
/// while the listing goes on; with an arena each, its peak was about 20 MB higher.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// glibc's `M_ARENA_MAX` parameter of `mallopt`.
        const M_ARENA_MAX: std::ffi::c_int = -8;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: `mallopt(M_ARENA_MAX, n)` only sets a limit the allocator reads when a thread
        // needs a new arena; it is called before any other thread exists.
        unsafe {
            mallopt(M_ARENA_MAX, 2);
        }
    }
}

/// Hands the heap's free pages back to the OS. glibc keeps what a thread frees in that
/// thread's arena; after a stage frees tens of megabytes on the blocking pool, the next stage,
/// allocating on another thread, would otherwise grow the process instead of reusing them.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's `malloc_trim` only releases free pages of its arenas; it takes the
        // arenas' locks and may be called from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}
