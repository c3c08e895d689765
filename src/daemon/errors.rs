//! The one mapping from engine errors to the IDL's errors.

use varlink::CallTrait;

use super::convert;
use crate::error::Error;
use crate::protocol::sysroot::VarlinkCallError;

/// Reply to `call` with the IDL error for `err`.
pub fn reply(call: &mut dyn VarlinkCallError, err: Error) -> varlink::Result<()> {
    match err {
        Error::NotASysroot { path, reason } => {
            call.reply_not_asysroot(path.display().to_string(), reason)
        }
        Error::TransactionInProgress(t) => {
            call.reply_transaction_in_progress(convert::transaction(&t))
        }
        Error::NoTransaction => call.reply_no_transaction(),
        Error::Cancelled(id) => call.reply_cancelled(id),
        Error::NoDeployment(reason) => call.reply_no_deployment(reason),
        Error::InvalidRefspec { refspec, reason } => call.reply_invalid_refspec(refspec, reason),
        Error::RevisionNotFound { revision, reason } => {
            call.reply_revision_not_found(revision, reason)
        }
        Error::DowngradeRefused { current, target } => {
            call.reply_downgrade_refused(current, target)
        }
        Error::InvalidKernelArgument { argument, reason } => {
            call.reply_invalid_kernel_argument(argument, reason)
        }
        Error::FetchFailed { remote, reason } => call.reply_fetch_failed(remote, reason),
        Error::SignatureInvalid { remote, reason } => call.reply_signature_invalid(remote, reason),
        Error::InvalidPackageName { name, reason } => call.reply_invalid_package_name(name, reason),
        Error::PackageNotFound(p) => call.reply_package_not_found(p),
        Error::PackageAlreadyRequested(p) => call.reply_package_already_requested(p),
        Error::PackageInBase(p) => call.reply_package_in_base(p),
        Error::PackageNotRequested(p) => call.reply_package_not_requested(p),
        Error::DependencyProblem(explanation) => call.reply_dependency_problem(explanation),
        Error::InvalidPackageFile { path, reason } => call.reply_invalid_package_file(path, reason),
        Error::ScriptFailed {
            package,
            script,
            exit_status,
            output,
        } => call.reply_script_failed(package, script, exit_status.into(), output),
        Error::NotSupported(reason) => call.reply_not_supported(reason),
        Error::Other(e) => {
            tracing::warn!("{e:#}");
            call.reply_failed(format!("{e:#}"))
        }
    }
}

/// `org.varlink.service.PermissionDenied`, which the varlink crate does not define.
pub fn permission_denied(call: &mut dyn CallTrait) -> varlink::Result<()> {
    call.reply_struct(varlink::Reply::error(
        "org.varlink.service.PermissionDenied",
        None,
    ))
}
