//! How N client sockets are spread so the load tool itself is not the limit:
//!
//! - over **worker processes**, because one process may open only so many files (20,000 on the
//!   development machines) and every socket is a file;
//! - over **loopback source addresses** 127.0.0.x, because a socket bound to a source address
//!   before connecting takes an ephemeral port of that address exclusively (≈ 28,000 of them in
//!   the default `ip_local_port_range`);
//! - over **gateways**, round-robin, so a fleet shares the load evenly;
//! - over **source ports**: socket number k of a source address binds port `first_port + k`, so
//!   no `bind` has to search for a free port (see [`crate::client::connect`]).
//!
//! The plan is pure arithmetic, tested below; workers execute their part of it.

use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Limits and counts for [`plan`].
#[derive(Debug, Clone, Copy)]
pub struct SpreadInput {
    /// Sockets to open in total.
    pub sockets: usize,
    /// Gateways to spread them over (round-robin).
    pub gateways: usize,
    /// Worker processes; 0 = as few as `per_worker_max` allows.
    pub workers: usize,
    /// Most sockets one worker may hold (keep below its open-files limit, with headroom).
    pub per_worker_max: usize,
    /// Source addresses; 0 = as few as `per_source_max` allows.
    pub sources: usize,
    /// Most sockets bound to one source address (below the ephemeral port range).
    pub per_source_max: usize,
    /// The first source address; the next ones follow (127.0.0.2, 127.0.0.3, …).
    pub first_source: Ipv4Addr,
    /// The port of each address's first socket; the next ones follow (at most
    /// `per_source_max` of them).
    pub first_port: u16,
}

/// A part of one worker's sockets: `count` sockets from `source` to gateway number `gateway`,
/// bound to ports `first_port`, `first_port + 1`, … (no two sockets of a plan share an address
/// and port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub gateway: usize,
    pub source: Ipv4Addr,
    pub count: usize,
    pub first_port: u16,
}

/// Everything one worker process opens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub segments: Vec<Segment>,
}

impl WorkerPlan {
    pub fn sockets(&self) -> usize {
        self.segments.iter().map(|s| s.count).sum()
    }
}

/// Splits `input.sockets` into balanced worker plans. Socket `i` (of all) goes to gateway
/// `i % gateways`, to source address number `i / ceil(sockets / sources)` and to the worker whose
/// balanced range holds `i`. A worker's sockets of one address are a contiguous run of that
/// address's sockets; its segments of that address take consecutive port ranges within the run.
pub fn plan(input: SpreadInput) -> Result<Vec<WorkerPlan>> {
    let SpreadInput {
        sockets,
        gateways,
        per_worker_max,
        per_source_max,
        ..
    } = input;
    if gateways == 0 || per_worker_max == 0 || per_source_max == 0 {
        bail!("gateways, per-worker and per-source limits must be at least 1");
    }
    let workers = match input.workers {
        0 => sockets.div_ceil(per_worker_max).max(1),
        n => n,
    };
    let sources = match input.sources {
        0 => sockets.div_ceil(per_source_max).max(1),
        n => n,
    };
    if sockets.div_ceil(workers) > per_worker_max {
        bail!(
            "{sockets} sockets over {workers} workers is more than {per_worker_max} per worker: \
             add workers"
        );
    }
    let per_source = sockets.div_ceil(sources).max(1);
    if per_source > per_source_max {
        bail!(
            "{sockets} sockets over {sources} source addresses is more than {per_source_max} per \
             address: add source addresses"
        );
    }
    if usize::from(input.first_port) + per_source > usize::from(u16::MAX) + 1
        || input.first_port == 0
    {
        bail!(
            "{per_source} sockets per source address do not fit in the ports from {}",
            input.first_port
        );
    }
    let last = u32::from(input.first_source) as u64 + sources as u64 - 1;
    if last > u64::from(u32::MAX) || Ipv4Addr::from(last as u32).octets()[0] != 127 {
        bail!(
            "{sources} source addresses do not fit in 127.0.0.0/8 from {}",
            input.first_source
        );
    }

    let mut plans = Vec::with_capacity(workers);
    let mut start = 0;
    for w in 0..workers {
        // Balanced ranges: the first `sockets % workers` workers take one more.
        let len = sockets / workers + usize::from(w < sockets % workers);
        let mut counts: BTreeMap<(u32, usize), usize> = BTreeMap::new();
        for i in start..start + len {
            let source = u32::from(input.first_source) + (i / per_source) as u32;
            *counts.entry((source, i % gateways)).or_default() += 1;
        }
        // Ports: this worker's run of each address starts at its first socket's index within
        // that address; the address's segments (by gateway) follow each other in it.
        let mut next_port: BTreeMap<u32, usize> = BTreeMap::new();
        let segments = counts
            .into_iter()
            .map(|((source, gateway), count)| {
                let port = next_port.entry(source).or_insert_with(|| {
                    let address = (source - u32::from(input.first_source)) as usize;
                    usize::from(input.first_port) + start.max(address * per_source)
                        - address * per_source
                });
                let first_port = *port as u16;
                *port += count;
                Segment {
                    gateway,
                    source: Ipv4Addr::from(source),
                    count,
                    first_port,
                }
            })
            .collect();
        plans.push(WorkerPlan { segments });
        start += len;
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(sockets: usize, gateways: usize) -> SpreadInput {
        SpreadInput {
            sockets,
            gateways,
            workers: 0,
            per_worker_max: 18_000,
            sources: 0,
            per_source_max: 20_000,
            first_source: Ipv4Addr::new(127, 0, 0, 2),
            first_port: 32_768,
        }
    }

    fn per_source(plans: &[WorkerPlan]) -> BTreeMap<Ipv4Addr, usize> {
        let mut m = BTreeMap::new();
        for s in plans.iter().flat_map(|p| &p.segments) {
            *m.entry(s.source).or_default() += s.count;
        }
        m
    }

    #[test]
    fn a_hundred_thousand_sockets_fit_under_the_file_and_port_limits() {
        let plans = plan(input(100_000, 6)).unwrap();
        assert_eq!(plans.len(), 6); // ceil(100,000 / 18,000)
        assert_eq!(
            plans.iter().map(WorkerPlan::sockets).sum::<usize>(),
            100_000
        );
        assert!(plans.iter().all(|p| p.sockets() <= 18_000));
        let sources = per_source(&plans);
        assert_eq!(sources.len(), 5); // ceil(100,000 / 20,000)
        assert!(sources.values().all(|&n| n <= 20_000));
        assert_eq!(*sources.keys().next().unwrap(), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(*sources.keys().last().unwrap(), Ipv4Addr::new(127, 0, 0, 6));
    }

    #[test]
    fn gateways_get_equal_shares_round_robin() {
        let plans = plan(input(15_001, 3)).unwrap();
        let mut per_gateway = [0usize; 3];
        for s in plans.iter().flat_map(|p| &p.segments) {
            per_gateway[s.gateway] += s.count;
        }
        assert_eq!(per_gateway, [5_001, 5_000, 5_000]);
    }

    #[test]
    fn workers_are_balanced_to_within_one_socket() {
        let mut i = input(10, 1);
        i.workers = 3;
        let sizes: Vec<usize> = plan(i).unwrap().iter().map(WorkerPlan::sockets).collect();
        assert_eq!(sizes, vec![4, 3, 3]);
    }

    #[test]
    fn too_few_workers_or_addresses_is_refused_not_overcommitted() {
        let mut i = input(40_000, 1);
        i.workers = 2;
        assert!(plan(i).is_err());
        let mut i = input(40_000, 1);
        i.sources = 1;
        assert!(plan(i).is_err());
        assert!(plan(input(10, 0)).is_err());
    }

    #[test]
    fn every_socket_gets_its_own_port_of_its_address_within_the_range() {
        for (sockets, gateways, workers) in [(100_000, 6, 12), (15_001, 3, 0), (10, 2, 3)] {
            let mut i = input(sockets, gateways);
            i.workers = workers;
            let plans = plan(i).unwrap();
            let mut taken = std::collections::BTreeSet::new();
            for s in plans.iter().flat_map(|p| &p.segments) {
                for k in 0..s.count {
                    let port = usize::from(s.first_port) + k;
                    assert!((32_768..32_768 + 20_000).contains(&port), "{port}");
                    assert!(
                        taken.insert((s.source, port)),
                        "{:?} port {port} twice",
                        s.source
                    );
                }
            }
            assert_eq!(taken.len(), sockets);
        }
    }

    #[test]
    fn ports_that_would_pass_65535_are_refused() {
        // 30,000 sockets over 2 addresses: 15,000 ports each.
        let mut i = input(30_000, 1);
        i.first_port = 50_536;
        let last = plan(i)
            .unwrap()
            .last()
            .unwrap()
            .segments
            .last()
            .copied()
            .unwrap();
        assert_eq!(usize::from(last.first_port) + last.count - 1, 65_535);
        i.first_port += 1;
        assert!(plan(i).is_err());
    }

    #[test]
    fn zero_sockets_is_one_empty_worker() {
        let plans = plan(input(0, 2)).unwrap();
        assert_eq!(plans, vec![WorkerPlan::default()]);
    }
}
