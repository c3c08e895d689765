//! Where the daemon's connections come from.
//!
//! systemd passes a listening socket (`apt-ostreed.socket`), or, with
//! `Accept=yes` and `varlinkctl exec:`, an already-connected one; both arrive
//! as the fd named `varlink`. Without activation, `--address unix:PATH` binds
//! our own socket. A connected socket is told apart by `SO_ACCEPTCONN`.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::sys::socket::{getsockopt, sockopt::AcceptConn};

pub enum Socket {
    Listening(UnixListener),
    Connected(UnixStream),
}

/// The socket systemd passed us, if any.
pub fn from_activation() -> Result<Option<Socket>> {
    use libsystemd::activation;
    // Without LISTEN_FDNAMES the named variant reports nothing; take the only fd then.
    let fds = if std::env::var_os("LISTEN_FDNAMES").is_some() {
        activation::receive_descriptors_with_names(true)
    } else {
        activation::receive_descriptors(true)
            .map(|fds| fds.into_iter().map(|fd| (fd, String::new())).collect())
    }
    .context("Reading the sockets passed by systemd")?;
    if fds.is_empty() {
        return Ok(None);
    }
    let count = fds.len();
    let chosen = fds
        .into_iter()
        .find(|(_, name)| name == "varlink" || count == 1)
        .map(|(fd, _)| fd)
        .context("systemd passed sockets, but none named \"varlink\"")?;
    #[allow(unsafe_code)]
    // SAFETY: systemd handed this fd to us; nothing else in the process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(chosen.into_raw_fd()) };
    let listening = getsockopt(&fd, AcceptConn).context("Inspecting the passed socket")?;
    Ok(Some(if listening {
        Socket::Listening(UnixListener::from(fd))
    } else {
        Socket::Connected(UnixStream::from(fd))
    }))
}

/// Bind `unix:PATH` (a `;mode=` suffix, as the varlink crate writes, is ignored).
/// The socket is world-accessible: every call is authorized by the caller's
/// credentials, not by the socket's mode.
pub fn bind(address: &str) -> Result<Socket> {
    let Some(path) = address.strip_prefix("unix:") else {
        bail!("unsupported address {address:?}: only unix:PATH is served");
    };
    let path = Path::new(path.split(';').next().unwrap_or(path));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("Creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("Removing stale {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("Binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("Setting the mode of {}", path.display()))?;
    Ok(Socket::Listening(listener))
}
