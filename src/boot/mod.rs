//! Boot assessment: a new default deployment that does not boot well is
//! rolled back with nobody at the machine (docs/updates.md).
//!
//! - GRUB counts. `/etc/grub.d/14_apt-ostree` runs `apt-ostreed --boot
//!   grub-config` whenever libostree regenerates grub.cfg, which embeds the
//!   new default deployment's id in that grub.cfg. The counter is therefore
//!   armed by the same rename of the `loader` link that makes the deployment
//!   the default: a power cut before it leaves the old grub.cfg, which counts
//!   nothing. GRUB keeps the count in its environment block, with a lookup
//!   table instead of arithmetic (Debian's GRUB has none); with no try left
//!   it boots menu entry 1, the previous deployment, and leaves its id in
//!   `aot_failed`.
//! - Early in boot, [`check`] finds `aot_failed`, makes the booted
//!   deployment the default again and records the failure (status shows it;
//!   automatic updates skip that update; `upgrade` needs `--retry-failed`).
//! - After `boot-complete.target`, [`assess`] marks a good boot (GRUB stops
//!   counting) or, when a health check failed, reboots a deployment on trial
//!   after a delay. [`deadline`] reboots one whose boot never completes.

pub mod grubenv;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::logging::message_id;
use crate::origin::Origin;
use crate::sysroot::{deployment_name, same, Sysroot};
use grubenv::Env;

/// GRUB's environment block, relative to the sysroot: the boot partition's
/// `grub/grubenv`, GRUB's `$prefix/grubenv` for UEFI and BIOS alike.
pub const GRUBENV: &str = "boot/grub/grubenv";

/// The id of the last deployment whose boot was good.
const GOOD: &str = "aot_good";
/// The id of the default deployment GRUB is counting boots of.
const COUNTED: &str = "aot_id";
/// How many more boots it gets after the one GRUB is starting.
const LEFT: &str = "aot_left";
/// Set by GRUB when it boots the previous deployment instead.
const FAILED: &str = "aot_failed";

/// What GRUB's environment block says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counter {
    pub good: Option<String>,
    pub counted: Option<String>,
    pub left: Option<u32>,
    pub failed: Option<String>,
}

impl Counter {
    fn from_env(env: &Env) -> Counter {
        let get = |name| env.get(name).map(str::to_string);
        Counter {
            good: get(GOOD),
            counted: get(COUNTED),
            left: env.get(LEFT).and_then(|l| l.parse().ok()),
            failed: get(FAILED),
        }
    }

    /// The block of the sysroot at `root`; nothing when it cannot be read.
    pub fn read(root: &Path) -> Counter {
        match Env::read(&root.join(GRUBENV)) {
            Ok(env) => Counter::from_env(&env),
            Err(e) => {
                tracing::warn!("{e:#}");
                Counter::default()
            }
        }
    }

    /// Whether `id` is on trial: GRUB counts its boots and none was good yet.
    pub fn on_trial(&self, id: &str) -> bool {
        self.counted.as_deref() == Some(id) && self.good.as_deref() != Some(id)
    }
}

/// A deployment's boot assessment, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootState {
    /// Its last boot reached boot-complete.target.
    Good,
    /// On trial: GRUB gives it this many more boots.
    Unassessed { tries_left: u32 },
    /// It used up its tries and the previous deployment was made the default again.
    Failed { at: u64 },
}

pub fn state_of(counter: &Counter, failures: &[BootFailure], id: &str) -> Option<BootState> {
    if let Some(f) = failures.iter().find(|f| f.deployment == id) {
        return Some(BootState::Failed { at: f.at });
    }
    if counter.on_trial(id) {
        return Some(BootState::Unassessed {
            tries_left: counter.left.unwrap_or(0),
        });
    }
    (counter.good.as_deref() == Some(id)).then_some(BootState::Good)
}

/// A deployment that failed to boot, kept until `cleanup --boot-failures`
/// or `upgrade --retry-failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFailure {
    /// Its directory name ([`deployment_name`]).
    pub deployment: String,
    /// What it was made of ([`update_key`]); unknown if it was already gone.
    pub update: Option<String>,
    pub version: Option<String>,
    /// When it was rolled back, seconds since the epoch.
    pub at: u64,
}

/// The same update is the same base commit with the same requests.
pub fn update_key(base: &str, origin: &Origin) -> String {
    format!(
        "{base} {} {:?} {:?} {:?} {:?} {:?}",
        origin.base,
        origin.requested_packages,
        origin.requested_local_packages,
        origin.override_remove,
        origin.override_replace,
        origin.initramfs_args
    )
}

fn failures_path(state_dir: &Path) -> PathBuf {
    state_dir.join("boot-failures.json")
}

/// The failures recorded in the sysroot's state directory.
pub fn failures(state_dir: &Path) -> Vec<BootFailure> {
    std::fs::read_to_string(failures_path(state_dir))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

fn store_failures(sysroot: &Sysroot, failures: &[BootFailure]) -> Result<()> {
    let path = failures_path(&sysroot.state_dir());
    if failures.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("Removing {}", path.display()))
            }
            _ => Ok(()),
        };
    }
    std::fs::create_dir_all(sysroot.state_dir())?;
    crate::fsutil::write_atomic(&path, serde_json::to_string_pretty(failures)?.as_bytes())
}

/// The recorded failure of the update `base` with `origin`, if it failed before.
pub fn failed_before(sysroot: &Sysroot, base: &str, origin: &Origin) -> Option<BootFailure> {
    let key = update_key(base, origin);
    failures(&sysroot.state_dir())
        .into_iter()
        .find(|f| f.update.as_deref() == Some(key.as_str()))
}

/// Forget the failures `forget` picks; returns how many.
pub fn forget_failures(sysroot: &Sysroot, forget: impl Fn(&BootFailure) -> bool) -> Result<usize> {
    let all = failures(&sysroot.state_dir());
    let kept: Vec<BootFailure> = all.iter().filter(|f| !forget(f)).cloned().collect();
    if kept.len() != all.len() {
        store_failures(sysroot, &kept)?;
    }
    Ok(all.len() - kept.len())
}

/// The GRUB script of `/etc/grub.d/14_apt-ostree`, for the boot entries
/// libostree is writing under `root`/boot. Never fails: grub-mkconfig
/// failing would fail the deployment, so a problem is a comment and no
/// counting.
pub fn grub_config(root: &Path, tries: u32) -> String {
    match default_entry(root) {
        Ok(Some(_)) if tries == 0 => "# apt-ostree: boot counting is off (BootTries=0)\n".into(),
        Ok(Some(id)) => grub_script(&id, tries),
        Ok(None) => "# apt-ostree: no boot counting: there is no previous deployment\n".into(),
        Err(e) => format!(
            "# apt-ostree: no boot counting: {}\n",
            format!("{e:#}").replace('\n', " ")
        ),
    }
}

/// The id of the default deployment among the boot entries being written,
/// if there is a previous one to fall back to.
fn default_entry(root: &Path) -> Result<Option<String>> {
    let boot = root.join("boot");
    // libostree says which entries it is writing; else the current ones.
    let version = match std::env::var("_OSTREE_GRUB2_BOOTVERSION") {
        Ok(v) => v,
        Err(_) => std::fs::read_link(boot.join("loader"))
            .context("Reading /boot/loader")?
            .to_string_lossy()
            .trim_start_matches("loader.")
            .to_string(),
    };
    if version != "0" && version != "1" {
        bail!("unexpected boot version {version:?}");
    }
    // 10_linux lists kernels found there before the ostree entries.
    for dir in [root.to_path_buf(), boot.clone()] {
        let own_kernel = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"));
        if own_kernel {
            bail!(
                "{} has kernels outside ostree, so menu entry 1 is not the previous deployment",
                dir.display()
            );
        }
    }
    let entries = boot.join(format!("loader.{version}/entries"));
    let mut found: Vec<(u64, String)> = Vec::new();
    for entry in
        std::fs::read_dir(&entries).with_context(|| format!("Reading {}", entries.display()))?
    {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "conf") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::trim))
                .map(str::to_string)
        };
        let order = field("version").and_then(|v| v.parse().ok());
        if let (Some(order), Some(options)) = (order, field("options")) {
            found.push((order, options));
        }
    }
    if found.len() < 2 {
        return Ok(None);
    }
    // libostree gives the default the highest version (n - index).
    let (_, options) = found
        .iter()
        .max_by_key(|(order, _)| *order)
        .expect("two entries");
    let target = options
        .split_whitespace()
        .find_map(|a| a.strip_prefix("ostree="))
        .context("the default boot entry has no ostree= argument")?;
    let link = root.join(target.trim_start_matches('/'));
    let deployment = std::fs::canonicalize(&link).with_context(|| format!("Resolving {target}"))?;
    let id = deployment
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let valid = id.split_once('.').is_some_and(|(csum, serial)| {
        csum.len() == 64
            && csum.bytes().all(|b| b.is_ascii_hexdigit())
            && !serial.is_empty()
            && serial.bytes().all(|b| b.is_ascii_digit())
    });
    if !valid {
        bail!("{target} does not lead to a deployment");
    }
    Ok(Some(id))
}

/// Point the current grub.cfg's counter at the current default deployment.
///
/// libostree writes a new grub.cfg only when the boot entries change; when
/// the new list's entries equal the old one's pair by pair (a layered
/// deployment keeps its base's version and kernel), it swaps the links the
/// entries point through and keeps grub.cfg, whose `aot_default` then names
/// the previous default. This rewrites that one line (a new file renamed
/// over the old, so a power cut leaves one or the other). Returns whether
/// it did.
pub fn refresh_grub_config(root: &Path) -> Result<bool> {
    let Ok(loader) = std::fs::canonicalize(root.join("boot/loader")) else {
        return Ok(false);
    };
    let cfg = loader.join("grub.cfg");
    let Ok(text) = std::fs::read_to_string(&cfg) else {
        return Ok(false);
    };
    let Some(written) = text
        .lines()
        .find_map(|l| l.strip_prefix("set aot_default=\""))
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return Ok(false);
    };
    let Some(default) = default_entry(root)? else {
        return Ok(false);
    };
    if written == default {
        return Ok(false);
    }
    let updated = text.replace(
        &format!("set aot_default=\"{written}\""),
        &format!("set aot_default=\"{default}\""),
    );
    crate::fsutil::write_atomic(&cfg, updated.as_bytes())?;
    tracing::info!(
        "{}: boot counting now follows {default}, the default (was {written})",
        cfg.display()
    );
    Ok(true)
}

fn grub_script(id: &str, tries: u32) -> String {
    let mut lookup = String::new();
    for n in 1..=tries {
        let keyword = if n == 1 { "if" } else { "elif" };
        lookup.push_str(&format!(
            "      {keyword} [ \"${LEFT}\" = {n} ]; then set {LEFT}={}\n",
            n - 1
        ));
    }
    format!(
        "# apt-ostree: boot counting (docs/updates.md). Each boot of the default
# deployment, until one reaches boot-complete.target, uses a try; with none
# left, boot entry 1 (the previous deployment) and tell apt-ostree.
set aot_default=\"{id}\"
if [ -s \"$prefix/grubenv\" ]; then
  load_env --file \"$prefix/grubenv\" {GOOD} {COUNTED} {LEFT}
  if [ \"${GOOD}\" != \"$aot_default\" ]; then
    if [ \"${COUNTED}\" != \"$aot_default\" ]; then
      set {COUNTED}=\"$aot_default\"
      set {LEFT}={tries}
    fi
    if [ \"${LEFT}\" = 0 ]; then
      set default=1
      set {FAILED}=\"$aot_default\"
      save_env --file \"$prefix/grubenv\" {FAILED}
    else
{lookup}      else set {LEFT}=0
      fi
      save_env --file \"$prefix/grubenv\" {COUNTED} {LEFT}
    fi
  fi
fi
"
    )
}

/// Early in boot: when GRUB fell back from a default that used up its
/// tries, make the booted deployment the default again, record the
/// failure and log it. Also creates the environment block where it is
/// missing, so that GRUB can count on machines made without one.
pub fn check(sysroot: &mut Sysroot) -> Result<()> {
    let path = sysroot.path().join(GRUBENV);
    if !path.parent().is_some_and(Path::exists) {
        tracing::info!(
            "No {}: not booted by GRUB, no boot counting",
            path.display()
        );
        return Ok(());
    }
    refresh_grub_config(sysroot.path())?;
    let existed = path.exists();
    let mut env = Env::read(&path)?;
    let Some(failed) = env.get(FAILED).map(str::to_string) else {
        if !existed {
            env.write(&path)?;
            tracing::info!("Created {}, where GRUB counts boot tries", path.display());
        }
        return Ok(());
    };
    let booted = sysroot
        .ostree()
        .booted_deployment()
        .context("GRUB fell back, but no deployment is booted")?;
    let booted_id = deployment_name(&booted);
    if failed != booted_id {
        let deployments = sysroot.ostree().deployments();
        let failed_deployment = deployments.iter().find(|d| deployment_name(d) == failed);
        let (update, version) = match failed_deployment {
            Some(d) => {
                let info = sysroot.commit_info(d.csum().as_str())?;
                let origin = Sysroot::origin_of(d)?;
                (Some(update_key(info.base(), &origin)), info.version.clone())
            }
            None => (None, None),
        };
        let mut records = failures(&sysroot.state_dir());
        records.retain(|f| f.deployment != failed);
        records.push(BootFailure {
            deployment: failed.clone(),
            update,
            version: version.clone(),
            at: crate::error::now(),
        });
        store_failures(sysroot, &records)?;
        if deployments
            .first()
            .is_some_and(|d| deployment_name(d) == failed)
        {
            let mut order = vec![same(&booted)];
            order.extend(deployments.iter().filter(|d| !d.equal(&booted)).map(same));
            sysroot.write_deployments(&order)?;
        }
        tracing::error!(
            MESSAGE_ID = message_id::BOOT_ROLLED_BACK,
            "Deployment {failed}{} used up its boot tries without a good boot; \
             {booted_id} is the default again",
            version.map(|v| format!(" ({v})")).unwrap_or_default()
        );
    }
    env.unset(FAILED);
    env.unset(COUNTED);
    env.unset(LEFT);
    // What GRUB fell back to is the last resort: never on trial, so that a
    // machine whose previous deployment fails its checks too cannot loop.
    env.set(GOOD, &booted_id);
    env.write(&path)?;
    // The reorder rewrote the menu, unless libostree found the boot entries
    // equal and only swapped its links.
    refresh_grub_config(sysroot.path())?;
    Ok(())
}

/// After boot-complete.target: `good` when it was reached.
pub fn assess(sysroot: &Sysroot, config: &Config, good: bool) -> Result<()> {
    let path = sysroot.path().join(GRUBENV);
    let booted = sysroot
        .ostree()
        .booted_deployment()
        .context("no deployment is booted")?;
    let id = deployment_name(&booted);
    let mut env = Env::read(&path)?;
    let counter = Counter::from_env(&env);
    if good {
        // First, so that a failed write below cannot leave it to reboot a good boot.
        stop_deadline();
        if path.exists() && counter.good.as_deref() != Some(id.as_str()) {
            env.set(GOOD, &id);
            if counter.counted.as_deref() == Some(id.as_str()) {
                env.unset(COUNTED);
                env.unset(LEFT);
            }
            env.write(&path)?;
            tracing::info!(
                MESSAGE_ID = message_id::BOOT_GOOD,
                "Boot of {id} is good: boot-complete.target was reached"
            );
        }
        return Ok(());
    }
    if counter.on_trial(&id) && sysroot.rollback_index().is_some() {
        let delay = config.boot_failure_reboot_delay;
        tracing::error!(
            MESSAGE_ID = message_id::BOOT_CHECK_FAILED,
            "A health check failed on {id}, which is on trial ({} more boots): rebooting in {delay} s",
            counter.left.unwrap_or(0)
        );
        std::thread::sleep(Duration::from_secs(delay));
        crate::process::run(Command::new("systemctl").arg("reboot"))?;
        return Ok(());
    }
    bail!(
        "boot-complete.target was not reached (a health check failed); {id} is not on trial, so it stays booted"
    )
}

/// The deadline has nothing left to watch once the boot is assessed.
fn stop_deadline() {
    let _ = crate::process::run(Command::new("systemctl").args([
        "stop",
        "--no-block",
        "apt-ostree-boot-deadline.service",
    ]));
}

fn boot_complete() -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet", "boot-complete.target"])
        .status()
        .is_ok_and(|s| s.success())
}

/// From early boot: reboot a deployment on trial whose boot does not reach
/// boot-complete.target in time (a hang, an emergency shell).
pub fn deadline(sysroot: &Sysroot, config: &Config) -> Result<()> {
    let booted = sysroot
        .ostree()
        .booted_deployment()
        .context("no deployment is booted")?;
    let id = deployment_name(&booted);
    let seconds = config.boot_deadline;
    // With nothing to fall back to, a reboot would only repeat the hang.
    let on_trial = Counter::read(sysroot.path()).on_trial(&id);
    if seconds == 0 || !on_trial || sysroot.rollback_index().is_none() {
        return Ok(());
    }
    tracing::info!("{id} is on trial: rebooting unless its boot completes within {seconds} s");
    std::thread::sleep(Duration::from_secs(seconds));
    if Counter::read(sysroot.path()).on_trial(&id) && !boot_complete() {
        tracing::error!(
            MESSAGE_ID = message_id::BOOT_CHECK_FAILED,
            "{id} did not reach boot-complete.target within {seconds} s: rebooting"
        );
        crate::process::run(Command::new("systemctl").args(["reboot", "--force"]))?;
    }
    Ok(())
}

/// `apt-ostreed --boot STEP`: the boot units' entry point.
pub fn helper_main(step: &str, config_path: &Path) -> Result<()> {
    let root = Path::new("/");
    if step == "grub-config" {
        // grub-mkconfig must not fail over a typo: the defaults then.
        let config = Config::load(config_path).unwrap_or_else(|e| {
            tracing::warn!("{e:#}; counting boot tries with the defaults");
            Config::default()
        });
        print!("{}", grub_config(root, config.boot_tries));
        return Ok(());
    }
    let config = Config::load(config_path)?;
    match step {
        "check" => {
            let mut sysroot = Sysroot::open(root)?;
            sysroot.ostree().lock().context("Locking the sysroot")?;
            let result = check(&mut sysroot);
            sysroot.ostree().unlock();
            result
        }
        "assess" => assess(&Sysroot::open(root)?, &config, boot_complete()),
        "deadline" => deadline(&Sysroot::open(root)?, &config),
        other => bail!("unknown boot step {other:?}: grub-config, check, assess or deadline"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.0";

    #[test]
    fn the_script_counts_down_by_lookup_and_falls_back_to_entry_one() {
        let s = grub_script(ID, 3);
        assert!(s.contains(&format!("set aot_default=\"{ID}\"")));
        assert!(s.contains("set aot_left=3\n"));
        assert!(s.contains("if [ \"$aot_left\" = 1 ]; then set aot_left=0"));
        assert!(s.contains("elif [ \"$aot_left\" = 3 ]; then set aot_left=2"));
        assert!(s.contains("set default=1"));
    }

    /// GRUB's own parser accepts the script (grub-script-check, from
    /// grub-common, which scripts/setup installs).
    #[test]
    fn grub_parses_the_script() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("14_apt-ostree.cfg");
        for tries in [1, 3] {
            std::fs::write(&file, grub_script(ID, tries)).unwrap();
            let out = Command::new("grub-script-check")
                .arg(&file)
                .output()
                .expect("grub-script-check (grub-common) must be installed");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn trial_and_states() {
        let counter = Counter {
            good: Some("a.0".into()),
            counted: Some("b.0".into()),
            left: Some(2),
            failed: None,
        };
        assert!(counter.on_trial("b.0"));
        assert!(!counter.on_trial("a.0"));
        let failures = vec![BootFailure {
            deployment: "c.0".into(),
            update: None,
            version: None,
            at: 5,
        }];
        assert_eq!(state_of(&counter, &failures, "a.0"), Some(BootState::Good));
        assert_eq!(
            state_of(&counter, &failures, "b.0"),
            Some(BootState::Unassessed { tries_left: 2 })
        );
        assert_eq!(
            state_of(&counter, &failures, "c.0"),
            Some(BootState::Failed { at: 5 })
        );
        assert_eq!(state_of(&counter, &failures, "d.0"), None);
    }

    #[test]
    fn nonsense_boot_entries_give_a_comment_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let out = grub_config(dir.path(), 3);
        assert!(out.starts_with("# apt-ostree: no boot counting:"), "{out}");
        assert_eq!(out.lines().count(), 1);
    }
}
