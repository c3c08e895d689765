//! Transactions: the one mutating operation that may run on a sysroot at a time.
//!
//! The manager owns the running transaction's record: who started it, its
//! progress events so far, and, once done, its outcome. Any number of clients
//! follow it (the caller that started it, `Watch`ers); each reads the event
//! log from its own position, so a slow or vanished client never holds up the
//! work or another client. The work itself runs on its own thread, which opens
//! its own libostree handle and holds ostree's sysroot lock while it runs.

mod run;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, TransactionInfo};
use crate::operations::Outcome;
use crate::operations::{
    CleanupOptions, KargsChange, LiveOptions, PackageRequest, ResetOptions, UpgradeOptions,
};
use crate::progress::{Event, ProgressSink, Sink};

pub use crate::config::AutomaticUpdatePolicy;

/// What a transaction is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Upgrade(UpgradeOptions),
    AutomaticUpdate(AutomaticUpdatePolicy),
    Rebase {
        refspec: String,
        revision: Option<String>,
        /// An export to fetch from (`--from DIR`).
        from: Option<std::path::PathBuf>,
    },
    Deploy {
        revision: String,
        allow_downgrade: bool,
        from: Option<std::path::PathBuf>,
    },
    Rollback,
    /// Pin (or unpin) the deployment with this status identifier.
    Pin {
        id: String,
        pinned: bool,
    },
    Cleanup(CleanupOptions),
    KernelArguments(KargsChange),
    RefreshMetadata {
        force: bool,
    },
    /// install, uninstall and the overrides.
    Packages(PackageRequest),
    /// The base image as it is: without layered packages, overrides or a
    /// local initramfs (as the options say).
    Reset(ResetOptions),
    /// Regenerate the initramfs locally (`enable`), or use the image's again.
    Initramfs {
        enable: bool,
        arguments: Vec<String>,
    },
    /// The pending deployment (or the booted commit) onto the running /usr.
    ApplyLive(LiveOptions),
    /// A writable overlay on the running /usr.
    UsrOverlay {
        hotfix: bool,
    },
    /// The booted deployment's boot chain onto the ESP.
    UpdateBootloader,
}

impl Request {
    /// The IDL method that asks for this.
    pub fn method(&self) -> &'static str {
        match self {
            Request::Upgrade(_) => "Upgrade",
            Request::AutomaticUpdate(_) => "AutomaticUpdate",
            Request::Rebase { .. } => "Rebase",
            Request::Deploy { .. } => "Deploy",
            Request::Rollback => "Rollback",
            Request::Pin { .. } => "PinDeployment",
            Request::Cleanup(_) => "Cleanup",
            Request::KernelArguments(_) => "ChangeKernelArguments",
            Request::RefreshMetadata { .. } => "RefreshMetadata",
            Request::Packages(p) => p.change.method(),
            Request::Initramfs { .. } => "Initramfs",
            Request::Reset(_) => "Reset",
            Request::ApplyLive(_) => "ApplyLive",
            Request::UsrOverlay { .. } => "UsrOverlay",
            Request::UpdateBootloader => "UpdateBootloader",
        }
    }

    /// A short description for status and logs.
    pub fn title(&self) -> String {
        match self {
            Request::Upgrade(o) if o.check => "upgrade --check".into(),
            Request::Upgrade(o) if o.preview => "upgrade --preview".into(),
            Request::Upgrade(o) if o.download_only => "upgrade --download-only".into(),
            Request::Upgrade(_) => "upgrade".into(),
            Request::AutomaticUpdate(p) => format!("automatic update ({})", p.as_str()),
            Request::Rebase { refspec, .. } => format!("rebase {refspec}"),
            Request::Deploy { revision, .. } => format!("deploy {revision}"),
            Request::Rollback => "rollback".into(),
            Request::Pin { id, pinned: true } => format!("pin {id}"),
            Request::Pin { id, pinned: false } => format!("pin --unpin {id}"),
            Request::Cleanup(_) => "cleanup".into(),
            Request::KernelArguments(_) => "kargs".into(),
            Request::RefreshMetadata { .. } => "refresh-md".into(),
            Request::Initramfs { enable: true, .. } => "initramfs --enable".into(),
            Request::Initramfs { enable: false, .. } => "initramfs --disable".into(),
            Request::Packages(p) => p.change.title(),
            Request::ApplyLive(o) if o.reset => "apply-live --reset".into(),
            Request::ApplyLive(o) if o.allow_replacement => "apply-live --allow-replacement".into(),
            Request::ApplyLive(_) => "apply-live".into(),
            Request::UsrOverlay { hotfix: true } => "usroverlay --hotfix".into(),
            Request::UsrOverlay { hotfix: false } => "usroverlay".into(),
            Request::UpdateBootloader => "bootloader update".into(),
            Request::Reset(o) => {
                let mut words = vec!["reset".to_string()];
                let given = [
                    (o.overlays, "--overlays"),
                    (o.overrides, "--overrides"),
                    (o.initramfs, "--initramfs"),
                ];
                words.extend(
                    given
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, f)| f.to_string()),
                );
                words.join(" ")
            }
        }
    }
}

/// A request and what to do once it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub request: Request,
    pub reboot: bool,
}

/// Who started a transaction.
#[derive(Debug, Clone, Copy)]
pub struct Initiator {
    pub uid: u32,
    pub pid: Option<i32>,
}

pub type Finished = Arc<Result<Outcome, Error>>;

struct Log {
    events: Vec<Event>,
    /// Bytes of log lines kept in `events`.
    log_bytes: usize,
    outcome: Option<Finished>,
}

/// Most log text one transaction's event log keeps (and replays to every
/// client): beyond it, lines go to the journal only.
const LOG_BUDGET: usize = 4 << 20;

/// A running (or just finished) transaction.
pub struct Transaction {
    info: TransactionInfo,
    job: Job,
    cancel: AtomicBool,
    log: Mutex<Log>,
    changed: Condvar,
}

impl Transaction {
    pub fn id(&self) -> &str {
        &self.info.id
    }

    pub fn info(&self) -> TransactionInfo {
        TransactionInfo {
            cancelling: self.cancel.load(Ordering::Relaxed),
            ..self.info.clone()
        }
    }

    pub fn request_cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        tracing::info!(APT_OSTREE_TRANSACTION = self.id(), "Cancellation requested");
    }

    /// Events from position `from` on, and the outcome if there is one.
    /// Blocks until there is something new.
    pub fn next(&self, from: usize) -> (Vec<Event>, Option<Finished>) {
        let mut log = self.log.lock().expect("transaction log");
        while log.events.len() <= from && log.outcome.is_none() {
            log = self.changed.wait(log).expect("transaction log");
        }
        let events = log
            .events
            .get(from..)
            .map(<[Event]>::to_vec)
            .unwrap_or_default();
        (events, log.outcome.clone())
    }

    /// Wait for the outcome.
    pub fn wait(&self) -> Finished {
        let mut log = self.log.lock().expect("transaction log");
        loop {
            if let Some(o) = &log.outcome {
                return o.clone();
            }
            log = self.changed.wait(log).expect("transaction log");
        }
    }

    fn finish(&self, outcome: Result<Outcome, Error>) {
        let mut log = self.log.lock().expect("transaction log");
        log.outcome = Some(Arc::new(outcome));
        self.changed.notify_all();
    }
}

impl ProgressSink for Transaction {
    fn emit(&self, event: Event) {
        if let Event::TaskBegin(t) | Event::Log(t) = &event {
            tracing::info!(APT_OSTREE_TRANSACTION = self.id(), "{t}");
        }
        let mut log = self.log.lock().expect("transaction log");
        if let Event::Log(line) = &event {
            if log.log_bytes > LOG_BUDGET {
                return;
            }
            log.log_bytes += line.len();
            if log.log_bytes > LOG_BUDGET {
                log.events.push(Event::Log(format!(
                    "[more output than a reply carries: see journalctl APT_OSTREE_TRANSACTION={}]",
                    self.id()
                )));
                self.changed.notify_all();
                return;
            }
        }
        log.events.push(event);
        self.changed.notify_all();
    }
    fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
    fn id(&self) -> &str {
        &self.info.id
    }
}

/// Called when a transaction starts (with its info) and when it ends (None).
pub type Hook = Box<dyn Fn(Option<&TransactionInfo>) + Send + Sync>;

struct Inner {
    sysroot: PathBuf,
    current: Mutex<Option<Arc<Transaction>>>,
    idle: Condvar,
    hook: Hook,
}

pub struct Manager {
    inner: Arc<Inner>,
}

/// A random (version 4) UUID without dashes: unique across daemon restarts.
fn new_id() -> String {
    ostree::glib::uuid_string_random().replace('-', "")
}

fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Manager {
    pub fn new(sysroot: PathBuf, hook: Hook) -> Manager {
        Manager {
            inner: Arc::new(Inner {
                sysroot,
                current: Mutex::new(None),
                idle: Condvar::new(),
                hook,
            }),
        }
    }

    /// The running transaction, if any.
    pub fn current(&self) -> Option<Arc<Transaction>> {
        self.inner.current.lock().expect("transaction lock").clone()
    }

    pub fn current_info(&self) -> Option<TransactionInfo> {
        self.current().map(|t| t.info())
    }

    /// True while a transaction runs: the daemon must not exit then.
    pub fn is_busy(&self) -> bool {
        self.current().is_some()
    }

    /// Start `job`, or attach to the running transaction if it is the same job.
    pub fn start(&self, job: Job, initiator: Initiator) -> Result<Arc<Transaction>, Error> {
        let mut current = self.inner.current.lock().expect("transaction lock");
        if let Some(running) = current.as_ref() {
            if running.job == job {
                return Ok(running.clone());
            }
            return Err(Error::TransactionInProgress {
                transaction: Box::new(running.info()),
            });
        }
        let tx = Arc::new(Transaction {
            info: TransactionInfo {
                id: new_id(),
                method: job.request.method().to_string(),
                title: job.request.title(),
                initiator_uid: initiator.uid,
                initiator_pid: initiator.pid,
                started_usec: now_usec(),
                cancelling: false,
            },
            job,
            cancel: AtomicBool::new(false),
            log: Mutex::new(Log {
                events: Vec::new(),
                log_bytes: 0,
                outcome: None,
            }),
            changed: Condvar::new(),
        });
        *current = Some(tx.clone());
        drop(current);
        tracing::info!(
            APT_OSTREE_TRANSACTION = tx.id(),
            "Transaction {} started by uid {}",
            tx.info.title,
            initiator.uid
        );
        (self.inner.hook)(Some(&tx.info));
        let inner = self.inner.clone();
        let worker = tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("transaction-{}", &tx.id()[..8.min(tx.id().len())]))
            .spawn(move || {
                let sink: Sink = worker.clone();
                // A panic must still end the transaction, or followers would wait forever.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run::execute(&worker.job, &inner.sysroot, &sink)
                }))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(Error::Other(anyhow::anyhow!("internal error: {what}")))
                });
                match &result {
                    // Something went wrong in apt-ostree or the system.
                    Err(e @ Error::Other(_)) => tracing::warn!(
                        MESSAGE_ID = crate::logging::message_id::TRANSACTION_FAILED,
                        APT_OSTREE_TRANSACTION = worker.id(),
                        "Transaction {} failed: {e:#}",
                        worker.info.title
                    ),
                    // The request could not be carried out (bad input, nothing there).
                    Err(e) => tracing::info!(
                        MESSAGE_ID = crate::logging::message_id::TRANSACTION_FAILED,
                        APT_OSTREE_TRANSACTION = worker.id(),
                        "Transaction {} refused: {e}",
                        worker.info.title
                    ),
                    Ok(o) => tracing::info!(
                        APT_OSTREE_TRANSACTION = worker.id(),
                        "Transaction {} done: {}",
                        worker.info.title,
                        o.message
                    ),
                }
                // The sysroot is unlocked (the worker's handle is gone): let
                // the next transaction in before followers see the outcome.
                *inner.current.lock().expect("transaction lock") = None;
                (inner.hook)(None);
                worker.finish(result);
                inner.idle.notify_all();
            });
        if let Err(e) = spawned {
            *self.inner.current.lock().expect("transaction lock") = None;
            (self.inner.hook)(None);
            return Err(Error::Other(anyhow::anyhow!(
                "Starting the transaction: {e}"
            )));
        }
        Ok(tx)
    }

    /// Cancel the running transaction (only if it is `id`, when given).
    pub fn cancel(&self, id: Option<&str>) -> Result<(), Error> {
        match self.current() {
            Some(t) if id.is_none_or(|id| id == t.id()) => {
                t.request_cancel();
                Ok(())
            }
            _ => Err(Error::NoTransaction {}),
        }
    }

    /// Ask the running transaction to stop and wait until it has.
    pub fn cancel_and_wait(&self) {
        let mut current = self.inner.current.lock().expect("transaction lock");
        if let Some(t) = current.as_ref() {
            t.request_cancel();
        }
        while current.is_some() {
            current = self.inner.idle.wait(current).expect("transaction lock");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transaction_ids_are_random_uuids() {
        let (a, b) = (super::new_id(), super::new_id());
        assert_eq!(a.len(), 32, "{a}");
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }
}
