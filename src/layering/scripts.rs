//! Reading dpkg's failures: which package, which maintainer script, what it said.

use crate::apt::Plan;
use crate::error::Error;
use crate::progress::Logged;

/// dpkg's words for each maintainer script.
const SCRIPTS: &[(&str, &str)] = &[
    ("post-installation script", "postinst"),
    ("pre-installation script", "preinst"),
    ("pre-removal script", "prerm"),
    ("post-removal script", "postrm"),
];

/// What failed, from dpkg's output: (package, script, exit status).
pub fn parse_failure(output: &str) -> Option<(String, String, i32)> {
    let package = output
        .split("error processing package ")
        .nth(1)
        .or_else(|| output.split("error processing archive ").nth(1))
        .and_then(|rest| rest.split([' ', '\n']).next())
        .map(|p| p.trim_end_matches(':').to_string())?;
    let script = SCRIPTS
        .iter()
        .find(|(words, _)| output.contains(words))
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| "dpkg".into());
    let status = output
        .split("returned error exit status ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    Some((package, script, status))
}

/// Fail with [`Error::ScriptFailed`] if dpkg did.
pub fn check(ran: &Logged, plan: &Plan) -> anyhow::Result<()> {
    if ran.status.success() {
        return Ok(());
    }
    let (package, script, exit_status) = parse_failure(&ran.text).unwrap_or_else(|| {
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
pub fn check_installed(status: &std::path::Path, plan: &Plan) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(status)?;
    let installed: std::collections::BTreeSet<String> = crate::dpkg::parse_status(&text)
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
    fn finds_the_failing_script_in_dpkg_output() {
        let output = include_str!("../../tests/fixtures/dpkg-postinst-failure.txt");
        assert_eq!(
            parse_failure(output),
            Some(("demo-fail".into(), "postinst".into(), 3))
        );
        assert_eq!(parse_failure("all good"), None);
    }
}
