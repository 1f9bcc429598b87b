//! Gives heap memory freed after a burst back to the operating system.
//!
//! glibc's allocator keeps freed memory in its arenas for reuse and only returns the top of a
//! heap; memory freed below a block still in use stays resident. After an overload — 10,000
//! slow sockets with full send queues and blocked frames, closed with 1013 — a gateway holds
//! about 2 GB resident with no socket open, and `malloc_trim(0)` brings it back to about 20 MB. A
//! gateway fleet is sized (and autoscaled) on memory per socket, so a burst must not leave its peak
//! behind for the life of the process.
//!
//! [`run`] looks every [`CHECK_EVERY`] at how much of the resident memory no allocation uses
//! (resident set minus the allocator's in-use bytes from `mallinfo2`) and trims when that
//! exceeds [`TRIM_ABOVE`]: an idle or steady gateway never trims, a burst is given back within
//! one period, and a trimmed heap is not trimmed again until freed memory is resident again.
//!
//! The workspace denies `unsafe`; this module is its one allowance: three calls into glibc
//! (`sysconf`, `mallinfo2`, `malloc_trim`) that take no pointers and have no preconditions.
#![allow(unsafe_code)]

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How often the allocator's free memory is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Resident memory not in use above which it is given back.
pub const TRIM_ABOVE: usize = 64 << 20;

/// Resident bytes not in use by any allocation: this process's resident memory minus what the
/// allocator has handed out (heap and mmapped blocks), when the platform says. Binary, stacks
/// and the allocator's own bookkeeping are in it too (some megabytes).
pub fn reclaimable() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf and mallinfo2 take no pointers and have no preconditions; they only
        // read the system's and the allocator's figures.
        let (page, info) = unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::mallinfo2()) };
        let resident = pages * usize::try_from(page).ok()?;
        Some(resident.saturating_sub(info.uordblks + info.hblkhd))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Returns the allocator's free pages to the operating system (what came back is measured by
/// [`reclaimable`], not by glibc's yes/no answer).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and has no preconditions; it only releases free
    // pages (madvise) while holding the arenas' locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What [`check`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// At most the bound was reclaimable (this many bytes): nothing done.
    Kept(usize),
    /// More was: trimmed, from `before` to `after` reclaimable bytes.
    Trimmed { before: usize, after: usize },
}

/// Trims when more than `above` resident bytes are not in use ([`reclaimable`]).
pub fn check(above: usize) -> Option<Checked> {
    let before = reclaimable()?;
    if before <= above {
        return Some(Checked::Kept(before));
    }
    trim();
    let after = reclaimable().unwrap_or(before);
    Some(Checked::Trimmed { before, after })
}

/// Checks every `every` until `stop`; counts trims in `ws_gateway_memory_trims_total`.
///
/// The bound is [`TRIM_ABOVE`] over the lowest figure seen since the last trim (or what that
/// trim left): free pieces smaller than a page stay resident through a trim, and a large heap
/// must not be trimmed again every period for them.
pub async fn run(metrics: std::sync::Arc<Metrics>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut floor = 0usize;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let above = floor + TRIM_ABOVE;
        // A trim holds the arenas' locks while it walks them: off the runtime's worker threads.
        match tokio::task::spawn_blocking(move || check(above)).await {
            Ok(Some(Checked::Kept(now))) => floor = floor.min(now),
            Ok(Some(Checked::Trimmed { before, after })) => {
                floor = after;
                metrics.memory_trims.inc();
                tracing::info!(
                    reclaimable_before = before,
                    reclaimable_after = after,
                    "returned freed heap memory to the system"
                );
            }
            _ => {}
        }
    }
}
