//! SIGINT and SIGTERM as one source: `exec` cancels its task on them, `run` passes them
//! to its command, and the daemon stops on them.

use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct StopSignals {
    int: Signal,
    term: Signal,
}

impl StopSignals {
    /// Listens for both; `None` when the handlers cannot be installed.
    pub fn new() -> Option<StopSignals> {
        Some(StopSignals {
            int: signal(SignalKind::interrupt()).ok()?,
            term: signal(SignalKind::terminate()).ok()?,
        })
    }

    /// The next one to arrive: `libc::SIGINT` or `libc::SIGTERM`.
    pub async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
        }
    }
}
