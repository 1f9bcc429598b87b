//! For tests of both services (feature `test-support`): a `redis-server` of a test's own, on a
//! free port, that the test can kill (SIGKILL) and start again on the same port; and a Redis
//! Cluster of six of them ([`TestCluster`]). Never the shared server on 6379.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use fred::{
    clients::Client,
    interfaces::ClientLike,
    types::{
        Builder,
        config::{Config, ReconnectPolicy},
    },
};

/// How long [`TestRedis::restart`] waits for the server to answer.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long [`TestCluster`] waits for the cluster to form or to fail over.
const CLUSTER_PATIENCE: Duration = Duration::from_secs(60);

/// A `redis-server` of one test, killed (SIGKILL) when dropped.
pub struct TestRedis {
    pub port: u16,
    child: Option<Child>,
}

impl TestRedis {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers `PING`.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.child = Some(
            Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server"),
        );
        tokio::time::timeout(PATIENCE, async {
            loop {
                let answer = tokio::time::timeout(Duration::from_secs(1), async {
                    let conn = self.connect().await?;
                    conn.ping::<String>(None).await
                })
                .await;
                if matches!(answer, Ok(Ok(_))) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("redis-server on port {} did not come up", self.port));
    }

    /// Kills the server with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A plain connection of the test's own, bypassing any handle under test.
    pub async fn connect(&self) -> Result<Client, fred::error::Error> {
        connect(&self.url()).await
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A connected fred client for `url` (any form), of a test's own. Unlike the services' handle
/// it uses fred's reconnect policy (every 100 ms, without end), so a test's client to a cluster
/// finds the promoted replica after a failover by itself.
pub async fn connect(url: &str) -> Result<Client, fred::error::Error> {
    let client = Builder::from_config(Config::from_url(url)?)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(2))
        .set_policy(ReconnectPolicy::new_constant(0, 100))
        .build()?;
    client.init().await?;
    Ok(client)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Redis Cluster of one test: six `redis-server`s on free ports (three masters with a
/// replica each, `cluster-node-timeout` 1 s so a killed master's replica takes over within
/// seconds), its node files in a directory of its own. Every node is killed (SIGKILL) and the
/// directory removed when dropped.
pub struct TestCluster {
    /// Port and process of each node; `None` once killed.
    nodes: Vec<(u16, Option<Child>)>,
    dir: PathBuf,
}

impl TestCluster {
    /// Starts six nodes, joins them with `redis-cli --cluster create … --cluster-replicas 1`
    /// and waits until every node reports `cluster_state:ok` and every master has its replica.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "retich-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..6 {
            let port = free_port();
            let conf = cluster.dir.join(format!("nodes-{port}.conf"));
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(&conf)
                .args(["--cluster-node-timeout", "1000"])
                .args(["--appendonly", "no", "--save", ""])
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            cluster.nodes.push((port, Some(child)));
        }
        for port in cluster.ports() {
            wait_until(&format!("node {port} answers"), || async move {
                cli(port, &["PING"]).await.as_deref() == Some("PONG")
            })
            .await;
        }
        let addresses: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("run redis-cli --cluster create");
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_until_healthy(3).await;
        cluster
    }

    /// Ports of the nodes still running.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
            .collect()
    }

    /// `redis-cluster://127.0.0.1:<first>?node=127.0.0.1:<other>&…` listing every node.
    pub fn url(&self) -> String {
        let ports: Vec<u16> = self.nodes.iter().map(|(p, _)| *p).collect();
        let others: Vec<String> = ports[1..]
            .iter()
            .map(|p| format!("node=127.0.0.1:{p}"))
            .collect();
        format!(
            "redis-cluster://127.0.0.1:{}?{}",
            ports[0],
            others.join("&")
        )
    }

    /// The port of the master serving `key`'s slot right now.
    pub async fn master_of(&self, key: &str) -> u16 {
        self.try_master_of(key)
            .await
            .unwrap_or_else(|| panic!("no live master serves the slot of {key}"))
    }

    /// The port of the live master serving `key`'s slot as the first running node sees it, if
    /// any (none between a master's failure and its replica's promotion).
    async fn try_master_of(&self, key: &str) -> Option<u16> {
        let port = self.ports()[0];
        let slot: u16 = cli(port, &["CLUSTER", "KEYSLOT", key])
            .await
            .and_then(|s| s.trim().parse().ok())
            .expect("CLUSTER KEYSLOT");
        for running in self.ports() {
            let Some(nodes) = cli(running, &["CLUSTER", "NODES"]).await else {
                continue;
            };
            for line in nodes.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                    continue;
                }
                let serves = fields[8..].iter().any(|range| match range.split_once('-') {
                    Some((a, b)) => {
                        a.parse::<u16>().ok() <= Some(slot) && Some(slot) <= b.parse().ok()
                    }
                    None => range.parse::<u16>().ok() == Some(slot),
                });
                if serves {
                    let address = fields[1].split('@').next().unwrap_or_default();
                    return address.rsplit(':').next().and_then(|p| p.parse().ok());
                }
            }
            break;
        }
        None
    }

    /// Kills the node on `port` with SIGKILL.
    pub fn kill(&mut self, port: u16) {
        for (p, child) in &mut self.nodes {
            if *p == port
                && let Some(mut child) = child.take()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Kills the master serving `key` and waits until its replica has been promoted (the slot
    /// has a live master again and every remaining node reports `cluster_state:ok`). Returns the
    /// killed port.
    pub async fn fail_over(&mut self, key: &str) -> u16 {
        let master = self.master_of(key).await;
        self.kill(master);
        // Until the other nodes mark the master failed they still report cluster_state:ok, so
        // the promotion comes first.
        wait_until("the slot has a new master", || async {
            self.try_master_of(key)
                .await
                .is_some_and(|now| now != master)
        })
        .await;
        self.wait_until_healthy(2).await;
        master
    }

    /// Every running node reports `cluster_state:ok`, and at least `replicated` masters have a
    /// connected replica (which a failover needs).
    async fn wait_until_healthy(&self, replicated: usize) {
        for port in self.ports() {
            wait_until(&format!("cluster_state:ok on {port}"), || async move {
                cli(port, &["CLUSTER", "INFO"])
                    .await
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            })
            .await;
        }
        let ports = self.ports();
        wait_until("the masters' replicas are in sync", || {
            let ports = ports.clone();
            async move {
                let mut synced = 0;
                for port in ports {
                    let info = cli(port, &["INFO", "replication"])
                        .await
                        .unwrap_or_default();
                    if info.contains("role:master") && info.contains("slave0:") {
                        synced += usize::from(info.contains("state=online"));
                    }
                }
                synced >= replicated
            }
        })
        .await;
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p <port> <args>`'s output, `None` if it failed.
async fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Polls `check` until it holds, at most [`CLUSTER_PATIENCE`].
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(CLUSTER_PATIENCE, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("test cluster: {what} (waited {CLUSTER_PATIENCE:?})"));
}
