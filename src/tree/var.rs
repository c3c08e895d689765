//! What packages and images put under /var and /opt, made to survive a
//! commit: /var content becomes tmpfiles.d lines (and factory copies of
//! files), packages' /opt trees move into /usr and are linked back at boot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{is_var_scratch, FACTORY};
use crate::fsutil::{join, Beneath, Kind};

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

/// Write tmpfiles.d lines (and factory copies of files, with their owner
/// and mode) for everything packages put under the scratch `var`; returns
/// the tmpfiles.d text.
pub fn var_to_tmpfiles(var: &Beneath, root: &Beneath) -> Result<String> {
    let passwd = root.read_text("usr/etc/passwd").unwrap_or_default();
    let group = root.read_text("usr/etc/group").unwrap_or_default();
    let mut lines = String::new();
    for (rel, meta) in var.walk("")? {
        if is_var_scratch(&rel) {
            continue;
        }
        let (user, grp) = owner(meta.uid, meta.gid, &passwd, &group);
        let mode = meta.mode;
        let var_path = tmpfiles_path(&format!("/var/{rel}"));
        match meta.kind {
            Kind::Directory => writeln!(lines, "d {var_path} {mode:04o} {user} {grp} - -")?,
            Kind::Symlink => {
                let target = var.read_link(&rel)?;
                let target = tmpfiles_escape(&target.to_string_lossy());
                writeln!(lines, "L {var_path} - - - - {target}")?;
            }
            Kind::File => {
                let factory = join(FACTORY, &rel);
                if let Some((parent, _)) = factory.rsplit_once('/') {
                    root.create_dir_all(parent)?;
                }
                let mut file = var.open_file(&rel)?.context("vanished")?;
                root.write_from(&factory, &mut file, &meta)
                    .with_context(|| format!("Keeping /var/{rel}"))?;
                let source = tmpfiles_escape(&format!("/{FACTORY}/{rel}"));
                writeln!(lines, "C {var_path} {mode:04o} {user} {grp} - {source}")?;
            }
            Kind::Special => {}
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
pub fn opt_into_usr(var: &Beneath, root: &Beneath) -> Result<String> {
    // Only a real directory: a link would move what it points to.
    if !var.is_dir("opt")? {
        return Ok(String::new());
    }
    let mut lines = String::new();
    for (name, meta) in var.entries("opt")? {
        let from = join("opt", &name);
        if meta.kind == Kind::Symlink && var.read_link(&from)? == opt_link_target(&name) {
            // The base's own link (see link_base_opt): its tree is in /usr already.
            var.remove_all(&from)?;
            continue;
        }
        root.create_dir_all(OPT_IN_USR)?;
        let to = join(OPT_IN_USR, &name);
        if root.meta(&to)?.is_some() {
            anyhow::bail!("/opt/{name} is both in the image and in a package");
        }
        var.move_to(&from, root, &to)?;
        let target = tmpfiles_escape(&opt_link_target(&name).to_string_lossy());
        let link = tmpfiles_path(&format!("/var/opt/{name}"));
        writeln!(lines, "L {link} - - - - {target}")?;
    }
    Ok(lines)
}

/// Where /var/opt/NAME points for a package's /opt tree.
fn opt_link_target(name: &str) -> PathBuf {
    Path::new("../..").join(OPT_IN_USR).join(name)
}

/// Give a scratch /var the links a booted base has in /var/opt, so that
/// dpkg and maintainer scripts see the base's /opt trees (and a package
/// replacing one writes into its tree in /usr).
pub fn link_base_opt(root: &Beneath, var: &Beneath) -> Result<()> {
    if !root.is_dir(OPT_IN_USR)? {
        return Ok(());
    }
    var.create_dir_all("opt")?;
    for (name, _) in root.entries(OPT_IN_USR)? {
        var.symlink(&opt_link_target(&name), &join("opt", &name))?;
    }
    Ok(())
}

/// `new` tmpfiles.d lines, then the lines of `earlier` for paths `new` does not name.
pub(super) fn merge_tmpfiles(new: &str, earlier: &str) -> String {
    let path = |line: &str| line.split_whitespace().nth(1).map(str::to_string);
    let named: std::collections::BTreeSet<String> = new.lines().filter_map(path).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn trees(dir: &Path) -> (Beneath, Beneath) {
        (
            Beneath::open(&dir.join("var")).unwrap(),
            Beneath::open(&dir.join("root")).unwrap(),
        )
    }

    #[test]
    fn a_link_planted_in_the_tree_is_never_followed_when_writing() {
        let tree = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let (root, var) = (tree.path().join("root"), tree.path().join("var"));
        fs::create_dir_all(root.join("usr/share")).unwrap();
        fs::create_dir_all(var.join("lib/demo")).unwrap();
        fs::write(var.join("lib/demo/state"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("usr/share/factory")).unwrap();
        let (v, r) = trees(tree.path());
        // The link resolves inside the tree, where its target does not exist.
        assert!(var_to_tmpfiles(&v, &r).is_err());
        fs::remove_file(root.join("usr/share/factory")).unwrap();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("usr/lib/opt")).unwrap();
        fs::create_dir_all(var.join("opt/vendor")).unwrap();
        assert!(opt_into_usr(&v, &r).is_err());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
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

    /// Regression: a path with a space split the line, and `%` was taken
    /// for a specifier. systemd-tmpfiles itself reads the lines back.
    #[test]
    fn tmpfiles_lines_survive_spaces_quotes_and_percent_signs() {
        let dir = tempfile::tempdir().unwrap();
        let (var, root) = (dir.path().join("var"), dir.path().join("root"));
        let odd = "lib/my app/50% \"done\"";
        fs::create_dir_all(var.join(odd)).unwrap();
        fs::write(var.join(odd).join("state file"), "kept\n").unwrap();
        std::os::unix::fs::symlink("state file", var.join(odd).join("link")).unwrap();
        fs::create_dir_all(root.join("usr/etc")).unwrap();
        fs::write(root.join("usr/etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(root.join("usr/etc/group"), "root:x:0:\n").unwrap();
        let (v, r) = trees(dir.path());
        let text = var_to_tmpfiles(&v, &r).unwrap();
        let conf = dir.path().join("test.conf");
        fs::write(&conf, &text).unwrap();
        let out = std::process::Command::new("systemd-tmpfiles")
            .arg("--create")
            .arg(format!("--root={}", root.display()))
            .arg(&conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "{text}\n{out:?}");
        let made = root.join("var").join(odd);
        assert_eq!(
            fs::read_to_string(made.join("state file")).unwrap(),
            "kept\n",
            "{text}"
        );
        assert_eq!(
            fs::read_link(made.join("link")).unwrap(),
            Path::new("state file")
        );
    }

    #[test]
    fn var_content_becomes_tmpfiles_and_factory_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (var, root) = (dir.path().join("var"), dir.path().join("root"));
        fs::create_dir_all(var.join("lib/demo")).unwrap();
        fs::create_dir_all(var.join("lib/dpkg")).unwrap();
        fs::create_dir_all(var.join("cache/debconf")).unwrap();
        fs::write(var.join("lib/demo/state.txt"), "initial\n").unwrap();
        fs::write(var.join("lib/demo/secret"), "s\n").unwrap();
        fs::set_permissions(
            var.join("lib/demo/secret"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink("state.txt", var.join("lib/demo/current")).unwrap();
        fs::create_dir_all(root.join("usr/etc")).unwrap();
        fs::write(root.join("usr/etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(root.join("usr/etc/group"), "root:x:0:\n").unwrap();
        fs::set_permissions(var.join("lib/demo"), fs::Permissions::from_mode(0o750)).unwrap();
        let (v, r) = trees(dir.path());
        let text = var_to_tmpfiles(&v, &r).unwrap();
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
        let factory = root.join("usr/share/factory/var/lib/demo");
        assert_eq!(
            fs::read_to_string(factory.join("state.txt")).unwrap(),
            "initial\n"
        );
        // A file only its owner may read stays so in the factory copy.
        let secret = fs::metadata(factory.join("secret")).unwrap();
        assert_eq!(secret.permissions().mode() & 0o777, 0o600);
    }
}
