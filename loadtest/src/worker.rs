//! The hot loop: one worker per connection, taking tickets from the shared schedule until it
//! runs dry. No formatting and no locking here; everything goes into the worker's recorder.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{Connection, ErrorKind, Target};
use crate::plan::Schedule;
use crate::record::Recorder;

/// Run one worker until the schedule ends; returns what it recorded.
pub async fn run(
    target: Arc<Target>,
    schedule: Arc<Schedule>,
    timeout: Duration,
    done: Arc<AtomicU64>,
) -> Recorder {
    let mut rec = Recorder::new();
    let mut conn: Option<Connection> = None;
    while let Some(ticket) = schedule.next(Instant::now()) {
        if let Some(due) = ticket.due {
            tokio::time::sleep_until(due.into()).await;
        }
        // Open loop: measured from when the request was due, so queueing shows.
        let start = ticket.due.unwrap_or_else(Instant::now);
        let outcome = tokio::time::timeout(timeout, attempt(&target, &mut conn)).await;
        let latency = start.elapsed();
        match outcome {
            Ok(Ok(answer)) => {
                let backend = answer
                    .has_backend
                    .then(|| conn.as_ref().map(|c| c.backend()))
                    .flatten();
                rec.answer(answer.status, latency, backend, answer.bytes);
                if !answer.keep_alive {
                    conn = None;
                }
            }
            Ok(Err(kind)) => {
                rec.error(kind, latency);
                conn = None;
            }
            Err(_) => {
                rec.error(ErrorKind::Timeout, latency);
                conn = None;
            }
        }
        done.fetch_add(1, Relaxed);
    }
    rec
}

async fn attempt(
    target: &Target,
    conn: &mut Option<Connection>,
) -> Result<crate::client::Answer, ErrorKind> {
    if conn.is_none() {
        *conn = Some(Connection::open(target).await?);
    }
    let c = conn.as_mut().expect("just opened");
    match c.exchange(target).await {
        // A kept-alive connection the server closed meanwhile: retry once on a fresh one,
        // as browsers and most clients do, unless nothing was read because it is new.
        Err(ErrorKind::Closed) => {
            *conn = Some(Connection::open(target).await?);
            conn.as_mut().expect("just opened").exchange(target).await
        }
        other => other,
    }
}
