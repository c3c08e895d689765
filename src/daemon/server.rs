//! `org.aptostree.Sysroot`: each method is a thin adapter from the generated
//! types to one engine call and back (see `convert` and `errors`).

use std::sync::Arc;

use varlink::CallTrait;

use super::{auth, convert, errors, Daemon};
use crate::dpkg;
use crate::error::Error;
use crate::protocol::sysroot::*;

pub struct SysrootInterface {
    daemon: Arc<Daemon>,
}

impl SysrootInterface {
    pub fn new(daemon: Arc<Daemon>) -> SysrootInterface {
        SysrootInterface { daemon }
    }
}

fn not_implemented(call: &mut dyn CallTrait, method: &str) -> varlink::Result<()> {
    call.reply_method_not_implemented(format!("org.aptostree.Sysroot.{method}"))
}

/// Gate for methods that change the system: root only (see `auth`).
macro_rules! require_privileged {
    ($call:expr) => {
        if !auth::may_mutate() {
            return errors::permission_denied($call);
        }
    };
}

impl VarlinkInterface for SysrootInterface {
    fn get_status(&self, call: &mut dyn Call_GetStatus) -> varlink::Result<()> {
        match self.daemon.reader.query(|s| s.status()) {
            Ok(status) => call.reply(
                status.path.display().to_string(),
                status.deployments.iter().map(convert::deployment).collect(),
                self.daemon
                    .transactions
                    .current()
                    .map(|t| convert::transaction(&t)),
                None,
            ),
            Err(e) => errors::reply(call, e),
        }
    }

    fn list_packages(
        &self,
        call: &mut dyn Call_ListPackages,
        revision: Option<String>,
    ) -> varlink::Result<()> {
        let result = self.daemon.reader.query(move |s| {
            let checksum = match revision {
                Some(r) => s.resolve_revision(&r)?,
                None => s.default_revision()?,
            };
            let packages = s.packages(&checksum)?;
            Ok((checksum, packages))
        });
        match result {
            Ok((checksum, packages)) => {
                call.reply(checksum, packages.iter().map(convert::package).collect())
            }
            Err(e) => errors::reply(call, e),
        }
    }

    fn diff_packages(
        &self,
        call: &mut dyn Call_DiffPackages,
        from: Option<String>,
        to: Option<String>,
    ) -> varlink::Result<()> {
        let result = self.daemon.reader.query(move |s| {
            let (default_from, default_to) = s.default_diff_pair()?;
            let from = match from {
                Some(r) => s.resolve_revision(&r)?,
                None => default_from,
            };
            let to = match to {
                Some(r) => s.resolve_revision(&r)?,
                None => default_to,
            };
            let diff = dpkg::diff(&s.packages(&from)?, &s.packages(&to)?);
            Ok((from, to, diff))
        });
        match result {
            Ok((from, to, diff)) => call.reply(from, to, convert::package_diff(&diff)),
            Err(e) => errors::reply(call, e),
        }
    }

    fn get_kernel_arguments(&self, call: &mut dyn Call_GetKernelArguments) -> varlink::Result<()> {
        let result = self.daemon.reader.query(|s| {
            let status = s.status()?;
            let default = status
                .deployments
                .into_iter()
                .next()
                .ok_or_else(|| Error::NoDeployment("the sysroot has no deployments".into()))?;
            Ok(default.kernel_arguments)
        });
        match result {
            Ok(args) => call.reply(args),
            Err(e) => errors::reply(call, e),
        }
    }

    fn reload(&self, call: &mut dyn Call_Reload) -> varlink::Result<()> {
        self.daemon.reload();
        call.reply()
    }

    fn watch(&self, call: &mut dyn Call_Watch) -> varlink::Result<()> {
        not_implemented(call, "Watch")
    }

    fn cancel(
        &self,
        call: &mut dyn Call_Cancel,
        _transaction: Option<String>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "Cancel")
    }

    fn upgrade(
        &self,
        call: &mut dyn Call_Upgrade,
        _check: Option<bool>,
        _preview: Option<bool>,
        _download_only: Option<bool>,
        _allow_downgrade: Option<bool>,
        _reboot: Option<bool>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "Upgrade")
    }

    fn rebase(
        &self,
        call: &mut dyn Call_Rebase,
        _refspec: String,
        _revision: Option<String>,
        _reboot: Option<bool>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "Rebase")
    }

    fn deploy(
        &self,
        call: &mut dyn Call_Deploy,
        _revision: String,
        _allow_downgrade: Option<bool>,
        _reboot: Option<bool>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "Deploy")
    }

    fn rollback(&self, call: &mut dyn Call_Rollback, _reboot: Option<bool>) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "Rollback")
    }

    fn cleanup(
        &self,
        call: &mut dyn Call_Cleanup,
        _pending: Option<bool>,
        _rollback: Option<bool>,
        _base: Option<bool>,
        _metadata: Option<bool>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "Cleanup")
    }

    fn install(
        &self,
        call: &mut dyn Call_Install,
        _packages: Vec<String>,
        _local_packages: Option<Vec<String>>,
        _dry_run: Option<bool>,
        _idempotent: Option<bool>,
        _reboot: Option<bool>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "Install")
    }

    fn uninstall(
        &self,
        call: &mut dyn Call_Uninstall,
        _packages: Vec<String>,
        _all: Option<bool>,
        _dry_run: Option<bool>,
        _idempotent: Option<bool>,
        _reboot: Option<bool>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "Uninstall")
    }

    fn override_remove(
        &self,
        call: &mut dyn Call_OverrideRemove,
        _packages: Vec<String>,
        _dry_run: Option<bool>,
        _reboot: Option<bool>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "OverrideRemove")
    }

    fn override_replace(
        &self,
        call: &mut dyn Call_OverrideReplace,
        _packages: Vec<String>,
        _dry_run: Option<bool>,
        _reboot: Option<bool>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "OverrideReplace")
    }

    fn override_reset(
        &self,
        call: &mut dyn Call_OverrideReset,
        _packages: Vec<String>,
        _all: Option<bool>,
        _reboot: Option<bool>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "OverrideReset")
    }

    fn change_kernel_arguments(
        &self,
        call: &mut dyn Call_ChangeKernelArguments,
        _append: Option<Vec<String>>,
        _delete: Option<Vec<String>>,
        _replace: Option<Vec<String>>,
        _reboot: Option<bool>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "ChangeKernelArguments")
    }

    fn initramfs(
        &self,
        call: &mut dyn Call_Initramfs,
        _enable: bool,
        _arguments: Option<Vec<String>>,
        _reboot: Option<bool>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "Initramfs")
    }

    fn refresh_metadata(
        &self,
        call: &mut dyn Call_RefreshMetadata,
        _force: Option<bool>,
    ) -> varlink::Result<()> {
        require_privileged!(call);
        not_implemented(call, "RefreshMetadata")
    }
}
