//! Building real .deb files with dpkg-deb and serving them as an apt repository.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::run;

/// One package to build.
#[derive(Default, Clone)]
pub struct Deb {
    pub name: &'static str,
    pub version: &'static str,
    pub depends: &'static str,
    pub conflicts: &'static str,
    pub provides: &'static str,
    /// (path, content); paths under /usr/bin are executable.
    pub files: Vec<(&'static str, String)>,
    pub conffiles: Vec<&'static str>,
    /// (control file name, content): postinst, preinst, config, templates, triggers.
    pub control: Vec<(&'static str, String)>,
}

impl Deb {
    pub fn new(name: &'static str, version: &'static str) -> Deb {
        Deb {
            name,
            version,
            ..Default::default()
        }
    }

    pub fn file(mut self, path: &'static str, content: &str) -> Deb {
        self.files.push((path, content.to_string()));
        self
    }

    pub fn script(mut self, name: &'static str, body: &str) -> Deb {
        self.control
            .push((name, format!("#!/bin/sh\nset -e\n{body}\n")));
        self
    }

    pub fn control_file(mut self, name: &'static str, content: &str) -> Deb {
        self.control.push((name, content.to_string()));
        self
    }

    /// Build the package into `out`; returns the .deb's path.
    pub fn build(&self, out: &Path) -> PathBuf {
        let src = out.join(format!("src-{}-{}", self.name, self.version));
        let _ = fs::remove_dir_all(&src);
        let debian = src.join("DEBIAN");
        fs::create_dir_all(&debian).unwrap();
        let mut control = format!(
            "Package: {}\nVersion: {}\nArchitecture: all\nMaintainer: apt-ostree tests <tests@example.invalid>\n",
            self.name, self.version
        );
        if !self.depends.is_empty() {
            control.push_str(&format!("Depends: {}\n", self.depends));
        }
        if !self.conflicts.is_empty() {
            control.push_str(&format!("Conflicts: {}\n", self.conflicts));
        }
        if !self.provides.is_empty() {
            control.push_str(&format!("Provides: {}\n", self.provides));
        }
        control.push_str(&format!("Description: test package {}\n", self.name));
        fs::write(debian.join("control"), control).unwrap();
        for (path, content) in &self.files {
            let p = src.join(path.trim_start_matches('/'));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, content).unwrap();
            let mode = if path.contains("/bin/") || path.contains("/sbin/") {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
        if !self.conffiles.is_empty() {
            fs::write(debian.join("conffiles"), self.conffiles.join("\n") + "\n").unwrap();
        }
        for (name, content) in &self.control {
            let p = debian.join(name);
            fs::write(&p, content).unwrap();
            let mode = if ["postinst", "preinst", "prerm", "postrm", "config"].contains(name) {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
        let deb = out.join(format!("{}_{}_all.deb", self.name, self.version));
        run(Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&src)
            .arg(&deb));
        fs::remove_dir_all(&src).unwrap();
        deb
    }
}

/// A flat apt repository (`deb [trusted=yes] URL ./`) of built packages.
pub fn apt_repository(dir: &Path, debs: &[Deb]) {
    fs::create_dir_all(dir).unwrap();
    // apt asks a file: or copy: source whether Release changed by its time,
    // in whole seconds: a republished index must be seen as newer.
    let before = fs::metadata(dir.join("Release"))
        .and_then(|m| m.modified())
        .ok();
    for d in debs {
        d.build(dir);
    }
    let packages = run(Command::new("apt-ftparchive")
        .arg("packages")
        .arg(".")
        .current_dir(dir))
    .stdout;
    fs::write(dir.join("Packages"), packages).unwrap();
    let release = run(Command::new("apt-ftparchive")
        .arg("release")
        .arg(".")
        .current_dir(dir))
    .stdout;
    fs::write(dir.join("Release"), release).unwrap();
    if let Some(before) = before {
        let later = before + std::time::Duration::from_secs(2);
        for name in ["Release", "Packages"] {
            let file = fs::File::options()
                .write(true)
                .open(dir.join(name))
                .unwrap();
            if file.metadata().unwrap().modified().unwrap() < later {
                file.set_modified(later).unwrap();
            }
        }
    }
}
