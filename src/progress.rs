//! Progress events that engines emit while they work.
//!
//! Engines report through a [`ProgressSink`] and never learn who listens: the
//! transaction manager fans events out to Varlink clients, tests collect them.
//! Cancellation is polled through the same handle, at points where stopping
//! leaves nothing half-written.

use std::sync::Arc;

use crate::error::Error;

/// How engines hold a sink: shared, so callbacks and helper threads can keep it.
pub type Sink = Arc<dyn ProgressSink>;

/// One thing that happened during a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    TaskBegin(String),
    TaskEnd(String),
    Percent(u8),
    Download {
        bytes_done: u64,
        bytes_total: Option<u64>,
        bytes_per_second: u64,
    },
    Log(String),
}

pub trait ProgressSink: Send + Sync {
    fn emit(&self, event: Event);
    /// True once somebody asked the running operation to stop.
    fn cancel_requested(&self) -> bool;
    /// Identifier of the operation, for error messages and logs.
    fn id(&self) -> &str;
}

impl dyn ProgressSink + '_ {
    pub fn task_begin(&self, title: impl Into<String>) {
        self.emit(Event::TaskBegin(title.into()));
    }
    pub fn task_end(&self, title: impl Into<String>) {
        self.emit(Event::TaskEnd(title.into()));
    }
    pub fn percent(&self, percent: u8) {
        self.emit(Event::Percent(percent.min(100)));
    }
    pub fn log(&self, line: impl Into<String>) {
        self.emit(Event::Log(line.into()));
    }
    /// Fail with [`Error::Cancelled`] if cancellation was requested.
    pub fn check_cancelled(&self) -> anyhow::Result<()> {
        if self.cancel_requested() {
            return Err(Error::Cancelled {
                transaction: self.id().to_string(),
            }
            .into());
        }
        Ok(())
    }
    /// Run `f` as a task with a title: a begin event, and an end event only
    /// when it succeeds (a failed step is not "done"; its error says why).
    pub fn task<T, E>(&self, title: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        self.task_begin(title);
        let r = f();
        if r.is_ok() {
            self.task_end(title);
        }
        r
    }
}

/// A sink that prints progress to stderr, for work the CLI does itself (compose).
pub struct ConsoleProgress;

impl ConsoleProgress {
    pub fn sink() -> Sink {
        Arc::new(ConsoleProgress)
    }
}

impl ProgressSink for ConsoleProgress {
    fn emit(&self, event: Event) {
        // One line per step, when it starts: the next step (or the final
        // summary) is what says it finished, and a failure prints its error.
        match event {
            Event::TaskBegin(t) => eprintln!("{t}..."),
            Event::Log(l) => eprintln!("{l}"),
            Event::TaskEnd(_) | Event::Percent(_) | Event::Download { .. } => {}
        }
    }
    fn cancel_requested(&self) -> bool {
        false
    }
    fn id(&self) -> &str {
        "compose"
    }
}
