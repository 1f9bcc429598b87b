//! The NATS intake thread: the NATS client's connection task and the subscription tasks run on
//! a runtime of their own, on one thread. The conversation and presence subscriptions decode
//! their events and queue them for sockets there; the personal subscription only routes its
//! events to workers on the main runtime, because a `conversation.joined` of a large group is
//! large to decode ([`crate::fanout`]).
//!
//! On the main runtime they would share the workers with every socket's task. Under fan-out load
//! those tasks are many and each of their writes is a `sendto` that wakes a reader, so an event
//! waiting in the NATS socket would wait for the workers to get through the sockets' writes first,
//! and the gateway would take its events off NATS many milliseconds after another subscriber of the
//! same subjects. The thread does little per event (decode, render once, push to the sockets'
//! queues, whose tasks it wakes on the main runtime) and is woken by the NATS socket alone.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::{runtime::Handle, sync::oneshot};

/// The intake runtime. It stops on [`Intake::stop`] or when the last clone of this is dropped;
/// its tasks (the NATS connection, the subscriptions) are dropped with it.
///
/// The subscription tasks hold the [`crate::fanout::Fanout`] that holds this, so a gateway that
/// ends calls `stop` rather than waiting for the drop.
#[derive(Clone)]
pub struct Intake {
    handle: Handle,
    stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
}

impl Intake {
    /// Starts the thread (`ws-gateway-intake`) and its single-threaded runtime.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("ws-gateway-intake".into())
            .spawn(move || {
                // Ends on `stop` and also when the sender is dropped.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                drop(runtime);
            })?;
        Ok(Self {
            handle,
            stop: Arc::new(Mutex::new(Some(stop))),
        })
    }

    /// Where intake tasks are spawned.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stops the runtime (for every clone) and drops its tasks.
    pub fn stop(&self) {
        let sender = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn its_tasks_run_on_the_intake_thread_and_stop_with_the_last_clone() {
        let intake = Intake::start().unwrap();
        let thread = intake
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(thread.as_deref(), Some("ws-gateway-intake"));

        // A task that would run forever holds `held`; it is dropped when the runtime stops.
        let (held, mut released) = oneshot::channel::<()>();
        intake.handle().spawn(async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        let clone = intake.clone();
        drop(intake);
        let early = tokio::time::timeout(Duration::from_millis(200), &mut released).await;
        assert!(early.is_err(), "still running while a clone is held");
        drop(clone);
        let outcome = tokio::time::timeout(Duration::from_secs(5), released).await;
        assert!(
            matches!(outcome, Ok(Err(_))),
            "the task was dropped with the runtime"
        );
    }

    #[tokio::test]
    async fn stop_ends_its_tasks_while_clones_are_still_held() {
        let intake = Intake::start().unwrap();
        let (held, released) = oneshot::channel::<()>();
        // The task holds a clone itself, as the subscription tasks hold the fan-out that holds it.
        let inner = intake.clone();
        intake.handle().spawn(async move {
            let (_held, _inner) = (held, inner);
            std::future::pending::<()>().await;
        });
        intake.stop();
        let outcome = tokio::time::timeout(Duration::from_secs(5), released).await;
        assert!(matches!(outcome, Ok(Err(_))), "the task was dropped");
        intake.stop();
    }
}
