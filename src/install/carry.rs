//! What makes a machine its own, carried from its old /etc into the new
//! deployment's /etc by `install-os to-existing-root` (issue 31): accounts
//! merged with the image's, and the administrator's files copied over the
//! image's. Everything else of the old /etc stays readable under /sysroot.
//!
//! The new /etc came from an image, so it is written only through
//! [`Beneath`]: a link in it cannot lead a write onto the running machine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};

use crate::fsutil::Beneath;

/// Files of the old /etc that win over the image's, where they exist.
const FILES: &[&str] = &[
    "hostname",
    "hosts",
    "machine-id",
    "timezone",
    "localtime",
    "default/locale",
    "default/keyboard",
    "network/interfaces",
];

/// Directories whose entries win over the image's (the whole entry: a file,
/// or a directory with its content). `ssh` is taken for its host keys and
/// drop-ins only.
const DIRECTORIES: &[&str] = &[
    "network/interfaces.d",
    "systemd/network",
    "NetworkManager/system-connections",
    "netplan",
    "ssh/sshd_config.d",
    "sudoers.d",
    "apt/keyrings",
];

/// Directories whose entries are carried only where the image has none of
/// that name: the apt sources the administrator added, and their keys (the
/// image's own sources name its own release).
const ADDED_ONLY: &[&str] = &["apt/sources.list.d", "apt/trusted.gpg.d"];

/// The account databases, merged by name (`name:...` lines).
const ACCOUNTS: &[&str] = &["passwd", "group", "shadow", "gshadow"];

/// What was carried, for the report: paths relative to /etc, and warnings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Carried {
    pub paths: Vec<String>,
    pub warnings: Vec<String>,
}

/// Carry the machine's own files from `old_etc` into `new_etc`.
pub fn carry(old_etc: &Path, new_etc: &Path) -> Result<Carried> {
    let old = Beneath::open(old_etc)?;
    let new = Beneath::open(new_etc)?;
    let mut carried = Carried::default();
    for table in ACCOUNTS {
        let Some(mine) = old.read(table)? else {
            continue;
        };
        let image = new.read(table)?.unwrap_or_default();
        let merged = merge_table(
            &String::from_utf8_lossy(&mine),
            &String::from_utf8_lossy(&image),
        );
        carried.warnings.extend(merged.warnings);
        // Mode and owner stay the image's (shadow: 0640 root:shadow).
        let meta = new
            .meta(table)?
            .or(old.meta(table)?)
            .context("an account database vanished")?;
        new.write_from(table, &mut merged.text.as_bytes(), &meta)?;
        carried.paths.push(table.to_string());
    }
    for file in FILES {
        if old.meta(file)?.is_some() {
            copy_entry(&old, &new, file)?;
            carried.paths.push(file.to_string());
        }
    }
    for (name, meta) in old.entries("ssh")? {
        if name.starts_with("ssh_host_") && meta.kind == crate::fsutil::Kind::File {
            let rel = format!("ssh/{name}");
            copy_entry(&old, &new, &rel)?;
            carried.paths.push(rel);
        }
    }
    for dir in DIRECTORIES.iter().chain(ADDED_ONLY) {
        if !old.is_dir(dir)? {
            continue;
        }
        let added_only = ADDED_ONLY.contains(dir);
        for (name, _) in old.entries(dir)? {
            let rel = format!("{dir}/{name}");
            if added_only && new.meta(&rel)?.is_some() {
                continue;
            }
            copy_entry(&old, &new, &rel)?;
            carried.paths.push(rel);
        }
    }
    if let Some(fstab) = old.read("fstab")? {
        let image = new.read("fstab")?.unwrap_or_default();
        let merged = merge_fstab(
            &String::from_utf8_lossy(&fstab),
            &String::from_utf8_lossy(&image),
        );
        new.write("fstab", merged.as_bytes(), 0o644)?;
        carried.paths.push("fstab".to_string());
    }
    Ok(carried)
}

/// `rel` from `old` over whatever the image has there.
fn copy_entry(old: &Beneath, new: &Beneath, rel: &str) -> Result<()> {
    if let Some((parent, _)) = rel.rsplit_once('/') {
        new.create_dir_all(parent)?;
    }
    if new.meta(rel)?.is_some() {
        new.remove_all(rel)?;
    }
    old.copy_to(rel, new, rel)
}

/// An account table merged.
#[derive(Debug, PartialEq, Eq)]
pub struct Merged {
    pub text: String,
    pub warnings: Vec<String>,
}

/// The machine's entries of an account table (`name:...` lines), in its
/// order and with its ids, which its files are owned by; then the image's
/// entries for names the machine lacks. For passwd and group, an image
/// entry whose id the machine gives to another name is a warning: files of
/// one may be readable by the other.
pub fn merge_table(mine: &str, image: &str) -> Merged {
    let entries = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let name = |line: &str| line.split(':').next().unwrap_or_default().to_string();
    let id = |line: &str| line.split(':').nth(2).map(str::to_string);
    let mine = entries(mine);
    let names: BTreeSet<String> = mine.iter().map(|l| name(l)).collect();
    let ids: BTreeMap<String, String> = mine
        .iter()
        .filter_map(|l| id(l).map(|i| (i, name(l))))
        .collect();
    let mut text = String::new();
    let mut warnings = Vec::new();
    for line in &mine {
        text.push_str(line);
        text.push('\n');
    }
    for line in entries(image) {
        let n = name(&line);
        if names.contains(&n) {
            continue;
        }
        // Only passwd and group carry a numeric id in their third field.
        if let Some(other) = id(&line)
            .filter(|i| i.parse::<u32>().is_ok())
            .and_then(|i| ids.get(&i))
        {
            warnings.push(format!(
                "the image's {n} has the id of this machine's {other}"
            ));
        }
        text.push_str(&line);
        text.push('\n');
    }
    Merged { text, warnings }
}

/// The image's fstab, then the machine's mounts other than the root (the
/// deployment's root is set up by the initramfs) and /boot where the image
/// mounts it too.
pub fn merge_fstab(mine: &str, image: &str) -> String {
    let mount_point = |line: &str| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            None
        } else {
            line.split_whitespace().nth(1).map(str::to_string)
        }
    };
    let taken: BTreeSet<String> = image.lines().filter_map(mount_point).collect();
    let mut text = image.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# Carried over from the machine by apt-ostree install-os.\n");
    for line in mine.lines() {
        match mount_point(line) {
            Some(m) if m == "/" || taken.contains(&m) => {}
            Some(_) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    text
}

#[cfg(test)]
mod tests;
