//! Following a transaction from the CLI: progress bars on a terminal, plain
//! lines otherwise, Ctrl-C to cancel, and the result turned into an exit code.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{de::DeserializeOwned, Serialize};

use super::status::format_time;
use super::Client;
use crate::protocol::sysroot::*;

/// The reply of every transaction method: a progress event or the final result.
pub trait TransactionReply {
    fn into_parts(self) -> (Option<Progress>, Option<TransactionResult>);
}

macro_rules! transaction_replies {
    ($($t:ty),* $(,)?) => {$(
        impl TransactionReply for $t {
            fn into_parts(self) -> (Option<Progress>, Option<TransactionResult>) {
                (self.progress, self.result)
            }
        }
    )*};
}

transaction_replies!(
    Upgrade_Reply,
    AutomaticUpdate_Reply,
    Rebase_Reply,
    Deploy_Reply,
    Rollback_Reply,
    PinDeployment_Reply,
    Cleanup_Reply,
    Install_Reply,
    Uninstall_Reply,
    OverrideRemove_Reply,
    OverrideReplace_Reply,
    OverrideReset_Reply,
    ChangeKernelArguments_Reply,
    Initramfs_Reply,
    Reset_Reply,
    ApplyLive_Reply,
    UsrOverlay_Reply,
    UpdateBootloader_Reply,
    RefreshMetadata_Reply,
    Watch_Reply,
);

/// Shows progress events as they arrive.
struct Renderer {
    bar: Option<ProgressBar>,
    tty: bool,
}

impl Renderer {
    fn new() -> Renderer {
        Renderer {
            bar: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn show(&mut self, p: Progress) {
        match p.kind {
            Progress_kind::taskBegin => {
                let task = p.task.unwrap_or_default();
                self.finish();
                if self.tty {
                    // A spinner until there is something to count.
                    let bar = ProgressBar::new_spinner();
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar.set_message(task);
                    self.bar = Some(bar);
                } else {
                    // One line per step; the next one says this one ended.
                    eprintln!("{task}...");
                }
            }
            Progress_kind::taskEnd => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                    eprintln!("{}... done", p.task.unwrap_or_default());
                }
            }
            Progress_kind::percent => {
                if let (Some(bar), Some(pct)) = (&self.bar, p.percent) {
                    counting(bar);
                    bar.set_length(100);
                    bar.set_position(pct.clamp(0, 100) as u64);
                }
            }
            Progress_kind::download => {
                let done = p.bytesDone.unwrap_or(0).max(0) as u64;
                let rate = p.bytesPerSecond.unwrap_or(0).max(0) as u64;
                let text = match p.bytesTotal {
                    Some(total) => format!(
                        "{} / {} ({}/s)",
                        indicatif::HumanBytes(done),
                        indicatif::HumanBytes(total.max(0) as u64),
                        indicatif::HumanBytes(rate)
                    ),
                    None => format!(
                        "{} ({}/s)",
                        indicatif::HumanBytes(done),
                        indicatif::HumanBytes(rate)
                    ),
                };
                if let Some(bar) = &self.bar {
                    if let Some(total) = p.bytesTotal.filter(|t| *t > 0) {
                        counting(bar);
                        bar.set_length(100);
                        bar.set_position((done * 100 / total as u64).min(100));
                    }
                    bar.set_prefix(text);
                }
            }
            Progress_kind::log => {
                if let Some(m) = p.message {
                    self.println(&m);
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Turn a spinner into a bar once there is something to count.
fn counting(bar: &ProgressBar) {
    if bar.length().is_none() {
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {prefix} {wide_bar} {percent:>3}%")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    }
}

/// Ask the daemon to cancel the running transaction when the user presses Ctrl-C.
fn cancel_on_interrupt(client: &Client) {
    use nix::sys::signal::{SigSet, Signal};
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    if mask.thread_block().is_err() {
        return;
    }
    let address = client.address().map(str::to_string);
    let daemon_pid = client.private_daemon_pid();
    std::thread::spawn(move || {
        if mask.wait().is_err() {
            return;
        }
        eprintln!("Cancelling...");
        match (address, daemon_pid) {
            (Some(address), _) => {
                if let Ok(other) = Client::connect(Some(&address), None) {
                    let _ = other.sysroot().cancel(None, None).call();
                }
            }
            // A private daemon cancels its transaction on SIGTERM.
            (None, Some(pid)) => {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            (None, None) => {}
        }
    });
}

/// Stream `call`'s progress to the terminal and return its result.
pub fn follow<A, R>(
    client: &Client,
    mut call: varlink::MethodCall<A, R, Error>,
) -> Result<TransactionResult>
where
    A: Serialize,
    R: DeserializeOwned + TransactionReply,
{
    cancel_on_interrupt(client);
    let mut renderer = Renderer::new();
    let replies = call.more()?;
    for reply in replies {
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                renderer.finish();
                return Err(e.into());
            }
        };
        let (progress, result) = reply.into_parts();
        if let Some(p) = progress {
            renderer.show(p);
        }
        if let Some(result) = result {
            renderer.finish();
            return Ok(result);
        }
    }
    renderer.finish();
    Err(anyhow!(
        "apt-ostreed ended the transaction without a result"
    ))
}

/// Print a package diff the way `rpm-ostree db diff` does.
pub fn print_diff(diff: &PackageDiff) {
    if !diff.upgraded.is_empty() {
        println!("Upgraded:");
        for c in &diff.upgraded {
            println!("  {} {} -> {}", c.name, c.fromVersion, c.toVersion);
        }
    }
    if !diff.downgraded.is_empty() {
        println!("Downgraded:");
        for c in &diff.downgraded {
            println!("  {} {} -> {}", c.name, c.fromVersion, c.toVersion);
        }
    }
    if !diff.removed.is_empty() {
        println!("Removed:");
        for p in &diff.removed {
            println!("  {} {}", p.name, p.version);
        }
    }
    if !diff.added.is_empty() {
        println!("Added:");
        for p in &diff.added {
            println!("  {} {}", p.name, p.version);
        }
    }
}

/// Print a transaction's result and choose the exit code.
pub fn report(result: &TransactionResult, unchanged_exit_77: bool) -> u8 {
    if let Some(u) = &result.update {
        // An image's update is named by its manifest digest, not a commit.
        let what = if u.checksum.starts_with("sha256:") {
            "Digest"
        } else {
            "Commit"
        };
        println!(
            "AvailableUpdate:\n  Version: {} ({})\n  {what}: {}",
            u.version.as_deref().unwrap_or("(none)"),
            format_time(u.timestamp),
            u.checksum
        );
    }
    if let Some(diff) = &result.diff {
        print_diff(diff);
    }
    if !result.message.is_empty() {
        println!("{}", result.message);
    }
    if result.rebootRequired {
        println!("Run \"systemctl reboot\" to start a reboot");
    }
    if !result.changed && unchanged_exit_77 {
        super::EXIT_UNCHANGED
    } else {
        0
    }
}
