//! The GRUB side of boot counting: the script `/etc/grub.d/14_apt-ostree`
//! adds to grub.cfg (it counts the boots of the default deployment and
//! falls back to the previous one), the menu entry `/etc/grub.d/16_apt-ostree`
//! adds after libostree's (GRUB falls back to it when the default's kernel
//! does not start: refused by Secure Boot, or unreadable), and keeping the
//! deployment id right where libostree keeps grub.cfg as it is.
//!
//! Everything here runs in Debian's signed GRUB, which loads no module
//! from disk under Secure Boot: only commands built into it (`load_env`,
//! `save_env`, `[`, `set`, `configfile`; docs/updates.md).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{COUNTED, FAILED, GOOD, LEFT, REFUSED};

/// The GRUB script of `/etc/grub.d/14_apt-ostree`, for the boot entries
/// libostree is writing under `root`/boot. Never fails: grub-mkconfig
/// failing would fail the deployment, so a problem is a comment and no
/// counting.
pub fn grub_config(root: &Path, tries: u32) -> String {
    match default_entry(root) {
        Ok(Some(_)) if tries == 0 => "# apt-ostree: boot counting is off (BootTries=0)\n".into(),
        Ok(Some((id, entries))) => grub_script(&id, tries, entries),
        Ok(None) => "# apt-ostree: no boot counting: there is no previous deployment\n".into(),
        Err(e) => format!(
            "# apt-ostree: no boot counting: {}\n",
            format!("{e:#}").replace('\n', " ")
        ),
    }
}

/// The menu entry of `/etc/grub.d/16_apt-ostree`, right after libostree's
/// entries: GRUB runs it when the default entry's kernel did not start.
/// Nothing when boot tries are not counted.
pub fn grub_fallback_entry(root: &Path, tries: u32) -> String {
    match default_entry(root) {
        Ok(Some((id, _))) if tries > 0 => fallback_entry(&id),
        _ => String::new(),
    }
}

/// The id of the default deployment among the boot entries being written,
/// and how many entries libostree writes, if there is a previous one to
/// fall back to.
fn default_entry(root: &Path) -> Result<Option<(String, usize)>> {
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
    // 10_linux lists kernels found there before the ostree entries (unless
    // it does not run: install-os hides it while the old system's kernels
    // are still in /boot).
    let linux_script = std::fs::metadata(root.join("etc/grub.d/10_linux"));
    let lists_kernels =
        linux_script.is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    for dir in [root.to_path_buf(), boot.clone()]
        .into_iter()
        .filter(|_| lists_kernels)
    {
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
    Ok(Some((id, found.len())))
}

/// A grub.cfg whose counter names another deployment than the default.
struct StaleCounter {
    cfg: std::path::PathBuf,
    text: String,
    written: String,
    default: String,
}

/// The current grub.cfg, when its counter (`aot_default`) does not name
/// the current default deployment.
fn stale_counter(root: &Path) -> Result<Option<StaleCounter>> {
    let Ok(loader) = std::fs::canonicalize(root.join("boot/loader")) else {
        return Ok(None);
    };
    let cfg = loader.join("grub.cfg");
    let Ok(text) = std::fs::read_to_string(&cfg) else {
        return Ok(None);
    };
    let Some(written) = text
        .lines()
        .find_map(|l| l.strip_prefix("set aot_default=\""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let Some((default, _)) = default_entry(root)? else {
        return Ok(None);
    };
    Ok((written != default).then_some(StaleCounter {
        cfg,
        text,
        written,
        default,
    }))
}

/// Whether [`refresh_grub_config`] would rewrite grub.cfg (a file read,
/// for the boot's triage).
pub fn grub_config_is_stale(root: &Path) -> Result<bool> {
    Ok(stale_counter(root)?.is_some())
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
    let Some(StaleCounter {
        cfg,
        text,
        written,
        default,
    }) = stale_counter(root)?
    else {
        return Ok(false);
    };
    // The counter's id and the fallback entry's.
    let updated = text.replace(&format!("\"{written}\""), &format!("\"{default}\""));
    crate::fsutil::write_atomic(&cfg, updated.as_bytes())?;
    tracing::info!(
        "{}: boot counting now follows {default}, the default (was {written})",
        cfg.display()
    );
    Ok(true)
}

fn grub_script(id: &str, tries: u32, entries: usize) -> String {
    let mut lookup = String::new();
    for n in 1..=tries {
        let keyword = if n == 1 { "if" } else { "elif" };
        lookup.push_str(&format!(
            "        {keyword} [ \"${LEFT}\" = {n} ]; then set {LEFT}={}\n",
            n - 1
        ));
    }
    // libostree's entries come first (0 the default, 1 the previous one),
    // then 16_apt-ostree's.
    let fallback = entries;
    format!(
        "# apt-ostree: boot counting (docs/updates.md). Each boot of the default
# deployment, until one reaches boot-complete.target, uses a try; with none
# left, boot entry 1 (the previous deployment) and tell apt-ostree. When
# the default's kernel does not start, GRUB runs entry {fallback}, which says so.
set aot_default=\"{id}\"
if [ -s \"$prefix/grubenv\" ]; then
  load_env --file \"$prefix/grubenv\" {GOOD} {COUNTED} {LEFT} {FAILED}
  if [ \"${GOOD}\" != \"$aot_default\" ]; then
    if [ \"${FAILED}\" = \"$aot_default\" ]; then
      set default=1
    else
      if [ \"${COUNTED}\" != \"$aot_default\" ]; then
        set {COUNTED}=\"$aot_default\"
        set {LEFT}={tries}
      fi
      if [ \"${LEFT}\" = 0 ]; then
        set default=1
        set {FAILED}=\"$aot_default\"
        save_env --file \"$prefix/grubenv\" {FAILED}
      else
{lookup}        else set {LEFT}=0
        fi
        save_env --file \"$prefix/grubenv\" {COUNTED} {LEFT}
        set fallback={fallback}
      fi
    fi
  fi
fi
"
    )
}

/// The entry GRUB falls back to from a default whose kernel did not start:
/// it records that, and reads the menu again, which then boots entry 1.
/// (Picked by hand, it rejects the default deployment the same way.)
fn fallback_entry(id: &str) -> String {
    format!(
        "menuentry 'Previous deployment (the default one did not start)' --id apt-ostree-fallback {{
  set {FAILED}=\"{id}\"
  set {REFUSED}=\"{id}\"
  save_env --file \"$prefix/grubenv\" {FAILED} {REFUSED}
  configfile \"$prefix/grub.cfg\"
}}
"
    )
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.0";

    #[test]
    fn the_script_counts_down_by_lookup_and_falls_back_to_entry_one() {
        let s = grub_script(ID, 3, 2);
        assert!(s.contains(&format!("set aot_default=\"{ID}\"")));
        assert!(s.contains("set aot_left=3\n"));
        assert!(s.contains("if [ \"$aot_left\" = 1 ]; then set aot_left=0"));
        assert!(s.contains("set fallback=2\n"));
        assert!(s.contains("elif [ \"$aot_left\" = 3 ]; then set aot_left=2"));
        assert!(s.contains("set default=1"));
    }

    #[test]
    fn grub_parses_the_script() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("14_apt-ostree.cfg");
        for tries in [1, 3] {
            let script = grub_script(ID, tries, 2) + &fallback_entry(ID);
            std::fs::write(&file, script).unwrap();
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

    /// A root with two boot entries, the default leading to deployment ID,
    /// and a kernel of the machine's own in /boot (a converted machine).
    fn converted_root(linux_script_mode: u32) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let entries = root.join("boot/loader.0/entries");
        std::fs::create_dir_all(&entries).unwrap();
        std::os::unix::fs::symlink("loader.0", root.join("boot/loader")).unwrap();
        for (n, target) in [(2, "boot.0/debian/x/0"), (1, "boot.0/debian/x/1")] {
            std::fs::write(
                entries.join(format!("ostree-{n}.conf")),
                format!("version {n}\noptions root=UUID=1 ostree=/ostree/{target}\n"),
            )
            .unwrap();
        }
        let deploy = root.join("ostree/deploy/debian/deploy").join(ID);
        std::fs::create_dir_all(&deploy).unwrap();
        std::fs::create_dir_all(root.join("ostree/boot.0/debian/x")).unwrap();
        std::os::unix::fs::symlink(&deploy, root.join("ostree/boot.0/debian/x/0")).unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.12"), "the old system's kernel").unwrap();
        let script = root.join("etc/grub.d/10_linux");
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(linux_script_mode))
            .unwrap();
        dir
    }

    #[test]
    fn kernels_outside_ostree_stop_the_counting_only_where_10_linux_lists_them() {
        let listed = converted_root(0o755);
        let out = grub_config(listed.path(), 3);
        assert!(out.contains("kernels outside ostree"), "{out}");
        // install-os turns 10_linux off: the old kernels are listed by nothing.
        let off = converted_root(0o644);
        let out = grub_config(off.path(), 3);
        assert!(out.contains(&format!("set aot_default=\"{ID}\"")), "{out}");
    }

    #[test]
    fn nonsense_boot_entries_give_a_comment_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let out = grub_config(dir.path(), 3);
        assert!(out.starts_with("# apt-ostree: no boot counting:"), "{out}");
        assert_eq!(out.lines().count(), 1);
    }
}
