//! Reading dpkg's failures: which package, which maintainer script, what it
//! said. The package and script come from dpkg's machine-readable status
//! (`--status-fd`), never from the output, which maintainer scripts write
//! too; the output is what the user reads.

use crate::apt::Plan;
use crate::error::Error;
use crate::process::Logged;

/// dpkg's words for each maintainer script.
const SCRIPTS: &[(&str, &str)] = &[
    ("post-installation script", "postinst"),
    ("pre-installation script", "preinst"),
    ("pre-removal script", "prerm"),
    ("post-removal script", "postrm"),
];

/// The first error dpkg reported on its status fd, as (package, script,
/// exit status). dpkg writes `status: PACKAGE : error : MESSAGE`, where
/// PACKAGE is the archive's path when unpacking it failed.
pub fn parse_failure(status: &str) -> Option<(String, String, i32)> {
    let (subject, message) = status
        .lines()
        .filter_map(|l| l.strip_prefix("status: "))
        .find_map(|l| l.split_once(" : error : "))?;
    let package = match subject.rsplit_once('/') {
        // An archive: NNN-NAME_VERSION_ARCH.deb as build.rs links them.
        Some((_, file)) => {
            let file = file.split_once('-').map_or(file, |(_, rest)| rest);
            file.split('_').next().unwrap_or(file).to_string()
        }
        None => subject.to_string(),
    };
    let script = SCRIPTS
        .iter()
        .find(|(words, _)| message.contains(words))
        .map_or("dpkg", |(_, s)| s)
        .to_string();
    let exit_status = message
        .split("returned error exit status ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    Some((package, script, exit_status))
}

/// Fail with [`Error::ScriptFailed`] if dpkg did; `status` is what it wrote
/// on its status fd.
pub fn check(ran: &Logged, status: &str, plan: &Plan) -> anyhow::Result<()> {
    if ran.status.success() {
        return Ok(());
    }
    let (package, script, exit_status) = parse_failure(status).unwrap_or_else(|| {
        (
            plan.install
                .first()
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            "dpkg".into(),
            ran.status.code().unwrap_or(1),
        )
    });
    Err(Error::ScriptFailed {
        package,
        script,
        exit_status,
        output: ran.text.clone(),
    }
    .into())
}

/// Every planned package must end up fully installed (not half-configured,
/// not waiting for triggers).
pub fn check_installed(status: &str, plan: &Plan) -> anyhow::Result<()> {
    let installed: std::collections::BTreeSet<String> = crate::dpkg::parse_status(status)
        .into_iter()
        .map(|p| p.name)
        .collect();
    if let Some(p) = plan.install.iter().find(|p| !installed.contains(&p.name)) {
        return Err(Error::ScriptFailed {
            package: p.name.clone(),
            script: "dpkg".into(),
            exit_status: 1,
            output: format!("{} is not fully installed after dpkg ran", p.name),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_failing_script_in_dpkg_status() {
        let status = include_str!("../../tests/fixtures/dpkg-status-fd-postinst-failure.txt");
        assert_eq!(
            parse_failure(status),
            Some(("demo-fail".into(), "postinst".into(), 3))
        );
        // What a script prints cannot pose as dpkg's verdict.
        let output = include_str!("../../tests/fixtures/dpkg-postinst-failure.txt");
        assert_eq!(parse_failure(output), None);
        assert_eq!(
            parse_failure(
                "status: /run/apt-ostree-debs/001-demo-broken_1.0_all.deb : error : \
                 cannot access archive: No such file or directory\n"
            ),
            Some(("demo-broken".into(), "dpkg".into(), 1))
        );
        assert_eq!(parse_failure("status: demo-ok: installed\n"), None);
    }
}
