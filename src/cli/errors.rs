//! Turning error replies into sentences for people.

use crate::protocol::sysroot::{Error as SysrootError, ErrorKind};

/// The name of a Varlink error reply that the generated code does not type
/// (the `org.varlink.service` ones), if that is what `err` is.
fn varlink_error_name(err: &SysrootError) -> Option<String> {
    use std::error::Error as _;
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(v) = e.downcast_ref::<varlink::Error>() {
            if let varlink::ErrorKind::VarlinkErrorReply(reply) = v.kind() {
                let params = reply
                    .parameters
                    .as_ref()
                    .map(|p| format!(" {p}"))
                    .unwrap_or_default();
                return Some(format!("{}{params}", reply.error.as_deref().unwrap_or("?")));
            }
            return Some(v.to_string());
        }
        source = e.source();
    }
    None
}

/// One line (or a few) that says what went wrong.
pub fn describe(err: &anyhow::Error) -> String {
    let Some(e) = err.downcast_ref::<SysrootError>() else {
        return format!("{err:#}");
    };
    match e.kind() {
        ErrorKind::NotASysroot(Some(a)) => {
            format!("{} is not an OSTree sysroot: {}", a.path, a.reason)
        }
        ErrorKind::TransactionInProgress(Some(a)) => format!(
            "transaction {} ({}) is already running; use `apt-ostree cancel` or wait",
            a.transaction.id, a.transaction.title
        ),
        ErrorKind::NoTransaction(_) => "no transaction is running".into(),
        ErrorKind::Cancelled(Some(a)) => format!("transaction {} was cancelled", a.transaction),
        ErrorKind::NoDeployment(Some(a)) => a.reason.clone(),
        ErrorKind::InvalidRefspec(Some(a)) => {
            format!("invalid refspec {:?}: {}", a.refspec, a.reason)
        }
        ErrorKind::RevisionNotFound(Some(a)) => {
            format!("revision {:?} not found: {}", a.revision, a.reason)
        }
        ErrorKind::DowngradeRefused(Some(a)) => format!(
            "refusing to go back from {} to {}; pass --allow-downgrade",
            a.current, a.target
        ),
        ErrorKind::InvalidKernelArgument(Some(a)) => {
            format!("invalid kernel argument {:?}: {}", a.argument, a.reason)
        }
        ErrorKind::FetchFailed(Some(a)) => {
            format!("fetching from {} failed: {}", a.remote, a.reason)
        }
        ErrorKind::SignatureInvalid(Some(a)) => {
            format!("signature check failed for {}: {}", a.remote, a.reason)
        }
        ErrorKind::InvalidPackageName(Some(a)) => {
            format!("invalid package name {:?}: {}", a.name, a.reason)
        }
        ErrorKind::PackageNotFound(Some(a)) => {
            format!("packages not found: {}", a.packages.join(", "))
        }
        ErrorKind::PackageAlreadyRequested(Some(a)) => format!(
            "already requested: {} (use --idempotent to accept that)",
            a.packages.join(", ")
        ),
        ErrorKind::PackageInBase(Some(a)) => {
            format!("already in the base image: {}", a.packages.join(", "))
        }
        ErrorKind::PackageNotRequested(Some(a)) => {
            format!("not requested: {}", a.packages.join(", "))
        }
        ErrorKind::PackageNotInBase(Some(a)) => {
            format!("not in the base image: {}", a.packages.join(", "))
        }
        ErrorKind::DependencyProblem(Some(a)) => {
            format!("cannot satisfy dependencies:\n{}", a.explanation)
        }
        ErrorKind::InvalidPackageFile(Some(a)) => {
            format!("invalid package file {}: {}", a.path, a.reason)
        }
        ErrorKind::ScriptFailed(Some(a)) => format!(
            "{} of {} failed (exit status {}):\n{}",
            a.script, a.package, a.exitStatus, a.output
        ),
        ErrorKind::NotSupported(Some(a)) => format!("not supported: {}", a.reason),
        ErrorKind::Failed(Some(a)) => a.message.clone(),
        _ => match varlink_error_name(e) {
            Some(name) if name.starts_with("org.varlink.service.PermissionDenied") => {
                let action = name
                    .split_once(' ')
                    .and_then(|(_, p)| serde_json::from_str::<serde_json::Value>(p).ok())
                    .and_then(|p| p["action"].as_str().map(str::to_string));
                match action.as_deref() {
                    None | Some("root") => "permission denied: this needs root".into(),
                    Some(action) => format!(
                        "permission denied: {action} needs root, or authorization by polkit \
                         (an administrator's password, or a rule in /etc/polkit-1/rules.d)"
                    ),
                }
            }
            Some(name) => name,
            None => e.to_string(),
        },
    }
}
