//! For tests of both services (feature `test-support`): a `redis-server` of a test's own, on a
//! free port, that the test can kill (SIGKILL) and start again on the same port. Never the
//! shared server on 6379.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// How long [`TestRedis::restart`] waits for the server to answer.
const PATIENCE: Duration = Duration::from_secs(10);

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
                    let mut conn = self.connect().await?;
                    redis::cmd("PING").query_async::<String>(&mut conn).await
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
    pub async fn connect(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
