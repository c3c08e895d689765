//! What holds a root file system, from lsblk: the device types from it
//! down to the disks, and the kernel arguments an initramfs needs to find
//! and open it (`root=`, `rd.luks.uuid=` with `cryptopts=`, `rd.lvm.lv=`,
//! `rd.md.uuid=`).
//! A pure function of lsblk's JSON, so that each layout has a test without
//! its devices.

use std::process::Command;

use anyhow::{Context, Result};
use serde::Deserialize;

/// One device of `lsblk --inverse --json`: its children are what holds it.
#[derive(Debug, Deserialize)]
struct Node {
    name: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    fstype: Option<String>,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    children: Vec<Node>,
}

#[derive(Debug, Deserialize)]
struct Tree {
    blockdevices: Vec<Node>,
}

/// The devices under a file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The device types from the file system's device down to a disk,
    /// along the first of each device's holders (`lvm`, `crypt`, `part`, `disk`).
    pub stack: Vec<String>,
    /// What the initramfs must open before the root can be mounted, in
    /// the order it opens them: `rd.md.uuid=`, `rd.luks.uuid=` and
    /// `cryptopts=`, `rd.lvm.lv=`.
    pub open_kargs: Vec<String>,
    /// The disks (e.g. `/dev/vdb`) at the bottom of it.
    pub disks: Vec<String>,
}

/// What lsblk reported that cannot go on a kernel command line: a value
/// read off a disk header is the disk's, not ours, and one with a comma,
/// a space or an `=` would add options (`cryptopts=`, `rootflags=`) or
/// arguments the administrator never asked for.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "{device}: its UUID {uuid:?} is not hex digits, dashes and colons; \
         refusing to put it on the kernel command line"
    )]
    UnsafeUuid { device: String, uuid: String },
    #[error(
        "the btrfs subvolume {0:?} has a comma, a space or a quote, which \
         rootflags= cannot carry; mount the root from a subvolume without them"
    )]
    UnsafeSubvolume(String),
}

/// `uuid`, when it is a UUID as file systems, LUKS and md write them.
fn checked_uuid<'a>(device: &str, uuid: &'a str) -> Result<&'a str, LayoutError> {
    let well_formed = !uuid.is_empty()
        && uuid.len() <= 64
        && uuid
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-' || c == ':');
    if well_formed {
        Ok(uuid)
    } else {
        Err(LayoutError::UnsafeUuid {
            device: device.to_string(),
            uuid: uuid.to_string(),
        })
    }
}

/// The `--output` lsblk is asked for.
const COLUMNS: &str = "NAME,PATH,TYPE,FSTYPE,UUID";

impl Layout {
    /// The layout under `device` (a file system's source).
    pub fn of_device(device: &str) -> Result<Layout> {
        let json = crate::process::run(
            Command::new("lsblk")
                .args(["--inverse", "--json", "--output", COLUMNS])
                .arg(device),
        )?;
        let mut tree: Tree = serde_json::from_str(&json).context("Reading lsblk's output")?;
        // lsblk reads types and UUIDs from udev's database; where there is
        // none (a container, a rescue shell), blkid reads them off the devices.
        fn fill(node: &mut Node) {
            if let (None, Some(path)) = (&node.fstype, &node.path) {
                let mut found = crate::bootchain::esp::blkid(path);
                node.fstype = found.remove("TYPE");
                node.uuid = node.uuid.take().or_else(|| found.remove("UUID"));
            }
            node.children.iter_mut().for_each(fill);
        }
        tree.blockdevices.iter_mut().for_each(fill);
        Layout::from_tree(tree)
    }

    /// From `lsblk --inverse --json --output NAME,PATH,TYPE,FSTYPE,UUID DEVICE`.
    pub fn parse(lsblk_json: &str) -> Result<Layout> {
        Layout::from_tree(serde_json::from_str(lsblk_json).context("Reading lsblk's output")?)
    }

    fn from_tree(tree: Tree) -> Result<Layout> {
        let top = tree
            .blockdevices
            .into_iter()
            .next()
            .context("lsblk listed no device")?;
        let mut stack = Vec::new();
        let mut node = Some(&top);
        while let Some(n) = node {
            stack.push(n.kind.clone());
            node = n.children.first();
        }
        let mut layout = Layout {
            stack,
            open_kargs: Vec::new(),
            disks: Vec::new(),
        };
        let mut opened = Vec::new();
        layout.walk(&top, &mut opened)?;
        // The initramfs assembles arrays, then opens LUKS, then activates
        // volumes: the walk met them top down.
        layout.open_kargs = opened.into_iter().rev().flatten().collect();
        Ok(layout)
    }

    /// Collect into `opened` what opens each device under `node` (one
    /// group of arguments per device, top down), and the disks.
    fn walk(&mut self, node: &Node, opened: &mut Vec<Vec<String>>) -> Result<(), LayoutError> {
        // The UUID of the holder of type `fstype` (the LUKS header, the
        // array member), checked.
        let holder_uuid = |fstype: &str| {
            node.children
                .iter()
                .find(|c| c.fstype.as_deref() == Some(fstype))
                .and_then(|c| c.uuid.as_deref().map(|uuid| checked_uuid(&c.name, uuid)))
                .transpose()
        };
        let kargs = match node.kind.as_str() {
            "lvm" => lvm_names(&node.name)
                .map(|(vg, lv)| vec![format!("rd.lvm.lv={vg}/{lv}")])
                .unwrap_or_default(),
            // A dracut initramfs reads rd.luks.uuid=, an initramfs-tools
            // one cryptopts= (cryptsetup-initramfs, when the initramfs has
            // no crypttab); both name the mapping as systemd does.
            "crypt" => holder_uuid("crypto_LUKS")?
                .map(|uuid| {
                    vec![
                        format!("rd.luks.uuid={uuid}"),
                        format!("cryptopts=target=luks-{uuid},source=UUID={uuid},luks"),
                    ]
                })
                .unwrap_or_default(),
            kind if kind.starts_with("raid") => holder_uuid("linux_raid_member")?
                .map(|uuid| vec![format!("rd.md.uuid={uuid}")])
                .unwrap_or_default(),
            // A loop device with partitions is a disk as well.
            "disk" | "loop" => {
                let disk = format!("/dev/{}", node.name);
                if !self.disks.contains(&disk) {
                    self.disks.push(disk);
                }
                Vec::new()
            }
            _ => Vec::new(),
        };
        if !kargs.is_empty() && !opened.contains(&kargs) {
            opened.push(kargs);
        }
        for child in &node.children {
            self.walk(child, opened)?;
        }
        Ok(())
    }

    /// Whether a LUKS device is under it (GRUB cannot read through one).
    pub fn encrypted(&self) -> bool {
        self.stack.iter().any(|t| t == "crypt")
    }
}

/// A file system on a partition of a disk, or on the whole disk: nothing
/// that GRUB or an initramfs must open first.
pub fn plain(stack: &[String]) -> bool {
    stack
        .iter()
        .all(|t| matches!(t.as_str(), "part" | "disk" | "loop"))
}

/// The volume group and logical volume of a device-mapper name as LVM
/// makes it: `VG-LV`, with each `-` of either name doubled.
fn lvm_names(dm_name: &str) -> Option<(String, String)> {
    let bytes = dm_name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'-' {
            if bytes.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            let (vg, lv) = (&dm_name[..i], &dm_name[i + 1..]);
            if vg.is_empty() || lv.is_empty() {
                return None;
            }
            return Some((vg.replace("--", "-"), lv.replace("--", "-")));
        }
        i += 1;
    }
    None
}

/// The kernel arguments that find and mount the file system `uuid` on
/// `layout`: what opens its devices, then `root=UUID=`, and `rootflags=`
/// for a btrfs subvolume other than the top one (`subvol` as mounted).
pub fn root_kargs(
    layout: &Layout,
    uuid: &str,
    btrfs_subvol: Option<&str>,
) -> Result<Vec<String>, LayoutError> {
    let mut kargs = layout.open_kargs.clone();
    kargs.push(format!("root=UUID={}", checked_uuid("the root", uuid)?));
    if let Some(subvol) = btrfs_subvol.map(|s| s.trim_start_matches('/')) {
        if subvol.contains(|c: char| c == ',' || c == '"' || c.is_whitespace() || c.is_control()) {
            return Err(LayoutError::UnsafeSubvolume(subvol.to_string()));
        }
        if !subvol.is_empty() {
            kargs.push(format!("rootflags=subvol={subvol}"));
        }
    }
    Ok(kargs)
}

#[cfg(test)]
mod tests;
