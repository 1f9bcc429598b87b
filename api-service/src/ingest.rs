//! The message ingest pipeline: the checks and the write of `POST /conversations/{id}/messages`
//! (http-api.md §7.1 steps 3–8), batched across concurrent requests.
//!
//! One send on its own costs several PostgreSQL round trips (conversation, membership, reply
//! target, idempotency key, then a transaction with the insert and the key), one Redis round
//! trip and one WAL flush. Concurrent sends instead queue here and a worker takes everything
//! queued at once (up to [`MAX_BATCH`]), so a batch of any size costs:
//!
//! 1. one read statement with every request's checks 3–6 (`CONV`, `MEMBER`, reply target,
//!    `client_msg_id` already used), evaluated in the spec's order per request;
//! 2. one Redis script call taking every surviving request's rate-limit token (step 7) —
//!    replays and refused requests take none;
//! 3. one write statement, committed on its own (one WAL flush), that inserts every allowed
//!    message with its idempotency key and the next `seq` of its conversation.
//!
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

use std::{collections::HashMap, panic::AssertUnwindSafe, sync::Arc, time::Instant};

use futures_util::FutureExt;
use prometheus::Histogram;
use shared_proto::events::{self as pb, EventKind, event::Body};
use sqlx::{PgPool, postgres::PgDatabaseError};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    db::{
        self,
        messages::{MessageRow, NewMessage},
    },
    error::{self, ApiError, Details},
    events::{Audience, Publisher},
    metrics::Metrics,
    rate_limit::RateLimiter,
    resources::Message,
};

/// Most requests one batch takes.
pub const MAX_BATCH: usize = 256;
/// Requests waiting per queue before senders wait for room.
const QUEUE: usize = 4 * MAX_BATCH;
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

/// What became of a send.
#[derive(Debug)]
pub enum Outcome {
    /// Stored and announced: 201.
    Created(Box<Message>),
    /// Refused by one of steps 3–7 (or the database failed).
    Rejected(ApiError),
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
    /// Starts `writers` workers (`SEND_WRITERS`). They stop once every clone of the returned handle is dropped and
    /// their queues are empty.
    pub fn start(
        writers: usize,
        pool: PgPool,
        limiter: RateLimiter,
        events: Publisher,
        metrics: Metrics,
    ) -> Self {
        let stage = |name| metrics.send_stage.with_label_values(&[name]);
        let stages = Stages {
            check: stage("check"),
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
            return Outcome::Rejected(internal("the message writer has stopped"));
        }
        outcome
            .await
            .unwrap_or_else(|_| Outcome::Rejected(internal("the message writer failed")))
    }
}

fn internal(what: &str) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("{what}"))
}

fn database(e: &sqlx::Error) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("database: {e}"))
}

struct Worker {
    pool: PgPool,
    limiter: RateLimiter,
    events: Publisher,
    metrics: Metrics,
    stages: Stages,
}

/// `message_send_stage_seconds`, one series per stage of a batch.
struct Stages {
    check: Histogram,
    rate_limit: Histogram,
    write: Histogram,
    announce: Histogram,
}

impl Worker {
    async fn run(self: Arc<Self>, mut queue: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
            let batch = std::mem::replace(&mut jobs, Vec::with_capacity(MAX_BATCH));
            // A panic answers this batch's requests with 500 (their senders are dropped) and
            // leaves the worker serving the next one.
            if AssertUnwindSafe(self.process(batch))
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!("message batch panicked");
            }
        }
    }

    async fn process(&self, jobs: Vec<Job>) {
        self.metrics.send_batch_size.observe(jobs.len() as f64);
        let started = Instant::now();
        let verdicts = match self.check(&jobs).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "send checks failed");
                for job in jobs {
                    let _ = job.answer.send(Outcome::Rejected(database(&e)));
                }
                return;
            }
        };
        let mut allowed = Vec::with_capacity(jobs.len());
        let mut candidates = Vec::with_capacity(jobs.len());
        for (job, verdict) in jobs.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Pass => candidates.push(job),
                Verdict::Replay => {
                    let _ = job.answer.send(Outcome::Recheck);
                }
                Verdict::Refuse(e) => {
                    let _ = job.answer.send(Outcome::Rejected(e));
                }
            }
        }
        let checked = Instant::now();
        self.stages.check.observe((checked - started).as_secs_f64());
        let senders: Vec<Uuid> = candidates.iter().map(|j| j.request.sender).collect();
        let tokens = self.limiter.take(&senders).await;
        let limited = Instant::now();
        self.stages
            .rate_limit
            .observe((limited - checked).as_secs_f64());
        for (job, token) in candidates.into_iter().zip(tokens) {
            match token {
                Ok(()) => allowed.push(job),
                Err(e) => {
                    let _ = job.answer.send(Outcome::Rejected(e));
                }
            }
        }
        if allowed.is_empty() {
            return;
        }
        let written = self.write_retrying(&allowed).await;
        let wrote = Instant::now();
        self.stages.write.observe((wrote - limited).as_secs_f64());
        match written {
            Ok(rows) => {
                self.announce(allowed, rows).await;
                self.stages.announce.observe(wrote.elapsed().as_secs_f64());
            }
            Err(e) if allowed.len() == 1 => {
                let job = allowed.pop().expect("one job");
                let _ = job.answer.send(failed_write(&e));
            }
            Err(e) => {
                tracing::warn!(error = %e, requests = allowed.len(), "batched send failed; writing one by one");
                for job in allowed {
                    let single = std::slice::from_ref(&job);
                    match self.write_retrying(single).await {
                        Ok(rows) => self.announce(vec![job], rows).await,
                        Err(e) => {
                            let _ = job.answer.send(failed_write(&e));
                        }
                    }
                }
            }
        }
    }

    /// Steps 3–6 for every job, in one statement.
    async fn check(&self, jobs: &[Job]) -> sqlx::Result<Vec<Verdict>> {
        let mut conversations = Vec::with_capacity(jobs.len());
        let mut senders = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        let mut client_ids = Vec::with_capacity(jobs.len());
        for job in jobs {
            let r = &job.request;
            conversations.push(r.conversation);
            senders.push(r.sender);
            replies.push(r.reply_to_id);
            client_ids.push(r.client_msg_id.as_deref());
        }
        // One lateral lookup per key (`limit 1` keeps each a probe with the request's values).
        // The reply lookup, which plans every partition of `messages`, is only there when some
        // request has a reply target.
        let reply_lookup = if replies.iter().any(Option::is_some) {
            "left join lateral (
                 select m.conversation_id, m.is_deleted from messages m
                 where m.id = j.reply limit 1
             ) r on true"
        } else {
            "left join lateral (select null::uuid as conversation_id, null::bool as is_deleted) r
             on true"
        };
        let rows: Vec<(bool, bool, bool, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select c.found is not null, p.found is not null,
                    j.reply is null or coalesce(
                        r.conversation_id = j.conv and not coalesce(r.is_deleted, false), false),
                    k.found is not null
             from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[])
                  with ordinality as j(conv, sender, reply, client_id, ord)
             left join lateral (
                 select true as found from conversations c where c.id = j.conv limit 1
             ) c on true
             left join lateral (
                 select true as found from conversation_participants p
                 where p.conversation_id = j.conv and p.user_id = j.sender and p.left_at is null
                 limit 1
             ) p on true
             left join lateral (
                 select true as found from message_client_ids k
                 where k.conversation_id = j.conv and k.sender_id = j.sender
                   and k.client_msg_id = j.client_id
                 limit 1
             ) k on true
             {reply_lookup}
             order by j.ord"
        )))
        .bind(&conversations)
        .bind(&senders)
        .bind(&replies)
        .bind(&client_ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(jobs
            .iter()
            .zip(rows)
            .map(|(job, (conversation, member, reply, used))| {
                verdict(&job.request, conversation, member, reply, used)
            })
            .collect())
    }

    async fn write_retrying(&self, jobs: &[Job]) -> sqlx::Result<Vec<Option<MessageRow>>> {
        let mut attempt = 1;
        loop {
            match self.write(jobs).await {
                Err(e) if attempt < WRITE_ATTEMPTS && is_transient(&e) => {
                    tracing::warn!(error = %e, attempt, "send write conflict; retrying");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Step 8 for every job, in one statement (its own transaction): each job's row, `None`
    /// for a job that was not inserted.
    async fn write(&self, jobs: &[Job]) -> sqlx::Result<Vec<Option<MessageRow>>> {
        let news: Vec<NewMessage<'_>> = jobs
            .iter()
            .map(|job| {
                let r = &job.request;
                let (id, created_at) = db::messages::new_identity();
                NewMessage {
                    id,
                    created_at,
                    conversation_id: r.conversation,
                    sender_id: r.sender,
                    kind: &r.kind,
                    content: r.content.as_deref(),
                    metadata: r.metadata.as_deref(),
                    reply_to_id: r.reply_to_id,
                    client_msg_id: r.client_msg_id.as_deref(),
                }
            })
            .collect();
        let mut conn = self.pool.acquire().await?;
        let mut rows: HashMap<Uuid, MessageRow> = db::messages::insert_batch(&mut conn, &news)
            .await?
            .into_iter()
            .map(|row| (row.id, row))
            .collect();
        Ok(news.iter().map(|new| rows.remove(&new.id)).collect())
    }

    /// Publishes each new message's event and answers its request, in job order; a job
    /// without a row gets [`Outcome::Recheck`].
    async fn announce(&self, jobs: Vec<Job>, rows: Vec<Option<MessageRow>>) {
        for (job, row) in jobs.into_iter().zip(rows) {
            let Some(row) = row else {
                let _ = job.answer.send(Outcome::Recheck);
                continue;
            };
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
            let _ = job.answer.send(Outcome::Created(Box::new(message)));
        }
    }
}

/// The outcome of a single-request write that failed: a conversation deleted between the checks
/// and the write shows up as a foreign-key violation of its idempotency key (→ recheck, 404).
fn failed_write(e: &sqlx::Error) -> Outcome {
    if sqlstate(e) == Some("23503") {
        Outcome::Recheck
    } else {
        tracing::error!(error = %e, "message insert failed");
        Outcome::Rejected(database(e))
    }
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
enum Verdict {
    Pass,
    Replay,
    Refuse(ApiError),
}

/// Steps 3–6 in the order of §7.1, from what the check statement found.
fn verdict(
    request: &SendRequest,
    conversation_exists: bool,
    member: bool,
    reply_ok: bool,
    client_id_used: bool,
) -> Verdict {
    if !conversation_exists {
        Verdict::Refuse(ApiError::NotFound(error::CONVERSATION_NOT_FOUND))
    } else if !member {
        Verdict::Refuse(ApiError::Forbidden(error::NOT_A_PARTICIPANT))
    } else if request.kind == "system" {
        Verdict::Refuse(ApiError::Forbidden(
            "System messages cannot be sent by users",
        ))
    } else if !reply_ok {
        Verdict::Refuse(Details::one(
            "reply_to_id",
            "reply_to_id must reference a message in this conversation",
        ))
    } else if client_id_used {
        Verdict::Replay
    } else {
        Verdict::Pass
    }
}

/// Batch sizes seen, for the `send_batch_size` histogram's buckets.
pub const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: &str) -> SendRequest {
        SendRequest {
            conversation: Uuid::new_v4(),
            sender: Uuid::new_v4(),
            kind: kind.to_owned(),
            content: Some("hi".to_owned()),
            metadata: None,
            reply_to_id: None,
            client_msg_id: None,
        }
    }

    fn name(v: &Verdict) -> String {
        match v {
            Verdict::Pass => "pass".to_owned(),
            Verdict::Replay => "replay".to_owned(),
            Verdict::Refuse(e) => e.to_string(),
        }
    }

    #[test]
    fn checks_apply_in_the_spec_order() {
        let text = request("text");
        let system = request("system");
        // conversation, member, reply ok, client id used
        let cases = [
            (
                &text,
                (false, false, false, true),
                "not found: Conversation not found",
            ),
            (
                &text,
                (true, false, false, true),
                "forbidden: You are not a participant of this conversation",
            ),
            (
                &system,
                (true, true, false, true),
                "forbidden: System messages cannot be sent by users",
            ),
            (&text, (true, true, false, true), "validation failed"),
            (&text, (true, true, true, true), "replay"),
            (&text, (true, true, true, false), "pass"),
        ];
        for (req, (c, m, r, u), expected) in cases {
            assert_eq!(name(&verdict(req, c, m, r, u)), expected, "{c} {m} {r} {u}");
        }
    }

    #[test]
    fn only_deadlocks_and_serialization_failures_are_retried() {
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::PoolTimedOut));
    }
}
