//! The global allocator: mimalloc, called the way its C API is fastest.
//!
//! The `mimalloc` crate's `MiMalloc` passes every allocation through `mi_malloc_aligned`, even
//! when the alignment asked for is no more than what `mi_malloc` always gives. In mimalloc 3
//! that call only takes the fast path for small sizes whose free block happens to be aligned;
//! everything else (header maps, request buffers, boxed futures) goes through the generic
//! aligned path, about 200 instructions more per allocation, some fifteen times per proxied
//! request (bench/README.md, §2). [`Mimalloc`] calls the plain functions whenever their
//! guaranteed alignment suffices and the aligned ones otherwise.
//!
//! A module of the binary, not of the library, which forbids unsafe code.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as ffi;

/// Every block `mi_malloc`, `mi_zalloc` and `mi_realloc` return is aligned to this: block
/// sizes are whole machine words and a page's first block is 16-byte aligned. Not 16: a block
/// of 24 bytes sits at a multiple of 24 from its page's start, so `mi_malloc(24)` may return
/// an address that is only 8-byte aligned.
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc as a [`GlobalAlloc`], without the aligned-allocation path when it is not needed.
pub struct Mimalloc;

impl Mimalloc {
    fn plain(layout: &Layout) -> bool {
        layout.align() <= PLAIN_ALIGN
    }
}

// SAFETY: every block comes from mimalloc with at least the alignment `layout` asks for
// (`PLAIN_ALIGN` for the plain calls, the layout's own for the aligned ones), and is freed with
// `mi_free`, which accepts blocks from either kind of call.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::plain(&layout) {
            ffi::mi_malloc(layout.size()) as *mut u8
        } else {
            ffi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::plain(&layout) {
            ffi::mi_zalloc(layout.size()) as *mut u8
        } else {
            ffi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        ffi::mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::plain(&layout) {
            ffi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            ffi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

/// mimalloc's `mi_option_purge_delay`: index 15 of `mi_option_t` in the `mimalloc.h` of both
/// mimalloc 2 and the mimalloc 3 that `libmimalloc-sys` 0.1.49 builds (the Rust bindings name
/// no constant for it). Re-check on every `libmimalloc-sys` upgrade.
const MI_OPTION_PURGE_DELAY: ffi::mi_option_t = 15;

/// mimalloc's `mi_option_arena_purge_mult`: index 24 of `mi_option_t` in the `mimalloc.h` that
/// `libmimalloc-sys` 0.1.49 builds. Re-check on every `libmimalloc-sys` upgrade.
const MI_OPTION_ARENA_PURGE_MULT: ffi::mi_option_t = 24;

/// Give freed pages back to the system after 1 ms instead of mimalloc's default 10 ms
/// ([`purge_early`]) but keep freed arena memory for 100 ms ([`keep_arena_memory_longer`]);
/// keep the heap on 4 KiB pages unless the environment allows huge ones
/// ([`allow_huge_pages_if_asked`]). With memory kept longer under load,
/// [`release_unused`] hands it back when the proxy falls idle.
pub fn tune() {
    purge_early();
    keep_arena_memory_longer();
    allow_huge_pages_if_asked();
}

/// Keep memory freed back to mimalloc's arenas for 100 ms (1 ms × 100) before returning it to
/// the system, instead of 10 ms (1 ms × mimalloc's default multiplier 10). Under many
/// connections, and under HTTP/2, memory is freed and taken again within milliseconds: with
/// 10 ms, every such cycle was a `madvise` and page faults when touched again (0.7 faults per
/// HTTP/2 request, 0.3 per request at 500 connections); with 100 ms, 0.1, and about a fifth
/// less CPU per request there (bench/README.md, "Memory kept for 100 ms").
/// `MIMALLOC_ARENA_PURGE_MULT` in the environment still wins.
fn keep_arena_memory_longer() {
    set_unless_in_environment(MI_OPTION_ARENA_PURGE_MULT, "MIMALLOC_ARENA_PURGE_MULT", 100);
}

/// Return to the system, now, the memory mimalloc keeps for reuse: pages of this thread's heap
/// that are empty and every arena range waiting out its purge delay. The proxy calls it on
/// each worker thread when its last client connection closes (`switchyard::edge::idle`), so
/// the resident set after a burst is what it holds, not what it held at the peak.
pub fn release_unused() {
    // SAFETY: a plain call into mimalloc; it only frees memory no block lives in.
    unsafe { ffi::mi_collect(true) };
}

/// Purge freed memory after 1 ms. Under 500 connections this took the resident set from 98 to
/// 33 MiB, as low as purging at once (0) kept it (bench/README.md, "Memory").
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn purge_early() {
    set_unless_in_environment(MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 1);
}

/// Set a mimalloc purge option to `value` unless the environment variable mimalloc reads it
/// from (`variable`) is set, which then wins.
fn set_unless_in_environment(option: ffi::mi_option_t, variable: &str, value: std::ffi::c_long) {
    if std::env::var_os(variable).is_none() {
        // SAFETY: sets a process-wide option; mimalloc reads it when it next purges.
        unsafe { ffi::mi_option_set(option, value) };
    }
}

/// mimalloc 3's `mi_option_allow_thp` (index 43 of `mi_option_t`, checked against the header
/// that `libmimalloc-sys` 0.1.49 builds). Re-check on every `libmimalloc-sys` upgrade.
const MI_OPTION_ALLOW_THP: ffi::mi_option_t = 43;

/// Keep the heap on 4 KiB pages. mimalloc 3 asks for transparent huge pages on its arenas, and
/// where the system grants them on request (`madvise`, the common distribution default) every
/// heap region it touches becomes resident 2 MiB at a time: the resident set after a
/// 500-connection load was 51 MiB with them and 26 MiB without, and the idle heap 14 against
/// 3.5 MiB. CPU per request was the same at 50 connections and about 5–7 % higher at 500,
/// where more of the heap is touched (bench/README.md, "Memory").
///
/// [`DISABLE_HUGE_PAGES_AT_LOAD`] turns them off before the first allocation, as
/// `MIMALLOC_ALLOW_THP=0` would; this turns them back on when `MIMALLOC_ALLOW_THP` in the
/// environment allows them. The flag is kept across `fork` and `exec`, so a daemonised or
/// upgraded process starts the same way.
fn allow_huge_pages_if_asked() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        return;
    }
    // SAFETY: reads a process-wide option, which mimalloc took from the environment at start.
    if unsafe { ffi::mi_option_is_enabled(MI_OPTION_ALLOW_THP) } {
        if let Err(e) = nix::sys::prctl::set_thp_disable(false) {
            eprintln!("switchyard: transparent huge pages stay off: {e}");
        }
    }
}

/// Runs from `.init_array`, before `main` and before Rust's runtime makes its first allocation,
/// so not even mimalloc's first arena region is faulted in as a huge page. A kernel older than
/// 3.15 lacks the call and keeps huge pages on.
extern "C" fn disable_huge_pages() {
    let _ = nix::sys::prctl::set_thp_disable(true);
}

/// Registers [`disable_huge_pages`] to run when the program is loaded.
#[used]
#[unsafe(link_section = ".init_array")]
static DISABLE_HUGE_PAGES_AT_LOAD: extern "C" fn() = disable_huge_pages;

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of every size and alignment come back aligned, zeroed when asked, and keep their
    /// contents through `realloc`.
    #[test]
    fn blocks_are_aligned_zeroed_and_keep_contents_through_realloc() {
        let a = Mimalloc;
        for align in [1, 2, 8, 16, 32, 64, 4096] {
            for size in [1, 7, 16, 24, 40, 100, 1024, 5000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = a.alloc_zeroed(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    assert!(std::slice::from_raw_parts(p, size).iter().all(|b| *b == 0));
                    p.write_bytes(0xab, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    assert!(std::slice::from_raw_parts(q, size)
                        .iter()
                        .all(|b| *b == 0xab));
                    a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                }
            }
        }
    }
}
