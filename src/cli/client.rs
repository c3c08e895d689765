//! Connecting to apt-ostreed: the system socket, another address, or a
//! private daemon for `--sysroot`.
//!
//! With `--sysroot DIR` the CLI starts its own `apt-ostreed` and talks to it
//! over a socketpair, passed as systemd would pass an `Accept=yes` socket
//! (fd 3, `LISTEN_FDS=1`, `LISTEN_FDNAMES=varlink`). The daemon serves that one
//! connection and exits, so an image being built or a test needs no system
//! socket, and it goes through exactly the same code as the system service.

use std::io::{BufReader, IoSlice, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use varlink::Connection;

use crate::protocol::{self, sysroot::VarlinkClient};

pub struct Client {
    connection: Arc<RwLock<Connection>>,
    /// Descriptors to send with the next call; None where the connection is
    /// not a Unix socket we made.
    outgoing: Option<Outgoing>,
    /// The private daemon, when there is one.
    daemon: Option<Child>,
    /// Where to open a second connection (for cancel); None for a private daemon.
    address: Option<String>,
    /// polkit's text authentication agent, once a change asked for one.
    agent: std::cell::OnceCell<Option<Child>>,
}

/// Where a helper program is: beside this executable (build tree, /usr/bin),
/// else /usr/libexec, else on PATH.
pub fn helper_path(name: &str) -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)));
    let libexec = Path::new("/usr/libexec").join(name);
    match beside {
        Some(p) if p.exists() => p,
        _ if libexec.exists() => libexec,
        _ => name.into(),
    }
}

/// Where `apt-ostreed` is (`APT_OSTREED` overrides).
fn daemon_path() -> PathBuf {
    std::env::var_os("APT_OSTREED")
        .map(PathBuf::from)
        .unwrap_or_else(|| helper_path("apt-ostreed"))
}

impl Client {
    pub fn connect(address: Option<&str>, sysroot: Option<&Path>) -> Result<Client> {
        match (address, sysroot) {
            (_, Some(sysroot)) => Client::private(sysroot),
            (address, None) => {
                let address = address.unwrap_or(protocol::DEFAULT_ADDRESS);
                let (connection, outgoing) = match address.strip_prefix("unix:") {
                    // Connected here, not by the varlink crate, whose error
                    // hides the operating system's reason.
                    Some(path) => {
                        let path = path.split(';').next().unwrap_or(path);
                        let stream =
                            UnixStream::connect(path).map_err(|e| connect_error(address, &e))?;
                        let (c, o) = from_stream(stream)?;
                        (c, Some(o))
                    }
                    None => (
                        Connection::with_address(address).map_err(|e| {
                            anyhow::anyhow!("Connecting to apt-ostreed at {address}: {e}")
                        })?,
                        None,
                    ),
                };
                Ok(Client {
                    connection,
                    outgoing,
                    daemon: None,
                    address: Some(address.to_string()),
                    agent: Default::default(),
                })
            }
        }
    }

    fn private(sysroot: &Path) -> Result<Client> {
        let (ours, theirs) = UnixStream::pair().context("Creating a socketpair")?;
        let theirs_fd = theirs.as_raw_fd();
        let mut command = Command::new(daemon_path());
        // The daemon never writes to stdout on purpose, but libostree prints
        // notes there: keep them off the CLI's output.
        command
            .arg("--sysroot")
            .arg(sysroot)
            .stdout(std::process::Stdio::from(std::io::stderr()));
        let log_level = std::env::var("APT_OSTREE_LOG").unwrap_or_else(|_| "warn".into());
        let log_level = std::ffi::CString::new(log_level).context("APT_OSTREE_LOG")?;
        #[allow(unsafe_code)]
        // SAFETY: runs in the forked child before exec, and only calls
        // async-signal-safe functions plus setenv, which is safe here because the
        // CLI is single-threaded when it spawns. The environment is set here, not
        // with Command::env, because LISTEN_PID must be the child's own pid and
        // Command::env would replace the environment these calls modify.
        unsafe {
            command.pre_exec(move || {
                if theirs_fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(theirs_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut pid = [0u8; 24];
                format_decimal(libc::getpid() as u64, &mut pid);
                libc::setenv(c"LISTEN_PID".as_ptr(), pid.as_ptr().cast(), 1);
                libc::setenv(c"LISTEN_FDS".as_ptr(), c"1".as_ptr(), 1);
                libc::setenv(c"LISTEN_FDNAMES".as_ptr(), c"varlink".as_ptr(), 1);
                libc::setenv(c"APT_OSTREE_LOG".as_ptr(), log_level.as_ptr(), 1);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("Starting {}", daemon_path().display()))?;
        drop(theirs);
        let (connection, outgoing) = from_stream(ours)?;
        Ok(Client {
            connection,
            outgoing: Some(outgoing),
            daemon: Some(child),
            address: None,
            agent: Default::default(),
        })
    }

    pub fn sysroot(&self) -> VarlinkClient {
        VarlinkClient::new(self.connection.clone())
    }

    /// Send `fds` with the next call, which names them by their index in
    /// this list (SCM_RIGHTS, as sd-varlink passes descriptors).
    pub fn send_with_next_call(&self, fds: Vec<OwnedFd>) -> Result<()> {
        let outgoing = self.outgoing.as_ref().ok_or_else(|| {
            anyhow::anyhow!("local packages can only be passed over a unix: socket")
        })?;
        *outgoing.lock().expect("not poisoned") = fds;
        Ok(())
    }

    /// The address of the system daemon, if that is what we talk to.
    pub fn address(&self) -> Option<&str> {
        self.address.as_deref()
    }

    /// `allowInteractiveAuthentication` for a change: true when polkit may
    /// ask this user to authenticate, that is when a person is at the
    /// terminal and is not root (root needs no question). The first time, a
    /// text authentication agent (`pkttyagent`) is started for this process,
    /// as systemctl does, and waited for until it is registered.
    pub fn interactive(&self) -> Option<bool> {
        use std::io::IsTerminal;
        if nix::unistd::geteuid().is_root()
            || self.daemon.is_some()
            || !std::io::stdin().is_terminal()
        {
            return None;
        }
        let agent = self.agent.get_or_init(start_agent);
        Some(true).filter(|_| agent.is_some())
    }

    /// PID of the private daemon, if we started one.
    pub fn private_daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }
}

/// Start `pkttyagent` for this process; None when there is none or it fails.
fn start_agent() -> Option<Child> {
    use std::io::Read;
    let (mut ready, notify) = UnixStream::pair().ok()?;
    let notify_fd = notify.as_raw_fd();
    let mut command = Command::new("pkttyagent");
    command
        .args(["--process", &std::process::id().to_string(), "--fallback"])
        .args(["--notify-fd", &notify_fd.to_string()]);
    #[allow(unsafe_code)]
    // SAFETY: runs between fork and exec and only calls fcntl, which is
    // async-signal-safe: the notify socket must survive exec.
    unsafe {
        command.pre_exec(move || {
            let flags = libc::fcntl(notify_fd, libc::F_GETFD);
            libc::fcntl(notify_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let child = command.spawn().ok()?;
    drop(notify);
    // pkttyagent writes a byte (or closes the socket) once it is registered.
    let mut byte = [0u8; 1];
    let _ = ready.read(&mut byte);
    Some(child)
}

type Outgoing = Arc<Mutex<Vec<OwnedFd>>>;

/// The writing side of a connection: sends queued descriptors with the first
/// bytes written after they were queued (the varlink crate writes each
/// message with one `write_all`).
struct DescriptorWriter {
    stream: UnixStream,
    outgoing: Outgoing,
}

impl Write for DescriptorWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let fds = std::mem::take(&mut *self.outgoing.lock().expect("not poisoned"));
        if fds.is_empty() {
            return self.stream.write(buf);
        }
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        loop {
            match sendmsg::<UnixAddr>(
                self.stream.as_raw_fd(),
                &[IoSlice::new(buf)],
                &rights,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => return Ok(n),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// A varlink connection over a connected socket, and its descriptor queue.
fn from_stream(stream: UnixStream) -> Result<(Arc<RwLock<Connection>>, Outgoing)> {
    let reader = stream.try_clone().context("Cloning the socket")?;
    let outgoing = Outgoing::default();
    let mut connection = Connection::default();
    connection.reader = Some(BufReader::new(Box::new(reader)));
    connection.writer = Some(Box::new(DescriptorWriter {
        stream,
        outgoing: outgoing.clone(),
    }));
    Ok((Arc::new(RwLock::new(connection)), outgoing))
}

/// What went wrong connecting to the system daemon, and what to do about it.
fn connect_error(address: &str, e: &std::io::Error) -> anyhow::Error {
    let advice = match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            "is apt-ostreed.socket running? On an OSTree-booted system: \
             `systemctl enable --now apt-ostreed.socket`; for a sysroot that is \
             not booted, pass --sysroot DIR"
        }
        std::io::ErrorKind::PermissionDenied => {
            "the socket should be open to every user (apt-ostreed.socket sets \
             SocketMode=0666); check its mode, or run as root"
        }
        _ => "is apt-ostreed running?",
    };
    anyhow::anyhow!("Connecting to apt-ostreed at {address}: {e}; {advice}")
}

/// Write `n` as a NUL-terminated decimal string into `buf`, without allocating
/// (for use between fork and exec).
fn format_decimal(mut n: u64, buf: &mut [u8; 24]) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[i] = digits[len - 1 - i];
    }
    buf[len] = 0;
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(Some(mut agent)) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        if let Some(mut child) = self.daemon.take() {
            // Closing our end tells the private daemon to finish and exit.
            if let Ok(mut c) = self.connection.write() {
                c.reader = None;
                c.writer = None;
            }
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_pids_without_allocating() {
        let mut buf = [0xffu8; 24];
        super::format_decimal(40213, &mut buf);
        assert_eq!(&buf[..6], b"40213\0");
        super::format_decimal(0, &mut buf);
        assert_eq!(&buf[..2], b"0\0");
    }
}
