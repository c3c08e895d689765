//! The layout of a deployable tree, and turning what lies outside it into
//! something that survives a commit. Used by compose (a whole root file
//! system) and by layering (what dpkg left in the scratch /var).
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

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

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

/// Escape for a tmpfiles.d field: `%` starts a specifier, and backslashes,
/// quotes and control characters are C-style escapes (tmpfiles.d(5)).
fn tmpfiles_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '%' => out.push_str("%%"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A path as the first field of a tmpfiles.d line: quoted when it holds
/// anything that would split or end the field.
fn tmpfiles_path(path: &str) -> String {
    let escaped = tmpfiles_escape(path);
    if path.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\' || c.is_control()) {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
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
            if is_var_scratch(&rel) {
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
        let var_path = tmpfiles_path(&format!("/var/{rel}"));
        if meta.is_dir() {
            writeln!(lines, "d {var_path} {mode:04o} {user} {grp} - -")?;
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            let target = tmpfiles_escape(&target.to_string_lossy());
            writeln!(lines, "L {var_path} - - - - {target}")?;
        } else if meta.is_file() {
            let rel_path = Path::new(&rel);
            let parent = crate::fsutil::dir_beneath(
                root,
                &Path::new(FACTORY).join(rel_path.parent().unwrap_or(Path::new(""))),
            )?;
            let factory = parent.join(rel_path.file_name().expect("a file has a name"));
            // Replace, never write into, an existing file: in a layering
            // checkout it may be a hard link to a repository object. The
            // temporary name is made new (O_EXCL), so a link planted there
            // is never followed either.
            let tmp = factory.with_extension("apt-ostree-tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .with_context(|| format!("Keeping /var/{rel}"))?;
            std::io::copy(&mut std::fs::File::open(&path)?, &mut out)
                .with_context(|| format!("Keeping /var/{rel}"))?;
            drop(out);
            std::fs::rename(&tmp, &factory).with_context(|| format!("Keeping /var/{rel}"))?;
            let source = tmpfiles_escape(&format!("/{FACTORY}/{rel}"));
            writeln!(lines, "C {var_path} {mode:04o} {user} {grp} - {source}")?;
        }
    }
    Ok(lines)
}

/// Where packages' /opt trees live in a deployment: read-only, in /usr,
/// and replaced with every build, as rpm-ostree keeps them.
pub const OPT_IN_USR: &str = "usr/lib/opt";

/// Move what packages installed under /opt (which is /var/opt in a
/// deployment) into /usr/lib/opt, and return the tmpfiles.d lines that
/// link /var/opt/NAME to it at boot. /var/opt itself stays the user's: a
/// name that already exists there as something else is left alone (`L`,
/// not `L+`), so nothing of the user's is ever replaced.
pub fn opt_into_usr(var: &Path, root: &Path) -> Result<String> {
    let opt = var.join("opt");
    // Only a real directory: a link would move what it points to.
    if !std::fs::symlink_metadata(&opt).is_ok_and(|m| m.is_dir()) {
        return Ok(String::new());
    }
    let entries = std::fs::read_dir(&opt).with_context(|| format!("Reading {}", opt.display()))?;
    let mut names: Vec<std::ffi::OsString> = entries
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("Reading {}", opt.display()))?;
    names.sort();
    let mut lines = String::new();
    for name in names {
        let from = opt.join(&name);
        let to = crate::fsutil::dir_beneath(root, Path::new(OPT_IN_USR))?.join(&name);
        if std::fs::read_link(&from).is_ok_and(|t| t == opt_link_target(&name)) {
            // The base's own link (see link_base_opt): its tree is in /usr already.
            std::fs::remove_file(&from)?;
            continue;
        }
        if std::fs::symlink_metadata(&to).is_ok() {
            anyhow::bail!(
                "/opt/{} is both in the image and in a package",
                name.to_string_lossy()
            );
        }
        move_across(&from, &to)?;
        let target = tmpfiles_escape(&opt_link_target(&name).to_string_lossy());
        let link = tmpfiles_path(&format!("/var/opt/{}", name.to_string_lossy()));
        writeln!(lines, "L {link} - - - - {target}")?;
    }
    Ok(lines)
}

/// Where /var/opt/NAME points for a package's /opt tree.
fn opt_link_target(name: &std::ffi::OsStr) -> std::path::PathBuf {
    Path::new("../..").join(OPT_IN_USR).join(name)
}

/// Give a scratch /var the links a booted base has in /var/opt, so that
/// dpkg and maintainer scripts see the base's /opt trees (and a package
/// replacing one writes into its tree in /usr).
pub fn link_base_opt(root: &Path, var: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(root.join(OPT_IN_USR)) else {
        return Ok(());
    };
    std::fs::create_dir_all(var.join("opt"))?;
    for entry in entries {
        let name = entry?.file_name();
        std::os::unix::fs::symlink(opt_link_target(&name), var.join("opt").join(&name))?;
    }
    Ok(())
}

/// Move `from` to `to`, copying (with every attribute) where they are on
/// different file systems.
fn move_across(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
            crate::process::run(
                std::process::Command::new("cp")
                    .args(["-a", "--no-target-directory"])
                    .arg(from)
                    .arg(to),
            )
            .with_context(|| format!("Copying {} to {}", from.display(), to.display()))?;
            let removed = if std::fs::symlink_metadata(from)?.is_dir() {
                std::fs::remove_dir_all(from)
            } else {
                std::fs::remove_file(from)
            };
            removed.with_context(|| format!("Removing {}", from.display()))
        }
        moved => moved.with_context(|| format!("Moving {} to {}", from.display(), to.display())),
    }
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
    fn a_debian_root_becomes_a_deployable_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "etc/apt",
            "var/lib/dpkg/info",
            "var/lib/demo",
            "var/log",
            "boot/grub",
            "home/user",
            "root",
            "opt/x",
            "usr/bin",
            "usr/local/bin",
            "dev",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/hostname"), "debian\n").unwrap();
        std::fs::write(root.join("var/lib/dpkg/status"), "Package: x\n").unwrap();
        std::fs::write(root.join("var/lib/demo/state"), "s\n").unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.1.0-9-amd64"), "kernel").unwrap();
        std::fs::write(root.join("boot/initrd.img-6.1.0-9-amd64"), "initrd").unwrap();
        std::os::unix::fs::symlink("boot/vmlinuz-6.1.0-9-amd64", root.join("vmlinuz")).unwrap();
        std::fs::write(root.join("home/user/.profile"), "p").unwrap();
        nix::unistd::mkfifo(
            &root.join("dev/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();

        let c = make_deployable(root, false).unwrap();
        assert_eq!(c.kernels, ["6.1.0-9-amd64"]);
        assert_eq!(c.special_files_removed, 1);
        assert_eq!(
            std::fs::read_to_string(root.join("usr/etc/hostname")).unwrap(),
            "debian\n"
        );
        assert!(!root.join("etc").exists());
        assert!(root.join("usr/share/dpkg/database/status").is_file());
        assert_eq!(
            std::fs::read(root.join("usr/lib/modules/6.1.0-9-amd64/vmlinuz")).unwrap(),
            b"kernel"
        );
        assert_eq!(
            std::fs::read(root.join("usr/lib/modules/6.1.0-9-amd64/initramfs.img")).unwrap(),
            b"initrd"
        );
        assert!(std::fs::read_dir(root.join("boot"))
            .unwrap()
            .next()
            .is_none());
        assert!(std::fs::symlink_metadata(root.join("vmlinuz")).is_err());
        assert_eq!(
            std::fs::read_link(root.join("home")).unwrap(),
            Path::new("var/home")
        );
        assert_eq!(
            std::fs::read_link(root.join("root")).unwrap(),
            Path::new("var/roothome")
        );
        assert_eq!(
            std::fs::read_link(root.join("usr/local")).unwrap(),
            Path::new("../var/usrlocal")
        );
        assert_eq!(
            std::fs::read_link(root.join("ostree")).unwrap(),
            Path::new("sysroot/ostree")
        );
        assert!(
            std::fs::read_dir(root.join("var"))
                .unwrap()
                .next()
                .is_none(),
            "/var must be empty"
        );
        let tmpfiles = std::fs::read_to_string(root.join(COMPOSED_TMPFILES)).unwrap();
        assert!(
            tmpfiles.contains("L /var/lib/dpkg - - - - ../../usr/share/dpkg/database"),
            "{tmpfiles}"
        );
        assert!(tmpfiles.contains("C /var/lib/demo/state"), "{tmpfiles}");
        assert!(tmpfiles.contains("C /var/home/user/.profile"), "{tmpfiles}");
        assert!(!tmpfiles.contains("/var/log"), "{tmpfiles}");
        // A package's /opt tree is kept in /usr and linked from /var/opt.
        assert!(root.join("usr/lib/opt/x").is_dir());
        assert!(
            tmpfiles.contains("L /var/opt/x - - - - ../../usr/lib/opt/x"),
            "{tmpfiles}"
        );
        assert!(tmpfiles.contains("d /var/opt "), "{tmpfiles}");
    }

    /// An image built FROM an encapsulated base has the packages' /opt
    /// trees where dpkg put them (encapsulation maps usr/lib/opt back), so
    /// a RUN that upgrades one writes there, and deploying takes the new one.
    #[test]
    fn an_image_built_on_a_converted_base_takes_its_new_opt_trees() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "etc",
            "var/lib/dpkg",
            "opt/x/bin",
            "opt/my app",
            "usr/lib/tmpfiles.d",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("var/lib/dpkg/status"), "Package: x\n").unwrap();
        std::fs::write(root.join("opt/x/bin/tool"), "version 2").unwrap();
        std::fs::write(
            root.join(COMPOSED_TMPFILES),
            "L /var/opt/x - - - - ../../usr/lib/opt/x\n",
        )
        .unwrap();
        make_deployable(root, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("usr/lib/opt/x/bin/tool")).unwrap(),
            "version 2"
        );
        let tmpfiles = std::fs::read_to_string(root.join(COMPOSED_TMPFILES)).unwrap();
        assert_eq!(tmpfiles.matches("L /var/opt/x ").count(), 1, "{tmpfiles}");
        assert!(
            tmpfiles.contains("L \"/var/opt/my app\" - - - - ../../usr/lib/opt/my app\n"),
            "{tmpfiles}"
        );
    }

    #[test]
    fn a_link_planted_in_the_tree_is_never_followed_when_writing() {
        let tree = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let (root, var) = (tree.path().join("root"), tree.path().join("var"));
        std::fs::create_dir_all(root.join("usr/share")).unwrap();
        std::fs::create_dir_all(var.join("lib/demo")).unwrap();
        std::fs::write(var.join("lib/demo/state"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("usr/share/factory")).unwrap();
        assert!(var_to_tmpfiles(&var, &root).is_err());
        std::fs::remove_file(root.join("usr/share/factory")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("usr/lib/opt")).unwrap();
        std::fs::create_dir_all(var.join("opt/vendor")).unwrap();
        assert!(opt_into_usr(&var, &root).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_second_conversion_keeps_the_first_ones_var() {
        let new = "L /var/lib/dpkg - - - - ../../usr/share/dpkg/database\nd /var/lib/new 0755 root root - -\n";
        let earlier = "# comment\nL /var/lib/dpkg - - - - ../../usr/share/dpkg/database\nL /var/lock - - - - /run/lock\nd /var/lib/new 0700 root root - -\n";
        assert_eq!(
            merge_tmpfiles(new, earlier),
            format!("{new}L /var/lock - - - - /run/lock\n")
        );
    }

    #[test]
    fn a_tree_without_kernel_needs_the_placeholder_to_be_allowed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let err = make_deployable(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("no kernel"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let c = make_deployable(dir.path(), true).unwrap();
        assert_eq!(c.kernels, ["0.0.0-placeholder"]);
    }

    /// Regression: a path with a space split the line, and `%` was taken
    /// for a specifier. systemd-tmpfiles itself reads the lines back.
    #[test]
    fn tmpfiles_lines_survive_spaces_quotes_and_percent_signs() {
        let dir = tempfile::tempdir().unwrap();
        let (var, root) = (dir.path().join("var"), dir.path().join("root"));
        let odd = "lib/my app/50% \"done\"";
        std::fs::create_dir_all(var.join(odd)).unwrap();
        std::fs::write(var.join(odd).join("state file"), "kept\n").unwrap();
        std::os::unix::fs::symlink("state file", var.join(odd).join("link")).unwrap();
        std::fs::create_dir_all(root.join("usr/etc")).unwrap();
        std::fs::write(root.join("usr/etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(root.join("usr/etc/group"), "root:x:0:\n").unwrap();
        let text = var_to_tmpfiles(&var, &root).unwrap();
        let conf = dir.path().join("test.conf");
        std::fs::write(&conf, &text).unwrap();
        let out = std::process::Command::new("systemd-tmpfiles")
            .arg("--create")
            .arg(format!("--root={}", root.display()))
            .arg(&conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "{text}\n{out:?}");
        let made = root.join("var").join(odd);
        assert_eq!(
            std::fs::read_to_string(made.join("state file")).unwrap(),
            "kept\n",
            "{text}"
        );
        assert_eq!(
            std::fs::read_link(made.join("link")).unwrap(),
            Path::new("state file")
        );
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

/// `new` tmpfiles.d lines, then the lines of `earlier` for paths `new` does not name.
fn merge_tmpfiles(new: &str, earlier: &str) -> String {
    let path = |line: &str| line.split_whitespace().nth(1).map(str::to_string);
    let named: BTreeSet<String> = new.lines().filter_map(path).collect();
    let mut merged = new.to_string();
    for line in earlier.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if path(line).is_some_and(|p| !named.contains(&p)) {
            merged.push_str(line);
            merged.push('\n');
        }
    }
    merged
}

/// What [`make_deployable`] found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Conversion {
    /// Kernel versions moved to usr/lib/modules/KVER.
    pub kernels: Vec<String>,
    /// Device nodes, FIFOs and sockets removed.
    pub special_files_removed: usize,
    /// tmpfiles.d lines written for the former /var content.
    pub tmpfiles_lines: usize,
}

fn move_path(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(from, to)
        .with_context(|| format!("Moving {} to {}", from.display(), to.display()))
}

/// Turn a Debian root file system (as mmdebstrap or debootstrap leave it)
/// into a tree ostree can deploy. With `placeholder_kernel`, a tree without a
/// kernel gets a placeholder (for images that are not booted on hardware).
pub fn make_deployable(root: &Path, placeholder_kernel: bool) -> Result<Conversion> {
    use std::os::unix::fs::FileTypeExt;
    let mut conversion = Conversion::default();
    // ostree stores regular files, symlinks and directories only.
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("Reading {}", dir.display()))?
        {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket()
            {
                std::fs::remove_file(entry.path())?;
                conversion.special_files_removed += 1;
            }
        }
    }
    // /etc lives in /usr/etc; ostree refuses a tree with both.
    let (etc, usr_etc) = (root.join("etc"), root.join("usr/etc"));
    if etc.is_dir() {
        if usr_etc.exists() {
            anyhow::bail!("the tree has both /etc and /usr/etc");
        }
        move_path(&etc, &usr_etc)?;
    }
    // dpkg's database moves into the read-only /usr, with /var/lib/dpkg a link to it.
    let dpkg_var = root.join("var/lib/dpkg");
    let database = root.join(crate::dpkg::DATABASE_DIR);
    if std::fs::symlink_metadata(&dpkg_var).is_ok_and(|m| m.is_dir()) {
        move_path(&dpkg_var, &database)?;
    }
    // The kernel and initramfs where ostree looks for them.
    let boot = root.join("boot");
    if let Ok(entries) = std::fs::read_dir(&boot) {
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        for name in &names {
            if let Some(kver) = name.strip_prefix("vmlinuz-") {
                let modules = root.join("usr/lib/modules").join(kver);
                move_path(&boot.join(name), &modules.join("vmlinuz"))?;
                for (prefix, target) in [
                    ("initrd.img-", "initramfs.img"),
                    ("config-", "config"),
                    ("System.map-", "System.map"),
                ] {
                    let from = boot.join(format!("{prefix}{kver}"));
                    if from.exists() {
                        move_path(&from, &modules.join(target))?;
                    }
                }
                conversion.kernels.push(kver.to_string());
            }
        }
        for entry in std::fs::read_dir(&boot)?.flatten() {
            let p = entry.path();
            if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
    }
    for link in ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"] {
        let p = root.join(link);
        if std::fs::symlink_metadata(&p).is_ok() {
            std::fs::remove_file(&p)?;
        }
    }
    if conversion.kernels.is_empty() {
        let existing = std::fs::read_dir(root.join("usr/lib/modules"))
            .map(|e| {
                e.flatten()
                    .filter(|d| d.path().join("vmlinuz").exists())
                    .count()
            })
            .unwrap_or(0);
        if existing == 0 {
            if !placeholder_kernel {
                anyhow::bail!(
                    "the tree has no kernel: add a linux-image package, or set placeholder-kernel = true"
                );
            }
            let kdir = root.join("usr/lib/modules/0.0.0-placeholder");
            std::fs::create_dir_all(&kdir)?;
            std::fs::write(
                kdir.join("vmlinuz"),
                "placeholder kernel (apt-ostree compose)\n",
            )?;
            std::fs::write(kdir.join("initramfs.img"), "placeholder initramfs\n")?;
            conversion.kernels.push("0.0.0-placeholder".into());
        }
    }
    // Mutable places move into /var, which the deployment keeps across updates.
    let var = root.join("var");
    std::fs::create_dir_all(&var)?;
    for (top, inside, link) in [
        ("home", "home", "var/home"),
        ("root", "roothome", "var/roothome"),
        ("opt", "opt", "var/opt"),
        ("srv", "srv", "var/srv"),
        ("mnt", "mnt", "var/mnt"),
        ("usr/local", "usrlocal", "../var/usrlocal"),
    ] {
        let path = root.join(top);
        let is_real_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if is_real_dir {
            move_path(&path, &var.join(inside))?;
        } else if std::fs::symlink_metadata(&path).is_ok() {
            std::fs::remove_file(&path)?;
        }
        std::os::unix::fs::symlink(link, &path)?;
        std::fs::create_dir_all(var.join(inside))?;
    }
    // What is left in /var comes back at boot through tmpfiles.d; dpkg's link
    // first, then the packages' /opt trees, kept in /usr.
    let mut lines = format!(
        "L /var/lib/dpkg - - - - ../../{}\n",
        crate::dpkg::DATABASE_DIR
    );
    lines.push_str(&opt_into_usr(&var, root)?);
    lines.push_str(&var_to_tmpfiles(&var, root)?);
    let tmpfiles = root.join(COMPOSED_TMPFILES);
    // A tree converted before (an image built FROM an encapsulated base)
    // has its /var only in this list: keep what the new /var does not redefine.
    if let Ok(earlier) = std::fs::read_to_string(&tmpfiles) {
        lines = merge_tmpfiles(&lines, &earlier);
    }
    conversion.tmpfiles_lines = lines.lines().count();
    crate::fsutil::dir_beneath(
        root,
        Path::new(COMPOSED_TMPFILES).parent().expect("has parent"),
    )?;
    // An image pulled from a registry may already have this file, and its
    // checkout is hard-linked to the repository: replace, never write into it.
    crate::fsutil::write_atomic(
        &tmpfiles,
        format!("# /var of the composed image (apt-ostree compose)\n{lines}").as_bytes(),
    )?;
    for entry in std::fs::read_dir(&var)?.flatten() {
        let p = entry.path();
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    // The top level of an ostree-booted system.
    for dir in ["sysroot", "run", "proc", "sys", "dev", "tmp", "boot"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    let ostree_link = root.join("ostree");
    if std::fs::symlink_metadata(&ostree_link).is_err() {
        std::os::unix::fs::symlink("sysroot/ostree", &ostree_link)?;
    }
    Ok(conversion)
}
