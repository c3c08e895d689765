//! The layout of a deployable tree, and turning what lies outside it into
//! something that survives a commit. Used by compose (a whole root file
//! system), by image pulls (an image's stacked layers) and by layering
//! (what dpkg left in the scratch /var).
//!
//! A deployable tree keeps /etc as `usr/etc`, dpkg's database in
//! `usr/share/dpkg/database`, the kernel in `usr/lib/modules/KVER/`, and
//! nothing in /var:
//!
//! - `/var` is state, never part of a commit: what packages ship there is
//!   kept under `/usr/share/factory/var` and recreated at boot by
//!   systemd-tmpfiles (`d` for directories, `L` for symlinks, `C` to copy files).
//! - System users that maintainer scripts create land in the commit's
//!   `/usr/etc/passwd`, but the /etc three-way merge keeps a locally edited
//!   `/etc/passwd` as it is. So every new user and group is also written as a
//!   systemd-sysusers entry, which creates them at boot where they are missing,
//!   with the same ids.
//!
//! Every tree here may come from an image or a package: it is only ever
//! touched through [`crate::fsutil::Beneath`], so that a link it holds
//! never leads the daemon outside it.
//!
//! [`convert`]: a root file system into a deployable tree. [`var`]: /var
//! content into tmpfiles.d lines and factory copies, /opt trees into /usr.

mod convert;
mod var;

use std::collections::BTreeSet;
use std::fmt::Write as _;

pub use convert::{convert_main, make_deployable, make_deployable_confined, Conversion};
pub use var::{link_base_opt, opt_into_usr, var_to_tmpfiles, OPT_IN_USR};

/// Paths under /var that are the package manager's own scratch state, not content.
const VAR_SCRATCH: &[&str] = &[
    "cache/ldconfig",
    "lib/dpkg",
    "cache/debconf",
    "cache/apt",
    "lib/apt",
    "log",
    "tmp",
    "backups",
];

/// True for a path under /var (relative to it) that is package-manager scratch.
pub fn is_var_scratch(rel: &str) -> bool {
    VAR_SCRATCH
        .iter()
        .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
}

pub const LAYERED_TMPFILES: &str = "usr/lib/tmpfiles.d/apt-ostree-layered.conf";
pub const LAYERED_SYSUSERS: &str = "usr/lib/sysusers.d/apt-ostree-layered.conf";
pub const COMPOSED_TMPFILES: &str = "usr/lib/tmpfiles.d/apt-ostree-compose.conf";
pub const FACTORY: &str = "usr/share/factory/var";

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
}
