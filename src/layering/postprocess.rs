//! Turning what dpkg left outside the commit into something that survives it.
//!
//! - `/var` is state, never part of a commit: what packages ship there is
//!   kept under `/usr/share/factory/var` and recreated at boot by
//!   systemd-tmpfiles (`d` for directories, `L` for symlinks, `C` to copy files).
//! - System users that maintainer scripts create land in the commit's
//!   `/usr/etc/passwd`, but the /etc three-way merge keeps a locally edited
//!   `/etc/passwd` as it is. So every new user and group is also written as a
//!   systemd-sysusers entry, which creates them at boot where they are missing,
//!   with the same ids.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Paths under /var that are the package manager's own scratch state, not content.
const VAR_SCRATCH: &[&str] = &[
    "lib/dpkg",
    "cache/debconf",
    "cache/apt",
    "lib/apt",
    "log",
    "tmp",
    "backups",
];

pub const TMPFILES: &str = "usr/lib/tmpfiles.d/apt-ostree-layered.conf";
pub const SYSUSERS: &str = "usr/lib/sysusers.d/apt-ostree-layered.conf";
pub const FACTORY: &str = "usr/share/factory/var";

fn owner(uid: u32, gid: u32, passwd: &str, group: &str) -> (String, String) {
    let name = |text: &str, id: u32| {
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == id.to_string()).then(|| f[0].to_string())
            })
            .next()
            .unwrap_or_else(|| id.to_string())
    };
    (name(passwd, uid), name(group, gid))
}

/// Write tmpfiles.d lines (and factory copies of files) for everything
/// packages put under the scratch `/var`; returns the tmpfiles.d text.
pub fn var_to_tmpfiles(var: &Path, root: &Path) -> Result<String> {
    let passwd = std::fs::read_to_string(root.join("usr/etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(root.join("usr/etc/group")).unwrap_or_default();
    let mut lines = String::new();
    let mut stack = vec![var.to_path_buf()];
    let mut entries = Vec::new();
    while let Some(dir) = stack.pop() {
        let mut children: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("Reading {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        children.sort_by_key(|e| e.file_name());
        for entry in children {
            let path = entry.path();
            let rel = path
                .strip_prefix(var)
                .expect("under var")
                .to_string_lossy()
                .to_string();
            if VAR_SCRATCH
                .iter()
                .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
            {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path)?;
            entries.push((rel.clone(), path.clone(), meta.clone()));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, path, meta) in entries {
        let (user, grp) = owner(meta.uid(), meta.gid(), &passwd, &group);
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            writeln!(lines, "d /var/{rel} {mode:04o} {user} {grp} - -")?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            writeln!(lines, "L /var/{rel} - - - - {}", target.display())?;
        } else if meta.is_file() {
            let factory = root.join(FACTORY).join(&rel);
            if let Some(parent) = factory.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&path, &factory).with_context(|| format!("Keeping /var/{rel}"))?;
            writeln!(
                lines,
                "C /var/{rel} {mode:04o} {user} {grp} - /{FACTORY}/{rel}"
            )?;
        }
    }
    Ok(lines)
}

fn entries(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// sysusers.d lines for the users and groups in `after` but not in `before`
/// (passwd and group file texts).
pub fn new_sysusers(
    passwd_before: &str,
    passwd_after: &str,
    group_before: &str,
    group_after: &str,
) -> String {
    let mut out = String::new();
    let known_groups: BTreeSet<String> = entries(group_before)
        .iter()
        .filter_map(|l| l.split(':').next().map(str::to_string))
        .collect();
    let known_users: BTreeSet<String> = entries(passwd_before)
        .iter()
        .filter_map(|l| l.split(':').next().map(str::to_string))
        .collect();
    let mut user_primary_groups = BTreeSet::new();
    for line in entries(passwd_after) {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || known_users.contains(f[0]) {
            continue;
        }
        let gecos = if f[4].is_empty() {
            "-".to_string()
        } else {
            format!("\"{}\"", f[4].replace('"', ""))
        };
        let home = if f[5].is_empty() { "-" } else { f[5] };
        let _ = writeln!(out, "u {} {}:{} {gecos} {home} {}", f[0], f[2], f[3], f[6]);
        user_primary_groups.insert(f[3].to_string());
    }
    for line in entries(group_after) {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || known_groups.contains(f[0]) {
            continue;
        }
        // A user's own group is created by its `u` line with the same id.
        if user_primary_groups.contains(f[2])
            && entries(passwd_after)
                .iter()
                .any(|l| l.starts_with(&format!("{}:", f[0])))
        {
            continue;
        }
        let _ = writeln!(out, "g {} {}", f[0], f[2]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_users_and_groups_become_sysusers_lines() {
        let before_p = "root:x:0:0:root:/root:/bin/bash\n";
        let after_p = "root:x:0:0:root:/root:/bin/bash\ndemo-svc:x:998:997:Demo service:/var/lib/demo:/usr/sbin/nologin\n";
        let before_g = "root:x:0:\n";
        let after_g = "root:x:0:\ndemo-svc:x:997:\ndemo-extra:x:996:\n";
        let out = new_sysusers(before_p, after_p, before_g, after_g);
        assert_eq!(
            out,
            "u demo-svc 998:997 \"Demo service\" /var/lib/demo /usr/sbin/nologin\ng demo-extra 996\n"
        );
        assert_eq!(new_sysusers(before_p, before_p, before_g, before_g), "");
    }

    #[test]
    fn var_content_becomes_tmpfiles_and_factory_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (var, root) = (dir.path().join("var"), dir.path().join("root"));
        std::fs::create_dir_all(var.join("lib/demo")).unwrap();
        std::fs::create_dir_all(var.join("lib/dpkg")).unwrap();
        std::fs::create_dir_all(var.join("cache/debconf")).unwrap();
        std::fs::write(var.join("lib/demo/state.txt"), "initial\n").unwrap();
        std::os::unix::fs::symlink("state.txt", var.join("lib/demo/current")).unwrap();
        std::fs::create_dir_all(root.join("usr/etc")).unwrap();
        std::fs::write(root.join("usr/etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(root.join("usr/etc/group"), "root:x:0:\n").unwrap();
        std::fs::set_permissions(var.join("lib/demo"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        let text = var_to_tmpfiles(&var, &root).unwrap();
        assert!(text.contains("d /var/lib 0755 root root - -\n"), "{text}");
        assert!(
            text.contains("d /var/lib/demo 0750 root root - -\n"),
            "{text}"
        );
        assert!(
            text.contains("L /var/lib/demo/current - - - - state.txt\n"),
            "{text}"
        );
        assert!(text.contains("C /var/lib/demo/state.txt 0644 root root - /usr/share/factory/var/lib/demo/state.txt\n"), "{text}");
        assert!(
            !text.contains("dpkg") && !text.contains("debconf"),
            "{text}"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("usr/share/factory/var/lib/demo/state.txt")).unwrap(),
            "initial\n"
        );
    }
}
