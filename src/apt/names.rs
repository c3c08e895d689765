//! What a package argument may be: a Debian package name (with an optional
//! `=version` or `:arch`), or a .deb file whose control fields we can read.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::error::Error;

/// Debian policy 5.6.1: lowercase letters, digits, `+`, `-`, `.`; at least two
/// characters, starting with an alphanumeric. Versions and architectures are
/// checked for the characters they may contain.
pub fn validate_package_name(spec: &str) -> Result<(), Error> {
    let invalid = |reason: &str| Error::InvalidPackageName {
        name: spec.to_string(),
        reason: reason.to_string(),
    };
    let (name, version) = match spec.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    let (name, arch) = match name.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (name, None),
    };
    if name.len() < 2 {
        return Err(invalid("a package name has at least two characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(invalid(
            "a package name starts with a lowercase letter or digit",
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
    {
        return Err(invalid("a package name has only a-z, 0-9, +, - and ."));
    }
    if let Some(v) = version {
        if v.is_empty()
            || !v.starts_with(|c: char| c.is_ascii_digit())
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+-~:".contains(c))
        {
            return Err(invalid("not a valid Debian version"));
        }
    }
    if let Some(a) = arch {
        if a.is_empty()
            || !a
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(invalid("not a valid architecture"));
        }
    }
    Ok(())
}

/// A control field of a .deb file; a missing, truncated or corrupt file is
/// [`Error::InvalidPackageFile`].
pub fn deb_field(path: &Path, field: &str) -> Result<String> {
    let invalid = |reason: String| Error::InvalidPackageFile {
        path: path.display().to_string(),
        reason,
    };
    if !path.is_file() {
        return Err(invalid("no such file".into()).into());
    }
    let out =
        crate::process::capture(Command::new("dpkg-deb").arg("--field").arg(path).arg(field))?;
    let value = out.stdout.trim().to_string();
    if !out.status.success() || value.is_empty() {
        let err = out.stderr.trim().to_string();
        return Err(invalid(if err.is_empty() {
            format!("no {field} field")
        } else {
            err
        })
        .into());
    }
    Ok(value)
}

/// Check a .deb completely (its control data and its whole data archive)
/// and return its package name.
pub fn verify_deb(path: &Path) -> Result<String> {
    let name = deb_field(path, "Package")?;
    let out = crate::process::capture(
        Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(path)
            .stdout(std::process::Stdio::null()),
    )?;
    if !out.status.success() {
        return Err(Error::InvalidPackageFile {
            path: path.display().to_string(),
            reason: out.stderr.trim().to_string(),
        }
        .into());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_debian_names_and_refuses_the_rest() {
        for ok in [
            "htop",
            "libc6",
            "g++",
            "python3.11",
            "htop=3.2.2-2",
            "libc6:amd64",
            "x2=1:2.0~rc1+dfsg-1",
        ] {
            assert!(validate_package_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "HTOP",
            "-rf",
            "foo bar",
            "foo;rm",
            "../etc",
            "htop=",
            "htop=abc",
            "htop:AMD64",
            "päckage",
        ] {
            assert!(
                matches!(
                    validate_package_name(bad),
                    Err(Error::InvalidPackageName { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }
}
