//! What makes a machine its own, carried from its old /etc into the new
//! deployment's /etc by `install-os to-existing-root` (issue 31): accounts
//! merged with the image's, and the administrator's files copied over the
//! image's. Everything else of the old /etc stays readable under /sysroot.
//!
//! The new /etc came from an image, so it is written only through
//! [`Beneath`]: a link in it cannot lead a write onto the running machine.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Result};

use super::accounts;
use crate::fsutil::{Beneath, Kind, Meta};

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
    carry_accounts(&old, &new, &mut carried)?;
    for file in FILES {
        if old.meta(file)?.is_some() {
            copy_entry(&old, &new, file)?;
            carried.paths.push(file.to_string());
        }
    }
    for (name, meta) in old.entries("ssh")? {
        if name.starts_with("ssh_host_") && meta.kind == Kind::File {
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

/// The account tables merged (crate::install::accounts), and the new
/// /etc's files owned by an image id that changed given the new one.
fn carry_accounts(old: &Beneath, new: &Beneath, carried: &mut Carried) -> Result<()> {
    let text = |tree: &Beneath, table: &str| -> Result<String> {
        Ok(String::from_utf8_lossy(&tree.read(table)?.unwrap_or_default()).into_owned())
    };
    if old.read("passwd")?.is_none() || old.read("group")?.is_none() {
        bail!("this machine has no /etc/passwd or /etc/group");
    }
    let (image_group, image_passwd) = (text(new, "group")?, text(new, "passwd")?);
    let groups = accounts::merge(&text(old, "group")?, &image_group, Some(2), &|_| None);
    let image_group_names = accounts::name_by_gid(&image_group);
    let merged_gids = accounts::gid_by_name(&groups.text);
    let users = accounts::merge(&text(old, "passwd")?, &image_passwd, Some(2), &|e| {
        let gid = e.get(3)?.parse().ok()?;
        let name = image_group_names.get(&gid)?;
        merged_gids.get(name).map(|g| (3, *g))
    });
    let shadow = accounts::merge(&text(old, "shadow")?, &text(new, "shadow")?, None, &|_| {
        None
    });
    let gshadow = accounts::merge(
        &text(old, "gshadow")?,
        &text(new, "gshadow")?,
        None,
        &|_| None,
    );
    for (table, merged) in [
        ("passwd", &users),
        ("group", &groups),
        ("shadow", &shadow),
        ("gshadow", &gshadow),
    ] {
        // Mode and owner stay the image's (shadow: 0640 root:shadow).
        let Some(meta) = new.meta(table)?.or(old.meta(table)?) else {
            continue;
        };
        new.write_from(table, &mut merged.text.as_bytes(), &meta)?;
        carried.paths.push(table.to_string());
        carried.warnings.extend(merged.notes.iter().cloned());
    }
    let uids = accounts::id_changes(&image_passwd, &users.text);
    let gids = accounts::id_changes(&image_group, &groups.text);
    if uids.is_empty() && gids.is_empty() {
        return Ok(());
    }
    for (rel, meta) in new.walk("")? {
        let uid = uids.get(&meta.uid).copied().unwrap_or(meta.uid);
        let gid = gids.get(&meta.gid).copied().unwrap_or(meta.gid);
        if (uid, gid) == (meta.uid, meta.gid) {
            continue;
        }
        match meta.kind {
            Kind::Directory => new.set_dir_owner(&rel, uid, gid)?,
            // Written anew: a file of a checkout may share its inode.
            Kind::File => {
                let bytes = new.read(&rel)?.unwrap_or_default();
                new.write_from(&rel, &mut bytes.as_slice(), &Meta { uid, gid, ..meta })?;
            }
            Kind::Symlink | Kind::Special => {}
        }
    }
    Ok(())
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
