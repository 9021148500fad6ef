//! NATS flags: publishing (`run`, `replay`) and reading a fleet (`report`,
//! `verdict`). A malformed URL is a flag error; an unreachable server is
//! not (see [`parallelrun_agent::publish`]).

use std::num::NonZeroUsize;

use async_nats::ServerAddr;
use clap::Args;
use parallelrun_agent::publish::DEFAULT_STREAM;

use super::parse_bytes;

/// Publishing results to NATS JetStream.
#[derive(Debug, Args)]
pub struct NatsArgs {
    /// Publish every mismatch event and the summary (every --summary-every
    /// and at the end) to this NATS server's JetStream, e.g.
    /// nats://127.0.0.1:4222. The run starts even when it is unreachable.
    #[arg(long = "nats", value_name = "URL", value_parser = parse_nats_url)]
    pub url: Option<ServerAddr>,
    /// This agent's name: its summaries' source, and in NATS subjects and
    /// message ids (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// The service's name in subjects.
    #[arg(long, value_name = "NAME", default_value = "default", requires = "url")]
    pub nats_service: String,
    /// JetStream stream, created when missing.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_STREAM)]
    pub nats_stream: String,
    /// Results (events and summaries) buffered at most while NATS is slow
    /// or away; past it the oldest are dropped (counted).
    #[arg(long, value_name = "N", default_value_t = NonZeroUsize::new(10_000).expect("10000 > 0"))]
    pub nats_buffer: NonZeroUsize,
    /// Bytes buffered at most, likewise.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_bytes)]
    pub nats_buffer_bytes: u64,
}

/// Reading the latest summary of each node from NATS JetStream.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Read the latest summary of every node from this NATS server's
    /// JetStream (merged with any SUMMARY files given).
    #[arg(long = "nats", value_name = "URL", value_parser = parse_nats_url)]
    pub url: Option<ServerAddr>,
    /// The stream the agents published to.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_STREAM)]
    pub nats_stream: String,
    /// Only this service's nodes (default: every service in the stream).
    #[arg(long, value_name = "NAME")]
    pub nats_service: Option<String>,
}

/// `nats://HOST:PORT` (scheme and port optional, as NATS clients take it).
fn parse_nats_url(s: &str) -> Result<ServerAddr, String> {
    s.parse::<ServerAddr>()
        .map_err(|e| format!("{e}; give a NATS URL such as nats://127.0.0.1:4222"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_as_flags() {
        assert!(parse_nats_url("nats://127.0.0.1:4222").is_ok());
        assert!(parse_nats_url("127.0.0.1:4222").is_ok());
        assert!(parse_nats_url("http://[bad").is_err());
        assert!(parse_nats_url("nats://host:notaport").is_err());
    }
}
