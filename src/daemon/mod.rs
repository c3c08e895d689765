//! `apt-ostreed`: the privileged daemon that serves `org.aptostree.Sysroot`.
//!
//! It is socket-activated and short-lived: the first connection starts it, it
//! serves calls on a thread per connection, and it exits when it has had no
//! connection and no transaction for `--idle-timeout` seconds. It never exits
//! while a transaction runs; SIGTERM cancels the transaction at its next safe
//! point and waits for it.

mod auth;
mod connection;
mod contract;
mod convert;
mod descriptors;
mod errors;
mod limits;
mod reader;
mod server;
mod service;
mod socket;
mod stream;
mod update;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use libsystemd::daemon::{notify, NotifyState};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tracing_subscriber::filter::LevelFilter;
use varlink::VarlinkService;

use crate::config::{self, Config};
use crate::logging::{self, LevelHandle};
use crate::protocol;
use crate::transaction;

pub use auth::Caller;

/// Command line of `apt-ostreed`.
#[derive(Debug, Parser)]
#[command(name = "apt-ostreed", version, about = "apt-ostree system daemon")]
pub struct Args {
    /// Listen on this address (unix:PATH) instead of the socket systemd passes.
    #[arg(long)]
    pub address: Option<String>,
    /// The sysroot to manage.
    #[arg(long, default_value = "/")]
    pub sysroot: PathBuf,
    /// Exit after this many seconds without connections or work (0: never).
    /// Default: IdleExitTimeout from the configuration, else 60.
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// The configuration file.
    #[arg(long, default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Internal: write an apply-live plan into the running /usr (the daemon
    /// starts this as a transient unit with its own mount namespace).
    #[arg(long, hide = true)]
    pub apply_live_plan: Option<PathBuf>,
    /// Internal: a step of boot assessment, run by the boot units and the
    /// grub.d hook (grub-config, check, assess, deadline; docs/updates.md).
    #[arg(long, hide = true, value_name = "STEP")]
    pub boot: Option<String>,
    /// Internal: convert an image's tree into a deployable one, confined
    /// to it (the daemon runs this in bubblewrap; docs/containers.md).
    #[arg(long, hide = true, value_name = "DIR")]
    pub convert_tree: Option<PathBuf>,
}

/// State shared by every connection.
pub struct Daemon {
    pub config_path: PathBuf,
    pub config: Mutex<Config>,
    pub reader: reader::Reader,
    pub transactions: transaction::Manager,
    pub log_level: Option<LevelHandle>,
    limits: Arc<limits::Limits>,
    activity: Mutex<Activity>,
    /// Written to whenever activity ends, so the main loop re-checks idleness at once.
    wake: (UnixStream, UnixStream),
}

struct Activity {
    connections: usize,
    since: Instant,
}

impl Daemon {
    pub fn new(
        sysroot: PathBuf,
        config_path: PathBuf,
        log_level: Option<LevelHandle>,
    ) -> Result<Daemon> {
        let config = Config::load(&config_path)?;
        // Engines join paths onto the sysroot's (and libostree hands back
        // paths relative to it): a relative --sysroot would resolve against
        // whatever directory each of them assumes.
        let sysroot = std::path::absolute(&sysroot)
            .with_context(|| format!("Resolving {}", sysroot.display()))?;
        let wake = UnixStream::pair().context("Creating the wake-up socketpair")?;
        wake.1.set_nonblocking(true)?;
        wake.0.set_nonblocking(true)?;
        let reader = reader::Reader::spawn(sysroot.clone());
        // When a transaction starts or ends: tell systemd, re-read the
        // sysroot on the next query, and let the main loop re-check idleness.
        let hook = {
            let reader = reader.clone();
            let wake = wake.0.try_clone().context("Cloning the wake-up socket")?;
            Box::new(move |t: Option<&crate::error::TransactionInfo>| {
                match t {
                    Some(t) => sd_notify(&[NotifyState::Status(format!("Running: {}", t.title))]),
                    None => {
                        reader.invalidate();
                        sd_notify(&[NotifyState::Status("Idle".into())]);
                    }
                }
                let _ = (&wake).write(&[1]);
            })
        };
        Ok(Daemon {
            wake,
            reader,
            transactions: transaction::Manager::new(sysroot, hook),
            config_path,
            config: Mutex::new(config),
            log_level,
            limits: Arc::new(limits::Limits::from_rlimit()),
            activity: Mutex::new(Activity {
                connections: 0,
                since: Instant::now(),
            }),
        })
    }

    /// Make the main loop look at the daemon's state again.
    fn wake_main_loop(&self) {
        let _ = (&self.wake.0).write(&[1]);
    }

    fn drain_wake_ups(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake.1).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// Re-read the configuration now and the sysroot on the next call.
    pub fn reload(&self) {
        match Config::load(&self.config_path) {
            Ok(c) => *self.config.lock().expect("config lock") = c,
            Err(e) => tracing::warn!("Keeping the old configuration: {e:#}"),
        }
        self.reader.invalidate();
    }

    fn connection_opened(&self) {
        let mut a = self.activity.lock().expect("activity lock");
        a.connections += 1;
        a.since = Instant::now();
    }

    fn connection_closed(&self) {
        let mut a = self.activity.lock().expect("activity lock");
        a.connections -= 1;
        a.since = Instant::now();
        drop(a);
        self.wake_main_loop();
    }

    /// How long the daemon has been without connections and work, if it is.
    fn idle_for(&self) -> Option<Duration> {
        let a = self.activity.lock().expect("activity lock");
        (a.connections == 0 && !self.transactions.is_busy()).then(|| a.since.elapsed())
    }

    fn service(self: &Arc<Self>) -> VarlinkService {
        VarlinkService::new(
            "apt-ostree",
            "apt-ostreed",
            env!("CARGO_PKG_VERSION"),
            "https://github.com/apt-ostree/apt-ostree",
            vec![
                Box::new(protocol::sysroot::new(Box::new(
                    server::SysrootInterface::new(self.clone()),
                ))),
                Box::new(protocol::service::new(Box::new(
                    service::ServiceInterface::new(self.clone()),
                ))),
                Box::new(protocol::update::new(Box::new(
                    update::UpdateInterface::new(self.clone()),
                ))),
            ],
        )
    }
}

fn sd_notify(state: &[NotifyState]) {
    if let Err(e) = notify(false, state) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Entry point of `apt-ostreed`.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(plan) = &args.apply_live_plan {
        // Its output goes back to the transaction through systemd-run --pipe.
        return match crate::live::helper_main(plan) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(tree) = &args.convert_tree {
        // The report goes to stdout, an error to stderr: both to the daemon.
        return match crate::tree::convert_main(tree) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let level = logging::init_daemon(LevelFilter::INFO);
    if let Some(step) = &args.boot {
        // Messages go to the journal (or stderr): grub-config's stdout is grub.cfg.
        return match crate::boot::helper_main(step, &args.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args, level) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args, level: LevelHandle) -> Result<()> {
    // Signals are read from a signalfd in the main loop; block them before any
    // thread starts so that every thread inherits the mask.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().context("Blocking signals")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("Creating a signalfd")?;

    let socket = match &args.address {
        Some(address) => socket::bind(address)?,
        None => socket::from_activation()?.context(
            "no socket passed by systemd; start apt-ostreed.socket or pass --address unix:PATH",
        )?,
    };
    let daemon = Arc::new(Daemon::new(
        args.sysroot.clone(),
        args.config.clone(),
        Some(level),
    )?);
    let service = Arc::new(daemon.service());
    let configured = daemon.config.lock().expect("config lock").idle_exit_timeout;
    let idle_timeout = Duration::from_secs(args.idle_timeout.unwrap_or(configured));
    tracing::info!(sysroot = %args.sysroot.display(), "apt-ostreed {} ready", env!("CARGO_PKG_VERSION"));
    sd_notify(&[NotifyState::Ready, NotifyState::Status("Idle".into())]);

    let listener = match socket {
        socket::Socket::Listening(l) => {
            l.set_nonblocking(true)
                .context("Setting the socket non-blocking")?;
            Some(l)
        }
        socket::Socket::Connected(stream) => {
            spawn_connection(&daemon, &service, stream);
            None
        }
    };
    main_loop(&daemon, &service, listener.as_ref(), &signals, idle_timeout)?;
    crate::layering::finish_cleanups();

    sd_notify(&[NotifyState::Stopping]);
    tracing::info!("apt-ostreed exiting");
    Ok(())
}

fn spawn_connection(daemon: &Arc<Daemon>, service: &Arc<VarlinkService>, stream: UnixStream) {
    // Whoever is over their share is closed at once, before any thread or
    // buffer is spent on them (root keeps room beyond the total).
    let uid = auth::peer_of(&stream).map_or(u32::MAX, |c| c.uid);
    let Some(admission) = daemon.limits.admit(uid) else {
        return;
    };
    daemon.connection_opened();
    let (ours, service) = (daemon.clone(), service.clone());
    let spawned = thread::Builder::new()
        .name("connection".into())
        .spawn(move || {
            if let Err(e) = connection::serve(stream, &service, &ours.limits) {
                tracing::debug!("Connection closed: {e}");
            }
            drop(admission);
            ours.connection_closed();
        });
    if let Err(e) = spawned {
        tracing::warn!("Cannot serve a connection: {e}");
        daemon.connection_closed();
    }
}

/// Accept connections until idle (or, on a connected socket, until it closes)
/// or until SIGTERM/SIGINT, then wait for a running transaction to end.
fn main_loop(
    daemon: &Arc<Daemon>,
    service: &Arc<VarlinkService>,
    listener: Option<&UnixListener>,
    signals: &SignalFd,
    idle_timeout: Duration,
) -> Result<()> {
    const TICK: Duration = Duration::from_secs(1);
    let mut backoff_until: Option<Instant> = None;
    let mut out_of_descriptors = false;
    loop {
        let idle = daemon.idle_for();
        let wait = match (listener, idle) {
            // A connected socket is served once: done when it closed and no work remains.
            (None, Some(_)) => return Ok(()),
            (Some(_), Some(idle)) if !idle_timeout.is_zero() => {
                if idle >= idle_timeout {
                    tracing::info!("Idle for {}s", idle_timeout.as_secs());
                    return Ok(());
                }
                (idle_timeout - idle).min(TICK)
            }
            _ => TICK,
        };
        // Out of descriptors: leave the listener alone for a while (new
        // connections wait in its backlog) instead of spinning on EMFILE.
        let backing_off = backoff_until.is_some_and(|t| Instant::now() < t);
        let wait = match backoff_until {
            Some(t) if backing_off => wait.min(t - Instant::now()),
            _ => wait,
        };
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(daemon.wake.1.as_fd(), PollFlags::POLLIN),
        ];
        if let (Some(l), false) = (listener, backing_off) {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        let timeout =
            PollTimeout::try_from(wait.as_millis().max(1) as u64).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("Waiting for connections"),
        }
        let signalled = fds[0].revents().is_some_and(|r| !r.is_empty());
        let connecting = fds
            .get(2)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        drop(fds);
        daemon.drain_wake_ups();
        if signalled {
            if let Ok(Some(info)) = signals.read_signal() {
                tracing::info!("Received signal {}", info.ssi_signo);
            }
            return shut_down(daemon);
        }
        if connecting {
            if let Some(l) = listener {
                backoff_until = accept_all(daemon, service, l, &mut out_of_descriptors);
            }
        }
    }
}

/// Accept what waits; `Some(until)` when out of file descriptors: stop
/// accepting until then. The condition is logged once per episode.
fn accept_all(
    daemon: &Arc<Daemon>,
    service: &Arc<VarlinkService>,
    listener: &UnixListener,
    out_of_descriptors: &mut bool,
) -> Option<Instant> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if std::mem::take(out_of_descriptors) {
                    tracing::info!("Accepting connections again");
                }
                if let Err(e) = stream.set_nonblocking(false) {
                    tracing::warn!("Cannot serve a connection: {e}");
                    continue;
                }
                spawn_connection(daemon, service, stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                if !std::mem::replace(out_of_descriptors, true) {
                    tracing::warn!(
                        "Out of file descriptors ({e}): new connections wait until some close"
                    );
                }
                return Some(Instant::now() + Duration::from_millis(250));
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                return None;
            }
        }
    }
}

/// Stop: cancel a running transaction and wait for it to reach a safe point.
fn shut_down(daemon: &Daemon) -> Result<()> {
    sd_notify(&[NotifyState::Stopping]);
    if daemon.transactions.is_busy() {
        tracing::info!("Waiting for the running transaction to stop");
        daemon.transactions.cancel_and_wait();
        // Let its followers receive the outcome before the process ends.
        let deadline = Instant::now() + Duration::from_secs(5);
        while daemon.activity.lock().expect("activity lock").connections > 0
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}
