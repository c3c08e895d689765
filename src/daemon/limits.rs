//! Limits that keep one caller from locking out the others.
//!
//! The socket is open to every user, so whatever one user can make the daemon
//! hold is bounded: connections per UID and in total (with room kept for
//! root beyond the total, so root is answered when others sit at the cap), a
//! deadline for a message that has begun but not ended, and one budget of
//! bytes shared by every partly received message. Each connection holds one
//! file descriptor; the caps are derived from the open-files limit the daemon
//! got (LimitNOFILE= in the unit), so the caps, not EMFILE, are what refuses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections one user other than root may hold.
pub const PER_UID: usize = 64;
/// Connections beyond the total that only root may use.
pub const ROOT_RESERVE: usize = 16;
/// Most connections of users other than root together.
pub const MAX_TOTAL: usize = 512;
/// File descriptors kept for everything else (journal, sysroot, apt, children).
const OTHER_FDS: usize = 128;
/// A message that has begun must end within this.
pub const MESSAGE_DEADLINE: Duration = Duration::from_secs(10);
/// Bytes of partly received messages, all connections together.
pub const PARTIAL_BUDGET: usize = 16 * 1024 * 1024;

#[derive(Debug)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
    /// When a refusal was last logged, so a flood writes one line, not one per attempt.
    last_refusal_logged: Option<Instant>,
}

#[derive(Debug)]
pub struct Limits {
    counts: Mutex<Counts>,
    total_cap: usize,
    partial: AtomicUsize,
}

/// A connection's place, given back when it is dropped.
#[derive(Debug)]
pub struct Admission {
    limits: Arc<Limits>,
    uid: u32,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().expect("limits lock");
        c.total -= 1;
        if let Some(n) = c.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                c.per_uid.remove(&self.uid);
            }
        }
    }
}

impl Limits {
    /// Caps for a daemon that may open `open_files` descriptors.
    pub fn for_open_files(open_files: usize) -> Limits {
        let fit = open_files.saturating_sub(OTHER_FDS + ROOT_RESERVE);
        Limits {
            counts: Mutex::new(Counts {
                total: 0,
                per_uid: HashMap::new(),
                last_refusal_logged: None,
            }),
            total_cap: MAX_TOTAL.min(fit).max(PER_UID),
            partial: AtomicUsize::new(0),
        }
    }

    /// Caps from this process's RLIMIT_NOFILE.
    pub fn from_rlimit() -> Limits {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft as usize)
            .unwrap_or(1024);
        Limits::for_open_files(soft)
    }

    /// Admit a connection of `uid`, or None: it is closed at once.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Option<Admission> {
        let mut c = self.counts.lock().expect("limits lock");
        let mine = c.per_uid.get(&uid).copied().unwrap_or(0);
        let ok = if uid == 0 {
            c.total < self.total_cap + ROOT_RESERVE
        } else {
            mine < PER_UID && c.total < self.total_cap
        };
        if !ok {
            let now = Instant::now();
            if c.last_refusal_logged
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(60))
            {
                c.last_refusal_logged = Some(now);
                tracing::warn!(
                    "Refusing connections of uid {uid}: it holds {mine} of {PER_UID}, \
                     {} of {} are in use (logged once a minute)",
                    c.total,
                    self.total_cap
                );
            }
            return None;
        }
        c.total += 1;
        *c.per_uid.entry(uid).or_insert(0) += 1;
        Some(Admission {
            limits: self.clone(),
            uid,
        })
    }

    /// Take `bytes` from the budget of partly received messages; false when
    /// it is spent (the connection asking is closed).
    pub fn take_partial(&self, bytes: usize) -> bool {
        let mut current = self.partial.load(Ordering::Relaxed);
        loop {
            if current + bytes > PARTIAL_BUDGET {
                return false;
            }
            match self.partial.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Give back what [`Limits::take_partial`] took.
    pub fn give_partial(&self, bytes: usize) {
        self.partial.fetch_sub(bytes, Ordering::AcqRel);
    }

    #[cfg(test)]
    pub fn total_cap(&self) -> usize {
        self.total_cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_is_capped_and_root_keeps_room() {
        let limits = Arc::new(Limits::for_open_files(4096));
        let mine: Vec<_> = (0..PER_UID).map(|_| limits.admit(1000).unwrap()).collect();
        assert!(limits.admit(1000).is_none());
        assert!(limits.admit(1001).is_some());
        assert!(limits.admit(0).is_some());
        drop(mine);
        assert!(limits.admit(1000).is_some());
    }

    #[test]
    fn the_total_follows_the_open_files_limit_and_root_goes_beyond_it() {
        let limits = Arc::new(Limits::for_open_files(1024));
        let cap = limits.total_cap();
        assert!(cap < 1024 - OTHER_FDS, "{cap}");
        let held: Vec<_> = (0..cap)
            .map(|i| limits.admit(2000 + (i / PER_UID) as u32).unwrap())
            .collect();
        assert!(limits.admit(5000).is_none());
        let root: Vec<_> = (0..ROOT_RESERVE)
            .map(|_| limits.admit(0).unwrap())
            .collect();
        assert!(limits.admit(0).is_none());
        drop((held, root));
    }

    #[test]
    fn the_partial_budget_is_shared() {
        let limits = Limits::for_open_files(1024);
        assert!(limits.take_partial(PARTIAL_BUDGET - 10));
        assert!(!limits.take_partial(11));
        assert!(limits.take_partial(10));
        limits.give_partial(PARTIAL_BUDGET);
        assert!(limits.take_partial(PARTIAL_BUDGET));
    }
}
