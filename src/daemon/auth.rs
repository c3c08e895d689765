//! Who is calling, and what they may do.
//!
//! The caller's identity comes from the socket (`SO_PEERCRED`), never from the
//! message. Each connection is served on its own thread, so the identity is
//! kept in a thread-local for the method adapters to consult. Every mutating
//! method asks [`may_mutate`]: the one place where policy lives.

use std::cell::Cell;
use std::os::unix::net::UnixStream;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

thread_local! {
    static CURRENT: Cell<Option<Caller>> = const { Cell::new(None) };
}

/// Read the peer's credentials from a connected socket.
pub fn peer_of(stream: &UnixStream) -> nix::Result<Caller> {
    let cred = getsockopt(stream, PeerCredentials)?;
    Ok(Caller {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    })
}

/// Record the caller served by this thread.
pub fn set_current(caller: Option<Caller>) {
    CURRENT.with(|c| c.set(caller));
}

/// The caller served by this thread. Unknown credentials count as the least
/// privileged caller there is.
pub fn current() -> Caller {
    CURRENT.with(|c| c.get()).unwrap_or(Caller {
        uid: u32::MAX,
        gid: u32::MAX,
        pid: 0,
    })
}

/// May the current caller change the system (transactions, log level)?
pub fn may_mutate() -> bool {
    current().uid == 0
}

/// The current caller as the initiator of a transaction.
pub fn initiator() -> crate::transaction::Initiator {
    let caller = current();
    crate::transaction::Initiator {
        uid: caller.uid,
        pid: Some(caller.pid),
    }
}
