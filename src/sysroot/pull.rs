//! Fetching commits from a remote with libostree, with progress and cancel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use ostree::gio::prelude::*;
use ostree::{gio, glib};

use crate::error::Error;
use crate::progress::{Event, ProgressSink, Sink};

/// What to fetch.
pub struct PullRequest<'a> {
    pub remote: &'a str,
    pub branch: &'a str,
    /// A specific commit instead of the branch head.
    pub commit: Option<&'a str>,
    /// Only commit objects (with `depth`, their ancestors too): to find versions.
    pub metadata_only: bool,
    /// How many ancestors to fetch (-1: all).
    pub depth: i32,
    /// Fetch from here instead of the remote's URL (an export on a USB
    /// stick), with the remote's signature and collection checks.
    pub url: Option<&'a str>,
}

/// A gio::Cancellable that fires when the transaction is cancelled. libostree
/// blocks inside a pull; a small watcher thread bridges our flag to it.
pub struct CancelBridge {
    pub cancellable: gio::Cancellable,
    done: Arc<AtomicBool>,
}

impl CancelBridge {
    pub fn new(sink: &Sink) -> CancelBridge {
        let cancellable = gio::Cancellable::new();
        let done = Arc::new(AtomicBool::new(false));
        let (c, d, sink) = (cancellable.clone(), done.clone(), sink.clone());
        std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                if sink.cancel_requested() {
                    c.cancel();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        CancelBridge { cancellable, done }
    }
}

impl Drop for CancelBridge {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Turn a pull error into the typed error a user can act on.
pub fn classify_pull_error(remote: &str, e: &glib::Error, sink: &dyn ProgressSink) -> Error {
    let message = e.message().to_string();
    if e.matches(gio::IOErrorEnum::Cancelled) || sink.cancel_requested() {
        return Error::Cancelled {
            transaction: sink.id().to_string(),
        };
    }
    let lower = message.to_lowercase();
    if lower.contains("gpg") || lower.contains("signature") || lower.contains("signed") {
        return Error::SignatureInvalid {
            remote: remote.to_string(),
            reason: message,
        };
    }
    Error::FetchFailed {
        remote: remote.to_string(),
        reason: message,
    }
}

/// Pull `req` into `repo`, reporting bytes and percent to `sink`.
pub fn pull(repo: &ostree::Repo, req: &PullRequest, sink: &Sink) -> Result<()> {
    let remote = req.remote;
    if !repo.remote_list().iter().any(|r| r == remote) {
        return Err(Error::InvalidRefspec {
            refspec: format!("{remote}:{}", req.branch),
            reason: format!("no remote named {remote:?}"),
        }
        .into());
    }
    let title = if req.metadata_only && req.depth == 0 {
        format!("Checking {remote}:{} for updates", req.branch)
    } else if req.metadata_only {
        format!("Fetching history of {remote}:{}", req.branch)
    } else {
        format!("Pulling {remote}:{}", req.branch)
    };
    sink.task_begin(&title);
    let options = glib::VariantDict::new(None);
    options.insert("refs", vec![req.branch.to_string()]);
    if let Some(c) = req.commit {
        options.insert("override-commit-ids", vec![c.to_string()]);
    }
    let mut flags = if req.metadata_only {
        ostree::RepoPullFlags::COMMIT_ONLY
    } else {
        ostree::RepoPullFlags::NONE
    };
    // libostree trusts a local repository's objects unless told not to: a
    // stick's are checked against their checksums like a server's.
    if req.url.is_some() {
        flags |= ostree::RepoPullFlags::UNTRUSTED;
    }
    options.insert("flags", flags.bits() as i32);
    options.insert("depth", req.depth);
    if let Some(url) = req.url {
        options.insert("override-url", url);
    }
    // A remote that is down fails after a bounded wait rather than hanging:
    // one retry, and a transfer under 1 byte/s for 30 s is an error.
    options.insert("n-network-retries", 1u32);
    options.insert("low-speed-limit-bytes", 1u32);
    options.insert("low-speed-time-seconds", 30u32);
    let options = options.end();

    let tracking = format!("{remote}:{}", req.branch);
    let before = repo
        .resolve_rev(&tracking, true)
        .ok()
        .flatten()
        .map(|c| c.to_string());
    let bridge = CancelBridge::new(sink);
    let progress = ostree::AsyncProgress::new();
    let started = Instant::now();
    let last_percent = std::cell::Cell::new(u64::MAX);
    let events = sink.clone();
    // The pull iterates this thread's default main context, so the callback
    // runs on this thread while the pull is under way.
    let handler = progress.connect_changed(move |p| {
        let bytes = p.uint64("bytes-transferred");
        let elapsed = started.elapsed().as_secs_f64().max(0.001);
        events.emit(Event::Download {
            bytes_done: bytes,
            bytes_total: None,
            bytes_per_second: (bytes as f64 / elapsed) as u64,
        });
        let (fetched, requested) = (p.uint("fetched") as u64, p.uint("requested") as u64);
        if let Some(pct) = (fetched * 100).checked_div(requested) {
            let pct = pct.min(100);
            if last_percent.replace(pct) != pct {
                events.emit(Event::Percent(pct as u8));
            }
        }
    });
    let result =
        repo.pull_with_options(remote, &options, Some(&progress), Some(&bridge.cancellable));
    progress.finish();
    progress.disconnect(handler);
    if let Err(e) = result {
        return Err(classify_pull_error(remote, &e, sink.as_ref()).into());
    }
    let fetched = match req.commit {
        Some(c) => Some(c.to_string()),
        None => repo
            .resolve_rev(&tracking, true)
            .ok()
            .flatten()
            .map(|c| c.to_string()),
    };
    if let Some(commit) = fetched {
        if let Err(reason) = check_bindings(repo, remote, req.branch, &commit) {
            // The ref stays where it was: nothing points at the stranger.
            let _ = repo.set_ref_immediate(
                Some(remote),
                req.branch,
                before.as_deref(),
                gio::Cancellable::NONE,
            );
            return Err(Error::FetchFailed {
                remote: remote.to_string(),
                reason,
            }
            .into());
        }
    }
    sink.task_end(&title);
    Ok(())
}

/// The commit's collection and ref bindings against the remote it came
/// from, whatever the URL (an export on a stick included): libostree leaves
/// them unchecked on a pull from a local repository.
fn check_bindings(
    repo: &ostree::Repo,
    remote: &str,
    branch: &str,
    commit: &str,
) -> Result<(), String> {
    let expected = repo
        .remote_option(remote, "collection-id", None)
        .map_err(|e| e.to_string())?;
    let Some(expected) = expected.map(|c| c.to_string()) else {
        return Ok(());
    };
    let (variant, _) = repo.load_commit(commit).map_err(|e| e.to_string())?;
    let metadata = glib::VariantDict::new(Some(&variant.child_value(0)));
    match metadata
        .lookup::<String>("ostree.collection-binding")
        .ok()
        .flatten()
    {
        Some(bound) if bound == expected => {}
        Some(bound) => {
            return Err(format!(
            "commit {commit} belongs to the collection {bound}, not to {expected} (the remote's)"
        ))
        }
        None => {
            return Err(format!(
                "commit {commit} is bound to no collection; the remote's is {expected}"
            ))
        }
    }
    let refs = metadata
        .lookup::<Vec<String>>("ostree.ref-binding")
        .ok()
        .flatten()
        .unwrap_or_default();
    if !refs.is_empty() && !refs.iter().any(|r| r == branch) {
        return Err(format!(
            "commit {commit} is bound to {}, not to {branch}",
            refs.join(", ")
        ));
    }
    Ok(())
}

/// Fetch only `subdir` of `commit` (e.g. the dpkg database, for a preview).
pub fn pull_subdir(
    repo: &ostree::Repo,
    remote: &str,
    branch: &str,
    commit: &str,
    subdir: &str,
    url: Option<&str>,
    sink: &Sink,
) -> Result<()> {
    let options = glib::VariantDict::new(None);
    if let Some(url) = url {
        options.insert("override-url", url);
        options.insert("flags", ostree::RepoPullFlags::UNTRUSTED.bits() as i32);
    }
    options.insert("refs", vec![branch.to_string()]);
    options.insert("override-commit-ids", vec![commit.to_string()]);
    options.insert("subdirs", vec![format!("/{subdir}")]);
    options.insert("n-network-retries", 1u32);
    let options = options.end();
    let bridge = CancelBridge::new(sink);
    repo.pull_with_options(remote, &options, None, Some(&bridge.cancellable))
        .map_err(|e| classify_pull_error(remote, &e, sink.as_ref()).into())
}
