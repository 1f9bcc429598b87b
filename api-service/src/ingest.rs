//! The message ingest pipeline: the checks and the write of `POST /conversations/{id}/messages`
//! (docs/api.md, "Sending messages"), batched across concurrent requests.
//!
//! The steps of a send, in the order whose first failure decides the answer: 1–2 the field
//! rules (checked by the route), 3 the conversation exists, 4 the sender is an active
//! participant and the message is not `system`, 5 `reply_to_id` names a message of the
//! conversation, 6 `client_msg_id` is not used yet (else a replay), 7 a rate-limit token,
//! 8 the insert.
//!
//! One send on its own costs several PostgreSQL round trips (conversation, membership, reply
//! target, idempotency key, then a transaction with the insert and the key), one Redis round
//! trip and one WAL flush. Concurrent sends instead queue here and a worker takes everything
//! queued at once (up to [`MAX_BATCH`]), so a batch of any size costs:
//!
//! 1. one Redis script call taking a rate-limit token (step 7) for every request — taken ahead
//!    of the checks, and given back afterwards for requests the checks refuse and for replays,
//!    so each answer and each bucket are what the order of the steps gives;
//! 2. one statement, committed on its own (one WAL flush), with every request's checks 3–6
//!    and the insert of every message that passed them and got a token, with its idempotency
//!    key and the next `seq` of its conversation. Rust then picks each request's answer from
//!    what the statement found, in the order of the steps.
//!
//! The two run as a pipeline: a batch's tokens are taken while the previous batch is written.
//! Then each new message's `message.new` event is published, in batch order (so each
//! conversation's events leave in `seq` order), and each request gets its answer.
//!
//! Requests are sharded over `SEND_WRITERS` workers by conversation: each conversation's sends go
//! through one queue (first come, first numbered) and two workers of this process never write
//! the same conversation at once. Workers of other replicas may; the write locks conversation
//! rows in id order, so two batches cannot deadlock on them (a deadlock with some other
//! transaction is retried).
//!
//! A batch whose write fails for another reason is split into single-request writes, so one
//! bad request cannot fail its neighbours.

use std::{
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use shared_proto::events::{self as pb, EventKind, event::Body};
use sqlx::{Connection as _, PgPool, Postgres, pool::PoolConnection, postgres::PgDatabaseError};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    db::{
        self,
        messages::{NewMessage, Sent},
    },
    events::{Audience, Publisher},
    metrics::{Histogram, Metrics},
    rate_limit::{RateLimited, RateLimiter, Token},
    resources::Message,
};

/// Most requests one batch takes.
pub const MAX_BATCH: usize = 256;
/// Requests waiting per queue before senders wait for room.
const QUEUE: usize = 4 * MAX_BATCH;
/// Admitted batches waiting for the write stage (they are written together).
const WRITE_QUEUE: usize = 4;
/// Writes retried after a deadlock or serialization failure.
const WRITE_ATTEMPTS: usize = 3;

/// A send that passed the field rules (steps 1–2).
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub conversation: Uuid,
    pub sender: Uuid,
    /// One of the `message_type` values (`system` is refused at step 4).
    pub kind: String,
    pub content: Option<String>,
    /// Compact JSON text, stored as `jsonb`.
    pub metadata: Option<String>,
    pub reply_to_id: Option<Uuid>,
    pub client_msg_id: Option<String>,
}

/// Why a send was refused by one of steps 3–7, or could not be written. The HTTP edge answers
/// each variant with its status (`error.rs`).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Step 3: no such conversation.
    #[error("conversation not found")]
    ConversationNotFound,
    /// Step 4: the sender is not an active participant.
    #[error("the sender is not a participant")]
    NotAParticipant,
    /// Step 4: `system` messages are never sent by users.
    #[error("system messages cannot be sent by users")]
    SystemMessage,
    /// Step 5: `reply_to_id` names no message of this conversation.
    #[error("reply_to_id is not a message of this conversation")]
    ReplyTargetNotFound,
    /// Step 7: no rate-limit token.
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// The pipeline or the database failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What became of a send.
#[derive(Debug)]
pub enum Outcome {
    /// Stored and announced: 201.
    Created(Box<Message>),
    /// Refused by one of steps 3–7, or the write failed.
    Rejected(SendError),
    /// Not stored, and the answer needs a look at the database as it is now: the sender's
    /// `client_msg_id` is already used (step 6: a replay, or a concurrent twin that won the
    /// write), or the conversation or the membership went away between the checks and the write.
    Recheck,
}

struct Job {
    request: SendRequest,
    answer: oneshot::Sender<Outcome>,
}

/// The front of the pipeline, held by the routes. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    queues: Arc<[mpsc::Sender<Job>]>,
}

impl Ingest {
    /// Starts `writers` workers (`SEND_WRITERS`). They stop once every clone of the returned handle
    /// is dropped and their queues are empty.
    pub fn start(
        writers: usize,
        pool: PgPool,
        limiter: RateLimiter,
        events: Publisher,
        metrics: Metrics,
    ) -> Self {
        let stage = |name| metrics.send_stage.with_label_values(&[name]);
        let stages = Stages {
            rate_limit: stage("rate_limit"),
            write: stage("write"),
            announce: stage("announce"),
        };
        let worker = Arc::new(Worker {
            pool,
            limiter,
            events,
            metrics,
            stages,
        });
        let queues = (0..writers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(Arc::clone(&worker).run(rx));
                tx
            })
            .collect();
        Self { queues }
    }

    /// Runs steps 3–8 for one send and waits for its outcome.
    pub async fn send(&self, request: SendRequest) -> Outcome {
        let shard = (request.conversation.as_u64_pair().1 % self.queues.len() as u64) as usize;
        let (answer, outcome) = oneshot::channel();
        if self.queues[shard]
            .send(Job { request, answer })
            .await
            .is_err()
        {
            return Outcome::Rejected(anyhow::anyhow!("the message writer has stopped").into());
        }
        outcome.await.unwrap_or_else(|_| {
            Outcome::Rejected(anyhow::anyhow!("the message writer failed").into())
        })
    }
}

struct Worker {
    pool: PgPool,
    limiter: RateLimiter,
    events: Publisher,
    metrics: Metrics,
    stages: Stages,
}

/// `api_service_message_send_stage_seconds`, one series per stage of a batch.
struct Stages {
    rate_limit: Histogram,
    write: Histogram,
    announce: Histogram,
}

/// A write stage's connection, kept between writes. Taking a connection from the pool and giving
/// it back costs two round trips besides the statement's own: sqlx checks a connection when it
/// is given back and again when it is taken (`test_before_acquire`), and at one write at a time
/// those checks would sit on the stage's critical path. Dropped — and so given back,
/// where the pool checks it — after any error but one PostgreSQL answered, and taken again for
/// the next write. One left idle for [`Held::IDLE_CHECK`] is checked before its next write, as
/// the pool would have, so a connection the server closed meanwhile (a restart, an idle
/// timeout, `pg_terminate_backend`) costs no send its answer. One kept for the pool's
/// `max_lifetime` is given back before the next write, where the pool retires it (the
/// connection is at least that old), as it would any connection in its care.
#[derive(Default)]
struct Held {
    conn: Option<PoolConnection<Postgres>>,
    last_used: Option<Instant>,
    /// When the kept connection was taken from the pool.
    taken: Option<Instant>,
}

impl Held {
    const IDLE_CHECK: Duration = Duration::from_secs(1);

    /// The connection for the next write: the one kept (checked first if it sat idle), or a
    /// new one from the pool.
    async fn take(&mut self, pool: &PgPool) -> sqlx::Result<&mut PoolConnection<Postgres>> {
        let lifetime = pool.options().get_max_lifetime();
        if self.conn.is_some()
            && let (Some(taken), Some(lifetime)) = (self.taken, lifetime)
            && taken.elapsed() >= lifetime
        {
            self.conn = None;
        }
        if let Some(conn) = &mut self.conn
            && self
                .last_used
                .is_none_or(|t| t.elapsed() >= Self::IDLE_CHECK)
            && conn.ping().await.is_err()
        {
            self.conn = None;
        }
        match &mut self.conn {
            Some(conn) => Ok(conn),
            slot => {
                let conn = pool.acquire().await?;
                self.taken = Some(Instant::now());
                Ok(slot.insert(conn))
            }
        }
    }

    /// After a write: anything but an error PostgreSQL answered (the statement failed, the
    /// connection is fine) may have left the connection broken or mid-exchange, so it goes.
    fn used<T>(&mut self, result: &sqlx::Result<T>) {
        self.last_used = Some(Instant::now());
        if let Err(e) = result
            && !matches!(e, sqlx::Error::Database(_))
        {
            self.conn = None;
        }
    }
}

/// A request with its rate-limit token (step 7), taken before its checks.
struct Admitted {
    job: Job,
    token: Token,
}

impl Worker {
    /// The two stages of one queue: this task takes the batch's rate-limit tokens, a second
    /// task checks and writes the batch in one statement and announces it, so the tokens of
    /// batch n+1 are taken while batch n is written. Writes stay one at a time and in queue
    /// order, so each conversation's messages are numbered and announced in arrival order.
    async fn run(self: Arc<Self>, mut queue: mpsc::Receiver<Job>) {
        let (admitted, to_write) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(Arc::clone(&self).write_stage(to_write));
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
            let batch = std::mem::replace(&mut jobs, Vec::with_capacity(MAX_BATCH));
            // A panic answers this batch's requests with 500 (their senders are dropped) and
            // leaves the stage serving the next one.
            let Ok(batch) = AssertUnwindSafe(self.admit(batch)).catch_unwind().await else {
                tracing::error!("message batch panicked taking its tokens");
                continue;
            };
            if admitted.send(batch).await.is_err() {
                tracing::error!("the message write stage has stopped");
                return;
            }
        }
    }

    /// Writes admitted batches in order; batches that queued up behind a write go together
    /// into the next one.
    ///
    /// The stage keeps its connection from one write to the next ([`Held`]).
    async fn write_stage(self: Arc<Self>, mut admitted: mpsc::Receiver<Vec<Admitted>>) {
        let mut batches = Vec::with_capacity(WRITE_QUEUE);
        let mut held = Held::default();
        while admitted.recv_many(&mut batches, WRITE_QUEUE).await > 0 {
            let batch: Vec<Admitted> = batches.drain(..).flatten().collect();
            if AssertUnwindSafe(self.store(&mut held, batch))
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!("message batch panicked in its write");
                // The statement may have been left half-way: start again on a fresh connection.
                held.conn = None;
            }
        }
    }

    /// Step 7, taken ahead of steps 3–6 so that one statement can do the checks and the write:
    /// a token per request (none for `system` messages, which step 4 always refuses). Tokens
    /// of requests the checks then refuse, and of replays, are given back ([`Self::store`]),
    /// so the buckets count what the steps in their order would have counted.
    async fn admit(&self, jobs: Vec<Job>) -> Vec<Admitted> {
        self.metrics.send_batch_size.observe(jobs.len() as f64);
        let started = Instant::now();
        let limited: Vec<Uuid> = jobs
            .iter()
            .filter(|j| j.request.kind != "system")
            .map(|j| j.request.sender)
            .collect();
        let mut tokens = self.limiter.take_tokens(&limited).await.into_iter();
        self.stages
            .rate_limit
            .observe(started.elapsed().as_secs_f64());
        jobs.into_iter()
            .map(|job| {
                let token = if job.request.kind == "system" {
                    Token::Open
                } else {
                    tokens.next().unwrap_or(Token::Open)
                };
                Admitted { job, token }
            })
            .collect()
    }

    /// Steps 3–6 and 8 in one statement, then each request's answer and each new message's
    /// announcement.
    async fn store(&self, held: &mut Held, mut batch: Vec<Admitted>) {
        let started = Instant::now();
        let written = self.write_retrying(held, &batch).await;
        let wrote = Instant::now();
        self.stages.write.observe((wrote - started).as_secs_f64());
        match written {
            Ok(sent) => {
                self.answer(batch, sent).await;
                self.stages.announce.observe(wrote.elapsed().as_secs_f64());
            }
            Err(e) if batch.len() == 1 => {
                let one = batch.pop().expect("one request");
                let _ = one.job.answer.send(failed_write(e));
            }
            Err(e) => {
                tracing::warn!(error = %shared_ops::Chain(&e), requests = batch.len(), "batched send failed; writing one by one");
                for one in batch {
                    let single = std::slice::from_ref(&one);
                    match self.write_retrying(held, single).await {
                        Ok(sent) => self.answer(vec![one], sent).await,
                        Err(e) => {
                            let _ = one.job.answer.send(failed_write(e));
                        }
                    }
                }
            }
        }
    }

    async fn write_retrying(&self, held: &mut Held, batch: &[Admitted]) -> sqlx::Result<Vec<Sent>> {
        let mut attempt = 1;
        loop {
            match self.write(held, batch).await {
                Err(e) if attempt < WRITE_ATTEMPTS && is_transient(&e) => {
                    tracing::warn!(error = %shared_ops::Chain(&e), attempt, "send write conflict; retrying");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Steps 3–6 and 8 for every request, in one statement (its own transaction).
    async fn write(&self, held: &mut Held, batch: &[Admitted]) -> sqlx::Result<Vec<Sent>> {
        let mut news = Vec::with_capacity(batch.len());
        let mut admitted = Vec::with_capacity(batch.len());
        for one in batch {
            let r = &one.job.request;
            let (id, created_at) = db::messages::new_identity();
            news.push(NewMessage {
                id,
                created_at,
                conversation_id: r.conversation,
                sender_id: r.sender,
                kind: &r.kind,
                content: r.content.as_deref(),
                metadata: r.metadata.as_deref(),
                reply_to_id: r.reply_to_id,
                client_msg_id: r.client_msg_id.as_deref(),
            });
            admitted.push(one.token.allowed());
        }
        let conn = held.take(&self.pool).await?;
        let written = db::messages::send_batch(conn, &news, &admitted).await;
        held.used(&written);
        written
    }

    /// Answers each request and publishes each new message's event, in batch order. Requests
    /// that were refused or replayed after taking a token get their token back first, and
    /// their answer after that (so a client's next send sees the bucket as the steps in
    /// their order leave it), off this stage.
    async fn answer(&self, batch: Vec<Admitted>, sent: Vec<Sent>) {
        let mut refunds = Vec::new();
        let mut after_refund = Vec::new();
        for (Admitted { job, token }, sent) in batch.into_iter().zip(sent) {
            let verdict = verdict(
                &job.request,
                sent.conversation_found,
                sent.member,
                sent.reply_ok,
                sent.key_used,
            );
            // A refused or replayed request that took a token gives it back before its answer.
            let refund = matches!(token, Token::Taken) && !matches!(verdict, Verdict::Pass);
            let outcome = match (verdict, token, sent.row) {
                (Verdict::Refuse(e), _, _) => Outcome::Rejected(e),
                (Verdict::Replay, _, _) => Outcome::Recheck,
                (Verdict::Pass, Token::Refused(limited), _) => {
                    self.metrics.rate_limited.inc();
                    Outcome::Rejected(limited.into())
                }
                // Passed its checks but was not stored: its `client_msg_id` went to a
                // concurrent twin (or an earlier request of this batch), or the conversation
                // went away before the write locked it.
                (Verdict::Pass, _, None) => Outcome::Recheck,
                (Verdict::Pass, _, Some(row)) => {
                    self.metrics.messages_persisted.inc();
                    let message = row.into_resource(Vec::new(), Vec::new());
                    self.events
                        .publish(
                            EventKind::MessageNew,
                            Audience::Room,
                            message.conversation_id,
                            message.sender_id,
                            Body::Message(pb::Message::from(&message)),
                        )
                        .await;
                    Outcome::Created(Box::new(message))
                }
            };
            if refund {
                refunds.push(job.request.sender);
                after_refund.push((job.answer, outcome));
            } else {
                let _ = job.answer.send(outcome);
            }
        }
        if !refunds.is_empty() {
            let limiter = self.limiter.clone();
            tokio::spawn(async move {
                limiter.refund(&refunds).await;
                for (answer, outcome) in after_refund {
                    let _ = answer.send(outcome);
                }
            });
        }
    }
}

/// The outcome of a single-request write that failed. Not logged here: the request's answer
/// carries the cause, and the HTTP edge logs it once with its cause chain.
fn failed_write(e: sqlx::Error) -> Outcome {
    Outcome::Rejected(
        anyhow::Error::new(e)
            .context("message insert failed")
            .into(),
    )
}

fn sqlstate(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<PgDatabaseError>()
            .map(PgDatabaseError::code),
        _ => None,
    }
}

/// Deadlock or serialization failure: the statement did nothing and may simply run again.
fn is_transient(e: &sqlx::Error) -> bool {
    matches!(sqlstate(e), Some("40P01" | "40001"))
}

/// The result of steps 3–6 for one request.
#[derive(Debug)]
pub(crate) enum Verdict {
    Pass,
    Replay,
    Refuse(SendError),
}

/// Steps 3–6 in their order, from what the check statement found.
pub(crate) fn verdict(
    request: &SendRequest,
    conversation_exists: bool,
    member: bool,
    reply_ok: bool,
    client_id_used: bool,
) -> Verdict {
    if !conversation_exists {
        Verdict::Refuse(SendError::ConversationNotFound)
    } else if !member {
        Verdict::Refuse(SendError::NotAParticipant)
    } else if request.kind == "system" {
        Verdict::Refuse(SendError::SystemMessage)
    } else if !reply_ok {
        Verdict::Refuse(SendError::ReplyTargetNotFound)
    } else if client_id_used {
        Verdict::Replay
    } else {
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backend behind the kept connection.
    async fn backend(held: &mut Held, pool: &PgPool) -> i32 {
        let conn = held.take(pool).await.expect("connection");
        let pid = sqlx::query_scalar::<_, i32>("select pg_backend_pid()")
            .fetch_one(&mut **conn)
            .await;
        held.used(&pid);
        pid.expect("pid")
    }

    fn pool(max_lifetime: Option<Duration>) -> PgPool {
        let url = std::env::var("TEST_DATABASE_ADMIN_URL")
            .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(max_lifetime)
            .connect_lazy(&url)
            .expect("database URL")
    }

    #[tokio::test]
    async fn a_kept_connection_is_retired_once_it_reaches_the_pools_max_lifetime() {
        // Without a lifetime the same backend serves every write.
        let (forever, mut held) = (pool(None), Held::default());
        let first = backend(&mut held, &forever).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(backend(&mut held, &forever).await, first);

        let (short, mut held) = (pool(Some(Duration::from_millis(500))), Held::default());
        let first = backend(&mut held, &short).await;
        assert_eq!(backend(&mut held, &short).await, first, "kept while young");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let second = backend(&mut held, &short).await;
        assert_ne!(second, first, "a new backend after the lifetime");
        assert_eq!(
            backend(&mut held, &short).await,
            second,
            "and that one is kept"
        );
    }

    #[test]
    fn the_batch_size_histogram_reaches_the_largest_batch() {
        assert_eq!(
            crate::metrics::BATCH_BUCKETS.last().copied(),
            Some(MAX_BATCH as f64)
        );
    }

    #[test]
    fn only_deadlocks_and_serialization_failures_are_retried() {
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::PoolTimedOut));
    }
}
