//! The allocator's freed memory goes back to the system after a burst (`ws_gateway::memory`).
//! Its own test binary: it measures this process's resident memory, which other tests running
//! beside it would move.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;
use ws_gateway::{memory, metrics::Metrics};

fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

const BURST: usize = 256 << 20;

/// Allocates `BURST` bytes in 4 KiB blocks (below the mmap threshold, so on the heap) and one
/// block after them that stays in use, then frees the burst: what a drained overload leaves.
fn burst_then_free() -> Box<[u8; 64]> {
    let blocks: Vec<Box<[u8; 4096]>> = (0..BURST / 4096).map(|_| Box::new([7u8; 4096])).collect();
    let pin = Box::new([1u8; 64]);
    drop(blocks);
    pin
}

#[tokio::test(flavor = "current_thread")]
async fn a_freed_burst_is_given_back_by_the_periodic_check() {
    if memory::reclaimable().is_none() {
        eprintln!("not glibc: nothing to measure");
        return;
    }
    // Directly: the burst stays resident after it is freed, until trimmed.
    let before = resident_bytes();
    let pin = burst_then_free();
    let retained = resident_bytes();
    assert!(
        retained > before + BURST / 2,
        "the allocator kept the freed burst: {before} -> {retained} bytes resident"
    );
    let Some(memory::Checked::Trimmed { before, after }) = memory::check(memory::TRIM_ABOVE) else {
        panic!("more than {} bytes reclaimable", memory::TRIM_ABOVE);
    };
    assert!(before >= BURST / 2, "{before} bytes reclaimable before");
    assert!(
        after < memory::TRIM_ABOVE,
        "{after} bytes reclaimable after"
    );
    let trimmed = resident_bytes();
    assert!(
        trimmed < retained - BURST / 2,
        "trimmed: {retained} -> {trimmed} bytes resident"
    );
    // Nothing to give back now: no trim.
    assert!(matches!(
        memory::check(memory::TRIM_ABOVE),
        Some(memory::Checked::Kept(_))
    ));
    drop(pin);

    // Through the gateway's periodic task, counted in its metric.
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let task = tokio::spawn(memory::run(
        Arc::clone(&metrics),
        Duration::from_millis(50),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(trims(&metrics), 0, "nothing to trim yet");
    let pin = burst_then_free();
    let retained = resident_bytes();
    let mut waited = Duration::ZERO;
    while trims(&metrics) == 0 && waited < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    assert_eq!(trims(&metrics), 1, "one trim after the burst");
    assert!(resident_bytes() < retained - BURST / 2);
    stop.cancel();
    task.await.unwrap();
    drop(pin);
}

/// `ws_gateway_memory_trims_total` as the gateway exports it.
fn trims(metrics: &Metrics) -> u64 {
    metrics
        .value("ws_gateway_memory_trims_total")
        .expect("the trim counter is exported") as u64
}
