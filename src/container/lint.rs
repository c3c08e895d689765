//! `apt-ostree container lint`: run as the last `RUN` of a Containerfile,
//! it tells the author what will not behave as expected once the image is
//! deployed, as `bootc container lint` does. It reads only the file system
//! (no daemon, no libostree), so it runs inside any build.

use std::path::Path;

/// How bad a finding is: errors make the image undeployable or wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

/// Entries listed per finding before "and N more".
const LISTED: usize = 10;

fn kernels(root: &Path) -> Vec<(String, bool)> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("boot")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(kver) = name.strip_prefix("vmlinuz-") {
                let initramfs = root.join(format!("boot/initrd.img-{kver}")).exists()
                    || root
                        .join(format!("usr/lib/modules/{kver}/initramfs.img"))
                        .exists();
                found.push((kver.to_string(), initramfs));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(root.join("usr/lib/modules")) {
        for e in entries.flatten() {
            let kver = e.file_name().to_string_lossy().to_string();
            if e.path().join("vmlinuz").exists() && !found.iter().any(|(k, _)| *k == kver) {
                let initramfs = e.path().join("initramfs.img").exists()
                    || root.join(format!("boot/initrd.img-{kver}")).exists();
                found.push((kver, initramfs));
            }
        }
    }
    found.sort();
    found
}

/// What lies under /var beyond the package manager's scratch state.
fn var_content(root: &Path) -> Vec<String> {
    let var = root.join("var");
    let mut found = Vec::new();
    let mut stack = vec![var.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path
                .strip_prefix(&var)
                .expect("under var")
                .to_string_lossy()
                .to_string();
            if crate::tree::is_var_scratch(&rel) {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                // Debian's /var/run and /var/lock point into /run: nothing is kept there.
                Ok(t)
                    if t.is_symlink()
                        && std::fs::read_link(&path).is_ok_and(|l| l.starts_with("/run")) => {}
                _ => found.push(format!("/var/{rel}")),
            }
        }
    }
    found.sort();
    found
}

fn listed(paths: &[String]) -> String {
    let mut text = paths
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > LISTED {
        text.push_str(&format!(" and {} more", paths.len() - LISTED));
    }
    text
}

/// Check the root file system at `root`.
pub fn lint(root: &Path) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut error = |message: String| {
        findings.push(Finding {
            severity: Severity::Error,
            message,
        })
    };
    let kernels = kernels(root);
    if kernels.is_empty() {
        error("no kernel: the image cannot boot; install a linux-image package (its /boot/vmlinuz-KVER or /usr/lib/modules/KVER/vmlinuz is what boots)".into());
    }
    for (kver, _) in kernels.iter().filter(|(_, initramfs)| !*initramfs) {
        error(format!("kernel {kver} has no initramfs (/boot/initrd.img-{kver} or /usr/lib/modules/{kver}/initramfs.img): install ostree-boot and initramfs-tools (with apt-ostree's hook) or dracut, or run update-initramfs or dracut for it"));
    }
    if root.join("usr/etc").exists() {
        error("/usr/etc exists: keep configuration in /etc; deployment moves /etc to /usr/etc itself, and refuses a tree with both".into());
    }
    let var = var_content(root);
    if !var.is_empty() {
        findings.push(Finding {
            severity: Severity::Warning,
            message: format!(
                "{} files under /var only seed a new machine and are never updated by an upgrade (machines keep their own /var): {}",
                var.len(),
                listed(&var)
            ),
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_good_root_passes_and_each_problem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in [
            "etc",
            "usr/lib/modules/6.12.0-1-amd64",
            "var/lib/apt/lists",
            "var/cache/apt",
            "boot",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("usr/lib/modules/6.12.0-1-amd64/vmlinuz"), "k").unwrap();
        fs::write(root.join("boot/initrd.img-6.12.0-1-amd64"), "i").unwrap();
        fs::write(root.join("var/lib/apt/lists/x_Packages"), "scratch").unwrap();
        std::os::unix::fs::symlink("/run/lock", root.join("var/lock")).unwrap();
        assert_eq!(lint(root), []);

        fs::write(root.join("boot/vmlinuz-6.13.0-1-amd64"), "k2").unwrap();
        fs::create_dir_all(root.join("usr/etc")).unwrap();
        fs::create_dir_all(root.join("var/lib/myapp")).unwrap();
        fs::write(root.join("var/lib/myapp/seed.db"), "seed").unwrap();
        let found = lint(root);
        let errors: Vec<&str> = found
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.message.as_str())
            .collect();
        assert_eq!(errors.len(), 2, "{found:?}");
        assert!(errors[0].contains("kernel 6.13.0-1-amd64 has no initramfs"));
        assert!(errors[1].contains("/usr/etc exists"));
        let warning = found
            .iter()
            .find(|f| f.severity == Severity::Warning)
            .unwrap();
        assert!(
            warning.message.contains("/var/lib/myapp/seed.db"),
            "{warning:?}"
        );
        assert!(!warning.message.contains("x_Packages"), "{warning:?}");

        let empty = tempfile::tempdir().unwrap();
        assert!(lint(empty.path())[0].message.starts_with("no kernel"));
    }
}
