//! Transactions: the one mutating operation that may run on a sysroot at a time.
//!
//! The manager owns the running transaction's record: who started it, its
//! progress events so far, and, once done, its outcome. Any number of clients
//! can follow it (the caller that started it, `Watch`ers); each reads the event
//! log from its own position, so a slow or vanished client never holds up the
//! work or another client.

use std::sync::{Arc, Mutex};

use crate::error::TransactionInfo;

#[derive(Default)]
pub struct Manager {
    current: Mutex<Option<Arc<TransactionInfo>>>,
}

impl Manager {
    pub fn new() -> Manager {
        Manager::default()
    }

    /// The running transaction, if any.
    pub fn current(&self) -> Option<TransactionInfo> {
        self.current
            .lock()
            .expect("transaction lock")
            .as_deref()
            .cloned()
    }

    /// True while a transaction runs: the daemon must not exit then.
    pub fn is_busy(&self) -> bool {
        self.current.lock().expect("transaction lock").is_some()
    }
}

impl Manager {
    /// Ask the running transaction to stop and wait until it has.
    pub fn cancel_and_wait(&self) {
        while self.is_busy() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
