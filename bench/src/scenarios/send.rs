//! `send`: C concurrent REST clients, each in a closed loop (next request when the previous
//! answered), over K group conversations. Measures accepted messages per second and the latency
//! of every `POST /conversations/{id}/messages`.

use std::{collections::BTreeMap, path::PathBuf, time::Instant};

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use uuid::Uuid;

use crate::{
    client::{Api, AuthArgs, Identity},
    report::Report,
    scenarios::secs,
    stats::Latencies,
};

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// api-service base URL.
    #[arg(long, default_value = "http://127.0.0.1:8082")]
    pub api: String,
    /// Concurrent clients (each one user, one request in flight).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Conversations the clients post into (client i posts into conversation i mod K).
    #[arg(long, default_value_t = 32)]
    pub conversations: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring (warms pools and caches).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Write the JSON result here.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// Which conversations each client posts into, and so who must be a member of each: client `i`
/// posts into `i mod K`, and when there are more conversations than clients, also into every
/// `k` with `k mod C == i`.
pub fn assignments(clients: usize, conversations: usize) -> Vec<Vec<usize>> {
    (0..clients)
        .map(|i| {
            let mut convs: Vec<usize> = (0..conversations).filter(|k| k % clients == i).collect();
            if convs.is_empty() {
                convs.push(i % conversations);
            }
            convs
        })
        .collect()
}

pub async fn run(args: SendArgs) -> Result<Report> {
    if args.clients == 0 || args.conversations == 0 {
        bail!("--clients and --conversations must be at least 1");
    }
    let identity = Identity::new(&args.auth)?;
    let api = Api::new(&args.api, identity, args.clients + 8)?;
    let mut report = Report::new(
        "send",
        json!({"clients": args.clients, "conversations": args.conversations,
               "duration_s": args.duration, "warmup_s": args.warmup, "auth": args.auth.auth}),
    );

    // Setup: users, then each conversation with its posting clients (+ one bystander so that a
    // conversation with a single client still has a participant).
    let users: Vec<Uuid> = (0..args.clients).map(|_| Uuid::new_v4()).collect();
    let plan = assignments(args.clients, args.conversations);
    let mut members: Vec<Vec<Uuid>> = vec![Vec::new(); args.conversations];
    for (i, convs) in plan.iter().enumerate() {
        for &k in convs {
            members[k].push(users[i]);
        }
    }
    let mut conversation_ids = Vec::with_capacity(args.conversations);
    for (k, m) in members.iter().enumerate() {
        let mut others = m[1..].to_vec();
        others.push(Uuid::new_v4());
        conversation_ids.push(
            api.create_group(m[0], &others, &format!("bench send {k}"))
                .await?,
        );
    }

    let started = Instant::now();
    let warm_until = started + secs(args.warmup);
    let stop_at = warm_until + secs(args.duration);
    let run_id = Uuid::new_v4().simple().to_string();
    let mut tasks = Vec::new();
    for (i, convs) in plan.into_iter().enumerate() {
        let api = api.clone();
        let convs: Vec<Uuid> = convs.iter().map(|&k| conversation_ids[k]).collect();
        let (h, v) = api.identity().header(users[i]);
        let prefix = format!("s{}-{i}-", &run_id[..8]);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::new();
            let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
            let mut n = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= stop_at {
                    break;
                }
                let conv = convs[n as usize % convs.len()];
                let result = api.send((h, &v), conv, &format!("{prefix}{n}")).await;
                n += 1;
                if t0 < warm_until {
                    continue;
                }
                latencies.record(t0.elapsed());
                let key = match result {
                    Ok(sent) => sent.status.to_string(),
                    Err(e) => format!("transport: {e}").chars().take(80).collect(),
                };
                *statuses.entry(key).or_default() += 1;
            }
            (latencies, statuses)
        }));
    }
    let mut latencies = Latencies::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let (l, s) = t.await?;
        latencies.merge(&l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    let measured = Instant::now().duration_since(warm_until).as_secs_f64();
    report.duration_secs = started.elapsed().as_secs_f64();
    let ok = statuses.get("201").copied().unwrap_or(0);
    let errors: u64 = statuses
        .iter()
        .filter(|(k, _)| *k != "201")
        .map(|(_, v)| v)
        .sum();
    report.metric("messages/s (201)", ok as f64 / measured, "1/s");
    report.metric("messages accepted", ok as f64, "");
    report.metric("errors", errors as f64, "");
    report.latency("http", &latencies.summary());
    for (k, v) in statuses.iter().filter(|(k, _)| *k != "201") {
        report.note(format!("status {k}: {v}"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_conversation_gets_a_client_and_every_client_a_conversation() {
        for (c, k) in [(32, 32), (32, 8), (4, 10), (1, 1), (3, 7)] {
            let plan = assignments(c, k);
            assert_eq!(plan.len(), c);
            assert!(plan.iter().all(|convs| !convs.is_empty()));
            let mut covered = vec![false; k];
            for convs in &plan {
                for &conv in convs {
                    covered[conv] = true;
                }
            }
            assert!(covered.iter().all(|&x| x), "{c} clients, {k} conversations");
        }
    }
}
