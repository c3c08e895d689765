//! The one mapping from engine errors to the IDL's errors.
//!
//! Errors keep their `org.aptostree.Sysroot` names on every interface (the
//! Update interface runs Sysroot's transactions), so the mapping builds a
//! plain reply from the generated argument types and any call can send it.

use serde::Serialize;
use varlink::{CallTrait, Reply};

use super::convert;
use crate::error::Error;
use crate::protocol::sysroot as idl;

fn error<T: Serialize>(name: &'static str, args: T) -> Reply {
    Reply::error(
        format!("org.aptostree.Sysroot.{name}"),
        serde_json::to_value(args).ok(),
    )
}

/// The IDL error reply for `err`.
pub fn to_reply(err: &Error) -> Reply {
    let s = |v: &String| v.clone();
    match err {
        Error::NotASysroot { path, reason } => error(
            "NotASysroot",
            idl::NotASysroot_Args {
                path: path.display().to_string(),
                reason: s(reason),
            },
        ),
        Error::TransactionInProgress(t) => error(
            "TransactionInProgress",
            idl::TransactionInProgress_Args {
                transaction: convert::transaction(t),
            },
        ),
        Error::NoTransaction => error("NoTransaction", idl::NoTransaction_Args {}),
        Error::Cancelled(id) => error("Cancelled", idl::Cancelled_Args { transaction: s(id) }),
        Error::NoDeployment(reason) => {
            error("NoDeployment", idl::NoDeployment_Args { reason: s(reason) })
        }
        Error::InvalidRefspec { refspec, reason } => error(
            "InvalidRefspec",
            idl::InvalidRefspec_Args {
                refspec: s(refspec),
                reason: s(reason),
            },
        ),
        Error::RevisionNotFound { revision, reason } => error(
            "RevisionNotFound",
            idl::RevisionNotFound_Args {
                revision: s(revision),
                reason: s(reason),
            },
        ),
        Error::DowngradeRefused { current, target } => error(
            "DowngradeRefused",
            idl::DowngradeRefused_Args {
                current: s(current),
                target: s(target),
            },
        ),
        Error::InvalidKernelArgument { argument, reason } => error(
            "InvalidKernelArgument",
            idl::InvalidKernelArgument_Args {
                argument: s(argument),
                reason: s(reason),
            },
        ),
        Error::FetchFailed { remote, reason } => error(
            "FetchFailed",
            idl::FetchFailed_Args {
                remote: s(remote),
                reason: s(reason),
            },
        ),
        Error::SignatureInvalid { remote, reason } => error(
            "SignatureInvalid",
            idl::SignatureInvalid_Args {
                remote: s(remote),
                reason: s(reason),
            },
        ),
        Error::InvalidPackageName { name, reason } => error(
            "InvalidPackageName",
            idl::InvalidPackageName_Args {
                name: s(name),
                reason: s(reason),
            },
        ),
        Error::PackageNotFound(p) => error(
            "PackageNotFound",
            idl::PackageNotFound_Args {
                packages: p.clone(),
            },
        ),
        Error::PackageAlreadyRequested(p) => error(
            "PackageAlreadyRequested",
            idl::PackageAlreadyRequested_Args {
                packages: p.clone(),
            },
        ),
        Error::PackageInBase(p) => error(
            "PackageInBase",
            idl::PackageInBase_Args {
                packages: p.clone(),
            },
        ),
        Error::PackageNotRequested(p) => error(
            "PackageNotRequested",
            idl::PackageNotRequested_Args {
                packages: p.clone(),
            },
        ),
        Error::PackageNotInBase(p) => error(
            "PackageNotInBase",
            idl::PackageNotInBase_Args {
                packages: p.clone(),
            },
        ),
        Error::DependencyProblem(explanation) => error(
            "DependencyProblem",
            idl::DependencyProblem_Args {
                explanation: s(explanation),
            },
        ),
        Error::InvalidPackageFile { path, reason } => error(
            "InvalidPackageFile",
            idl::InvalidPackageFile_Args {
                path: s(path),
                reason: s(reason),
            },
        ),
        Error::ScriptFailed {
            package,
            script,
            exit_status,
            output,
        } => error(
            "ScriptFailed",
            idl::ScriptFailed_Args {
                package: s(package),
                script: s(script),
                exitStatus: (*exit_status).into(),
                output: s(output),
            },
        ),
        Error::NotSupported(reason) => {
            error("NotSupported", idl::NotSupported_Args { reason: s(reason) })
        }
        Error::Other(e) => error(
            "Failed",
            idl::Failed_Args {
                message: format!("{e:#}"),
            },
        ),
    }
}

/// Reply to `call` with the IDL error for `err`.
/// Generic over the call rather than taking `&mut dyn CallTrait`, because
/// coercing one trait object into its supertrait's needs Rust 1.86 and
/// `rust-version` is Debian 13's 1.85.
pub fn reply<C: CallTrait + ?Sized>(call: &mut C, err: &Error) -> varlink::Result<()> {
    call.reply_struct(to_reply(err))
}

/// `org.varlink.service.PermissionDenied`, which the varlink crate does not
/// define, naming the polkit action that was refused.
pub fn permission_denied<C: CallTrait + ?Sized>(
    call: &mut C,
    denied: &super::auth::Denied,
) -> varlink::Result<()> {
    call.reply_struct(Reply::error(
        "org.varlink.service.PermissionDenied",
        Some(serde_json::json!({ "action": denied.action })),
    ))
}
