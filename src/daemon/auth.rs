//! Who is calling, and what they may do.
//!
//! The caller's identity comes from the socket (`SO_PEERCRED`), never from the
//! message. Each connection is served on its own thread, so the identity is
//! kept in a thread-local for the method adapters to consult. Every method
//! that changes something asks [`authorize`]: the one place where policy
//! lives. Root may do everything; anyone else needs polkit's yes for the
//! action (polkit/org.aptostree.policy), asked with polkit's own `pkcheck`
//! (docs/decisions.md, "Authorization").

use std::cell::Cell;
use std::os::unix::net::UnixStream;
use std::process::Command;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::transaction::Request;

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

/// The kinds of change, each a polkit action (model: rpm-ostree's actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Upgrade,
    Rebase,
    Deploy,
    Rollback,
    Pin,
    Packages,
    Override,
    BootConfig,
    Reset,
    ApplyLive,
    UsrOverlay,
    Bootloader,
    Cleanup,
    RepoRefresh,
    DownloadUpdate,
    Cancel,
    Reload,
}

impl Action {
    pub fn id(self) -> &'static str {
        match self {
            Action::Upgrade => "org.aptostree.upgrade",
            Action::Rebase => "org.aptostree.rebase",
            Action::Deploy => "org.aptostree.deploy",
            Action::Rollback => "org.aptostree.rollback",
            Action::Pin => "org.aptostree.pin",
            Action::Packages => "org.aptostree.install-uninstall-packages",
            Action::Override => "org.aptostree.override",
            Action::BootConfig => "org.aptostree.bootconfig",
            Action::Reset => "org.aptostree.reset",
            Action::ApplyLive => "org.aptostree.apply-live",
            Action::UsrOverlay => "org.aptostree.usroverlay",
            Action::Bootloader => "org.aptostree.bootloader-update",
            Action::Cleanup => "org.aptostree.cleanup",
            Action::RepoRefresh => "org.aptostree.repo-refresh",
            Action::DownloadUpdate => "org.aptostree.download-update",
            Action::Cancel => "org.aptostree.cancel",
            Action::Reload => "org.aptostree.reload",
        }
    }

    /// The action a transaction needs.
    pub fn of(request: &Request) -> Action {
        match request {
            // A preview may pull a whole image, and a download-only upgrade
            // does: a download is asked for as one, not as a check.
            Request::Upgrade(o) if o.preview || o.download_only => Action::DownloadUpdate,
            Request::Upgrade(o) if o.check => Action::RepoRefresh,
            Request::Upgrade(_) | Request::AutomaticUpdate(_) => Action::Upgrade,
            Request::Rebase { .. } => Action::Rebase,
            Request::Deploy { .. } => Action::Deploy,
            Request::Rollback => Action::Rollback,
            Request::Pin { .. } => Action::Pin,
            Request::Cleanup(_) => Action::Cleanup,
            Request::Reset(_) => Action::Reset,
            Request::ApplyLive(_) => Action::ApplyLive,
            Request::UsrOverlay { .. } => Action::UsrOverlay,
            Request::UpdateBootloader => Action::Bootloader,
            Request::KernelArguments(_) | Request::Initramfs { .. } => Action::BootConfig,
            Request::RefreshMetadata { .. } => Action::RepoRefresh,
            Request::Packages(p) if p.change.is_override() => Action::Override,
            Request::Packages(_) => Action::Packages,
        }
    }
}

/// May the current caller start `request`? Its action, and for a package
/// change applied live also `apply-live`: changing the running system is a
/// decision of its own, and allowing it never allows installing packages.
pub fn authorize_request(request: &Request, interactive: bool) -> Result<(), Denied> {
    authorize(Action::of(request), interactive)?;
    if matches!(request, Request::Packages(p) if p.live.is_some()) {
        authorize(Action::ApplyLive, interactive)?;
    }
    Ok(())
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub action: &'static str,
}

/// polkit's checker, by absolute path: nothing in the daemon's environment
/// chooses the program that makes authorization decisions.
const PKCHECK: &str = "/usr/bin/pkcheck";

/// The start time of `pid` (field 22 of /proc/PID/stat): with the pid and
/// uid it names the process to polkit, so a reused pid is not mistaken for it.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// May the current caller do `action`? Root may; others when polkit says
/// yes, after asking them (through their authentication agent) if
/// `interactive`. No polkit, no answer, or no: refused.
pub fn authorize(action: Action, interactive: bool) -> Result<(), Denied> {
    let caller = current();
    if caller.uid == 0 {
        return Ok(());
    }
    let denied = Denied {
        action: action.id(),
    };
    let Some(start) = (caller.pid > 0).then(|| start_time(caller.pid)).flatten() else {
        return Err(denied);
    };
    let mut cmd = Command::new(PKCHECK);
    cmd.args(["--action-id", action.id(), "--process"])
        .arg(format!("{},{start},{}", caller.pid, caller.uid));
    if interactive {
        cmd.arg("--allow-user-interaction");
    }
    match crate::process::capture(&mut cmd) {
        Ok(out) if out.status.success() => {
            tracing::info!(
                "polkit authorized {} for uid {} (pid {})",
                action.id(),
                caller.uid,
                caller.pid
            );
            Ok(())
        }
        Ok(out) => {
            tracing::info!(
                "polkit refused {} to uid {} ({}): {}",
                action.id(),
                caller.uid,
                out.status,
                out.stderr.trim()
            );
            Err(denied)
        }
        Err(e) => {
            tracing::warn!("Asking polkit: {e:#}");
            Err(denied)
        }
    }
}

/// Root only, no polkit: what only the system's administrator asks for
/// (io.systemd.service's log level and environment).
pub fn root_only() -> Result<(), Denied> {
    if current().uid == 0 {
        Ok(())
    } else {
        Err(Denied { action: "root" })
    }
}

/// The current caller as the initiator of a transaction.
pub fn initiator() -> crate::transaction::Initiator {
    let caller = current();
    crate::transaction::Initiator {
        uid: caller.uid,
        pid: Some(caller.pid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every action a request can need is in the policy file, and a
    /// download is asked for as one.
    #[test]
    fn each_request_needs_the_action_named_for_what_it_does() {
        let policy = include_str!("../../polkit/org.aptostree.policy");
        let upgrade = |check, preview, download_only| {
            Action::of(&Request::Upgrade(crate::operations::UpgradeOptions {
                check,
                preview,
                download_only,
                ..Default::default()
            }))
        };
        assert_eq!(upgrade(true, false, false), Action::RepoRefresh);
        assert_eq!(upgrade(true, true, false), Action::DownloadUpdate);
        assert_eq!(upgrade(false, false, true), Action::DownloadUpdate);
        assert_eq!(upgrade(false, false, false), Action::Upgrade);
        for action in [
            Action::Upgrade,
            Action::Rebase,
            Action::Deploy,
            Action::Rollback,
            Action::Pin,
            Action::Packages,
            Action::Override,
            Action::BootConfig,
            Action::Reset,
            Action::ApplyLive,
            Action::UsrOverlay,
            Action::Bootloader,
            Action::Cleanup,
            Action::RepoRefresh,
            Action::DownloadUpdate,
            Action::Cancel,
            Action::Reload,
        ] {
            assert!(
                policy.contains(&format!("<action id=\"{}\">", action.id())),
                "{} is not in the policy",
                action.id()
            );
        }
    }

    #[test]
    fn reads_the_start_time_of_a_process() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some_and(|t| t > 0));
        assert_eq!(start_time(-1), None);
    }
}
