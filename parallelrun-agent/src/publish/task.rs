//! The publisher task: takes messages from the buffer's front and
//! publishes them to JetStream with their message ids, a window at a time,
//! until each is acknowledged.
//!
//! # Rules
//!
//! - The client connects in the background and reconnects for ever; while
//!   NATS is away publishes fail (counted in `errors`), the task waits
//!   [`RETRY`] and tries the same messages again, in order, with the same
//!   ids, so one that was stored before its acknowledgement was lost is
//!   not stored twice.
//! - Once a result is waiting, the task lingers [`LINGER`] before it takes
//!   the window, as a Kafka producer's `linger.ms` does: the events of that
//!   moment join one message per subject ([`super::queue`]), so a busy
//!   agent pays one publish and one acknowledgement per many events
//!   rather than per event. Results reach NATS up to that much later.
//! - The stream is looked up (created when missing: [`stream_config`])
//!   before the first publish and again after any failure.
//! - One warning when NATS goes away (or cannot be published to), one
//!   when publishing works again.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use async_nats::{
    ConnectOptions, Event, ServerAddr,
    jetstream::{self, message::PublishMessage, stream},
};
use tracing::{debug, info, warn};

use super::stats::Shared;

/// How long the first waiting result waits for others to join it.
pub const LINGER: Duration = Duration::from_millis(20);
/// Messages published before their acknowledgements are awaited.
const WINDOW: usize = 64;
/// How long an acknowledgement (or a stream look-up) is awaited.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failure before the same messages are tried again.
const RETRY: Duration = Duration::from_millis(500);
/// How long JetStream remembers a message id.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// The stream created when `name` is missing: every parallelrun subject,
/// on disk, message ids remembered for [`DUPLICATE_WINDOW`].
pub fn stream_config(name: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![super::subject::STREAM_SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..stream::Config::default()
    }
}

/// The client options of the agent: background (re)connection, quick
/// retries, a warning when the connection goes and comes back.
pub fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .name("parallelrun")
        .retry_on_initial_connect()
        .connection_timeout(ACK_TIMEOUT)
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(20) as u64))
        .event_callback(|event| async move {
            match event {
                Event::Disconnected => warn!(
                    "NATS went away: results are buffered (--nats-buffer) until it comes back"
                ),
                Event::Connected => info!("connected to NATS: buffered results are published"),
                // Each failed reconnection attempt: the warning above said it.
                Event::ClientError(e) => debug!("NATS: {e}"),
                other => warn!("NATS: {other}"),
            }
        })
}

/// Publishes from `shared.queue` to `stream` on `url` until aborted.
pub async fn run(shared: Arc<Shared>, url: ServerAddr, stream: String) {
    let client = match connect_options().connect(url.clone()).await {
        Ok(c) => c,
        Err(e) => {
            // Only a bad address fails here (connecting is retried in the
            // background): nothing is published, everything is counted.
            warn!(
                "cannot use NATS at {} ({e}): results are not published",
                super::subject::display(&url)
            );
            return;
        }
    };
    let mut js = jetstream::new(client);
    js.set_timeout(ACK_TIMEOUT);
    let config = stream_config(&stream);
    let mut stream_ready = false;
    let mut away = false;
    loop {
        shared.queue.ready().await;
        tokio::time::sleep(LINGER).await;
        let failure = if stream_ready {
            publish_window(&shared, &js).await.err()
        } else {
            match tokio::time::timeout(ACK_TIMEOUT, js.get_or_create_stream(config.clone())).await {
                Ok(Ok(_)) => {
                    stream_ready = true;
                    None
                }
                Ok(Err(e)) => Some(format!("stream {stream}: {e}")),
                Err(_) => Some(format!("stream {stream}: no answer")),
            }
        };
        match failure {
            Some(e) => {
                shared.counters.errors.fetch_add(1, Relaxed);
                stream_ready = false;
                if !away {
                    warn!(
                        error = %e,
                        buffered = shared.queue.len(),
                        "cannot publish to NATS: buffering and retrying"
                    );
                    away = true;
                }
                tokio::time::sleep(RETRY).await;
            }
            None if away => {
                warn!(buffered = shared.queue.len(), "publishing to NATS again");
                away = false;
            }
            None => {}
        }
    }
}

/// Publishes up to [`WINDOW`] messages, then awaits their acks; settles
/// the acknowledged prefix.
async fn publish_window(shared: &Shared, js: &jetstream::Context) -> Result<(), String> {
    let batch = shared.queue.take(WINDOW);
    let mut acks = Vec::with_capacity(batch.len());
    let mut failure = None;
    for m in &batch {
        let publish = PublishMessage::build()
            .message_id(&m.id)
            .payload(m.payload.clone());
        // Sending waits while the client's own queue is full (NATS away).
        match tokio::time::timeout(ACK_TIMEOUT, js.send_publish(m.subject.clone(), publish)).await {
            Ok(Ok(ack)) => acks.push(ack),
            Ok(Err(e)) => {
                failure = Some(e.to_string());
                break;
            }
            Err(_) => {
                failure = Some("the NATS client did not take the message".to_owned());
                break;
            }
        }
    }
    let mut stored = 0;
    for (ack, m) in acks.into_iter().zip(&batch) {
        match ack.await {
            Ok(ack) => {
                stored += 1;
                if ack.duplicate {
                    shared.counters.duplicates.fetch_add(m.results(), Relaxed);
                }
            }
            Err(e) => {
                failure.get_or_insert(e.to_string());
                break;
            }
        }
    }
    let results = shared.queue.settle(stored);
    shared.counters.published.fetch_add(results, Relaxed);
    failure.map_or(Ok(()), Err)
}
