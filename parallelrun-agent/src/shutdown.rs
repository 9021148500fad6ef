//! When to stop: SIGINT, SIGTERM or the end of `--duration`.

use std::{future::Future, pin::Pin, time::Duration};

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Shutdown {
    int: Signal,
    term: Signal,
    deadline: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Shutdown {
    pub fn new(duration: Option<Duration>) -> std::io::Result<Self> {
        let deadline: Pin<Box<dyn Future<Output = ()> + Send>> = match duration {
            Some(d) => Box::pin(tokio::time::sleep(d)),
            None => Box::pin(std::future::pending()),
        };
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            deadline,
        })
    }

    /// Resolves with the reason once it is time to stop.
    pub async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = &mut self.deadline => "duration reached",
        }
    }
}
