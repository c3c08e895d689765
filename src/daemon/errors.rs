//! The one mapping from engine errors to the IDL's errors.

use varlink::CallTrait;

use super::convert;
use crate::error::Error;
use crate::protocol::sysroot::VarlinkCallError;

/// Reply to `call` with the IDL error for `err`.
pub fn reply(call: &mut dyn VarlinkCallError, err: &Error) -> varlink::Result<()> {
    let s = |v: &String| v.clone();
    match err {
        Error::NotASysroot { path, reason } => {
            call.reply_not_asysroot(path.display().to_string(), s(reason))
        }
        Error::TransactionInProgress(t) => {
            call.reply_transaction_in_progress(convert::transaction(t))
        }
        Error::NoTransaction => call.reply_no_transaction(),
        Error::Cancelled(id) => call.reply_cancelled(s(id)),
        Error::NoDeployment(reason) => call.reply_no_deployment(s(reason)),
        Error::InvalidRefspec { refspec, reason } => {
            call.reply_invalid_refspec(s(refspec), s(reason))
        }
        Error::RevisionNotFound { revision, reason } => {
            call.reply_revision_not_found(s(revision), s(reason))
        }
        Error::DowngradeRefused { current, target } => {
            call.reply_downgrade_refused(s(current), s(target))
        }
        Error::InvalidKernelArgument { argument, reason } => {
            call.reply_invalid_kernel_argument(s(argument), s(reason))
        }
        Error::FetchFailed { remote, reason } => call.reply_fetch_failed(s(remote), s(reason)),
        Error::SignatureInvalid { remote, reason } => {
            call.reply_signature_invalid(s(remote), s(reason))
        }
        Error::InvalidPackageName { name, reason } => {
            call.reply_invalid_package_name(s(name), s(reason))
        }
        Error::PackageNotFound(p) => call.reply_package_not_found(p.clone()),
        Error::PackageAlreadyRequested(p) => call.reply_package_already_requested(p.clone()),
        Error::PackageInBase(p) => call.reply_package_in_base(p.clone()),
        Error::PackageNotRequested(p) => call.reply_package_not_requested(p.clone()),
        Error::DependencyProblem(explanation) => call.reply_dependency_problem(s(explanation)),
        Error::InvalidPackageFile { path, reason } => {
            call.reply_invalid_package_file(s(path), s(reason))
        }
        Error::ScriptFailed {
            package,
            script,
            exit_status,
            output,
        } => call.reply_script_failed(s(package), s(script), (*exit_status).into(), s(output)),
        Error::NotSupported(reason) => call.reply_not_supported(s(reason)),
        Error::Other(e) => call.reply_failed(format!("{e:#}")),
    }
}

/// `org.varlink.service.PermissionDenied`, which the varlink crate does not define.
pub fn permission_denied(call: &mut dyn CallTrait) -> varlink::Result<()> {
    call.reply_struct(varlink::Reply::error(
        "org.varlink.service.PermissionDenied",
        None,
    ))
}
