//! Reading a fleet: the latest summary of every node from a JetStream
//! stream, ready for [`crate::summary::merge::merge`] exactly as summary
//! files are.
//!
//! # Rules
//!
//! - A node's summaries share one subject
//!   (`parallelrun.summary.<service>.<node>`, [`super::subject`]); the last
//!   message stored on it is the node's latest summary (the `finished` one
//!   once its run has ended). Older ones are ignored.
//! - Each summary is checked as a file is ([`crate::summary::file::parse`]);
//!   one that fails is an error naming its subject.
//! - At most [`MAX_NODES`] subjects are read.

use std::{path::PathBuf, time::Duration};

use async_nats::{ConnectOptions, ServerAddr, jetstream};
use futures_util::TryStreamExt as _;

use super::subject;
use crate::summary::{Summary, file};

/// Nodes read at most.
pub const MAX_NODES: usize = 10_000;
/// How long connecting and each request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a fleet cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot connect to NATS at {url}: {msg}; check --nats and that nats-server runs")]
    Connect { url: String, msg: String },
    #[error(
        "no JetStream stream {stream} at {url}: {msg}; give the --nats-stream the agents published to (default PARALLELRUN), and check that nats-server runs with JetStream (-js)"
    )]
    Stream {
        url: String,
        stream: String,
        msg: String,
    },
    #[error(
        "no summary on {filter} in stream {stream}: no agent published yet (they do every --summary-every), or give the --nats-service they published as"
    )]
    Empty { stream: String, filter: String },
    #[error(
        "more than {MAX_NODES} nodes publish to stream {stream}; give --nats-service to read one service"
    )]
    TooMany { stream: String },
    #[error("reading {subject} from stream {stream}: {msg}")]
    Read {
        stream: String,
        subject: String,
        msg: String,
    },
}

/// The latest summary of each node publishing about `service` (every
/// service when `None`) to `stream`, each with a name for errors
/// (`nats:STREAM/SUBJECT`), sorted by subject.
pub async fn latest_summaries(
    url: &ServerAddr,
    stream: &str,
    service: Option<&str>,
) -> Result<Vec<(PathBuf, Summary)>, FleetError> {
    let url_text = subject::display(url);
    let connect = ConnectOptions::new()
        .name("parallelrun-report")
        .connection_timeout(TIMEOUT)
        .connect(url.clone());
    let client = tokio::time::timeout(TIMEOUT, connect)
        .await
        .map_err(|_| "no answer".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|msg| FleetError::Connect {
            url: url_text.clone(),
            msg,
        })?;
    let mut js = jetstream::new(client);
    js.set_timeout(TIMEOUT);
    let stream_err = |msg: String| FleetError::Stream {
        url: url_text.clone(),
        stream: stream.to_owned(),
        msg,
    };
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|e| stream_err(e.to_string()))?;
    let filter = subject::summaries(service);
    let mut subjects = Vec::new();
    let mut info = handle
        .info_with_subjects(&filter)
        .await
        .map_err(|e| stream_err(e.to_string()))?;
    while let Some((subject, _count)) = info
        .try_next()
        .await
        .map_err(|e| stream_err(e.to_string()))?
    {
        if subjects.len() == MAX_NODES {
            return Err(FleetError::TooMany {
                stream: stream.to_owned(),
            });
        }
        subjects.push(subject);
    }
    if subjects.is_empty() {
        return Err(FleetError::Empty {
            stream: stream.to_owned(),
            filter,
        });
    }
    subjects.sort();
    let mut out = Vec::with_capacity(subjects.len());
    for subject in subjects {
        let read_err = |msg: String| FleetError::Read {
            stream: stream.to_owned(),
            subject: subject.clone(),
            msg,
        };
        let msg = handle
            .get_last_raw_message_by_subject(&subject)
            .await
            .map_err(|e| read_err(e.to_string()))?;
        let summary = file::parse(&msg.payload).map_err(read_err)?;
        out.push((PathBuf::from(format!("nats:{stream}/{subject}")), summary));
    }
    Ok(out)
}
