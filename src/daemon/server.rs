//! `org.aptostree.Sysroot`: each method is a thin adapter from the generated
//! types to one engine call and back (see `convert` and `errors`).

use std::path::PathBuf;
use std::sync::Arc;

use super::{auth, convert, descriptors, errors, stream, Daemon};
use crate::dpkg;
use crate::error::Error;
use crate::operations::{
    self, CleanupOptions, KargsChange, LiveOptions, LocalPackage, PackageChange, PackageRequest,
    ResetOptions, UpgradeOptions,
};
use crate::protocol::sysroot::*;
use crate::transaction::{Job, Request};

pub struct SysrootInterface {
    daemon: Arc<Daemon>,
}

impl SysrootInterface {
    pub fn new(daemon: Arc<Daemon>) -> SysrootInterface {
        SysrootInterface { daemon }
    }
}

impl SysrootInterface {
    /// Start (or attach to) a transaction for `request` and follow it on `call`.
    fn run<C: VarlinkCallError + ?Sized>(
        &self,
        call: &mut C,
        request: Request,
        reboot: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        if let Err(denied) = auth::authorize_request(&request, interactive.unwrap_or(false)) {
            return errors::permission_denied(call, &denied);
        }
        let job = Job {
            request,
            reboot: reboot.unwrap_or(false),
        };
        match self.daemon.transactions.start(job, auth::initiator()) {
            Ok(tx) => stream::follow(call, &tx),
            Err(e) => errors::reply(call, &e),
        }
    }
}

/// `applyLive` and `allowReplacement` of Install and Uninstall.
fn live_options(apply_live: Option<bool>, allow_replacement: Option<bool>) -> Option<LiveOptions> {
    apply_live.unwrap_or(false).then(|| LiveOptions {
        reset: false,
        allow_replacement: allow_replacement.unwrap_or(false),
    })
}

impl VarlinkInterface for SysrootInterface {
    fn get_status(&self, call: &mut dyn Call_GetStatus) -> varlink::Result<()> {
        match self
            .daemon
            .reader
            .query(|s| Ok((s.status()?, operations::cached_update(s))))
        {
            Ok((status, update)) => call.reply(
                status.path.display().to_string(),
                status.deployments.iter().map(convert::deployment).collect(),
                self.daemon
                    .transactions
                    .current_info()
                    .map(|t| convert::transaction(&t)),
                update.as_ref().map(convert::update),
            ),
            Err(e) => errors::reply(call, &e),
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
            let version = s.commit_info(&checksum)?.version;
            Ok((checksum, version, packages))
        });
        match result {
            Ok((checksum, version, packages)) => call.reply(
                checksum,
                version,
                packages.iter().map(convert::package).collect(),
            ),
            Err(e) => errors::reply(call, &e),
        }
    }

    fn search(&self, call: &mut dyn Call_Search, words: Vec<String>) -> varlink::Result<()> {
        let words: std::result::Result<Vec<String>, String> =
            words.iter().map(|w| crate::apt::search_word(w)).collect();
        let words = match words {
            Ok(w) if !w.is_empty() => w,
            _ => return call.reply_invalid_parameter("words".into()),
        };
        // The scope from the reader; the search on this connection's thread.
        let found = self
            .daemon
            .reader
            .query(operations::search_scope)
            .and_then(|scope| scope.search(&words).map_err(Error::classify));
        match found {
            Ok(found) => call.reply(found.iter().map(convert::search_match).collect()),
            Err(e) => errors::reply(call, &e),
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
            Err(e) => errors::reply(call, &e),
        }
    }

    fn get_kernel_arguments(&self, call: &mut dyn Call_GetKernelArguments) -> varlink::Result<()> {
        let result = self
            .daemon
            .reader
            .query(|s| Ok(s.status()?.into_default()?.kernel_arguments));
        match result {
            Ok(args) => call.reply(args),
            Err(e) => errors::reply(call, &e),
        }
    }

    fn reload(&self, call: &mut dyn Call_Reload, interactive: Option<bool>) -> varlink::Result<()> {
        if let Err(denied) = auth::authorize(auth::Action::Reload, interactive.unwrap_or(false)) {
            return errors::permission_denied(call, &denied);
        }
        self.daemon.reload();
        call.reply()
    }

    fn watch(&self, call: &mut dyn Call_Watch) -> varlink::Result<()> {
        match self.daemon.transactions.current() {
            Some(tx) => stream::follow(call, &tx),
            None => errors::reply(call, &Error::NoTransaction {}),
        }
    }

    fn cancel(
        &self,
        call: &mut dyn Call_Cancel,
        transaction: Option<String>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        // Whoever started the transaction may cancel it (Ctrl-C in the CLI).
        let own = self
            .daemon
            .transactions
            .current_info()
            .is_some_and(|t| t.initiator_uid == auth::current().uid);
        if !own {
            if let Err(denied) = auth::authorize(auth::Action::Cancel, interactive.unwrap_or(false))
            {
                return errors::permission_denied(call, &denied);
            }
        }
        match self.daemon.transactions.cancel(transaction.as_deref()) {
            Ok(()) => call.reply(),
            Err(e) => errors::reply(call, &e),
        }
    }

    fn upgrade(
        &self,
        call: &mut dyn Call_Upgrade,
        check: Option<bool>,
        preview: Option<bool>,
        download_only: Option<bool>,
        allow_downgrade: Option<bool>,
        retry_failed: Option<bool>,
        reboot: Option<bool>,
        from_directory: Option<String>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let options = UpgradeOptions {
            check: check.unwrap_or(false),
            preview: preview.unwrap_or(false),
            download_only: download_only.unwrap_or(false),
            allow_downgrade: allow_downgrade.unwrap_or(false),
            retry_failed: retry_failed.unwrap_or(false),
            from: from_directory.map(PathBuf::from),
        };
        self.run(call, Request::Upgrade(options), reboot, interactive)
    }

    fn automatic_update(
        &self,
        call: &mut dyn Call_AutomaticUpdate,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let policy = self
            .daemon
            .config
            .lock()
            .expect("config lock")
            .automatic_update_policy;
        self.run(call, Request::AutomaticUpdate(policy), None, interactive)
    }

    fn rebase(
        &self,
        call: &mut dyn Call_Rebase,
        refspec: String,
        revision: Option<String>,
        reboot: Option<bool>,
        from_directory: Option<String>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let request = Request::Rebase {
            refspec,
            revision,
            from: from_directory.map(PathBuf::from),
        };
        self.run(call, request, reboot, interactive)
    }

    fn deploy(
        &self,
        call: &mut dyn Call_Deploy,
        revision: String,
        allow_downgrade: Option<bool>,
        reboot: Option<bool>,
        from_directory: Option<String>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let request = Request::Deploy {
            revision,
            allow_downgrade: allow_downgrade.unwrap_or(false),
            from: from_directory.map(PathBuf::from),
        };
        self.run(call, request, reboot, interactive)
    }

    fn rollback(
        &self,
        call: &mut dyn Call_Rollback,
        reboot: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        self.run(call, Request::Rollback, reboot, interactive)
    }

    fn pin_deployment(
        &self,
        call: &mut dyn Call_PinDeployment,
        id: String,
        unpin: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let pinned = !unpin.unwrap_or(false);
        self.run(call, Request::Pin { id, pinned }, None, interactive)
    }

    fn cleanup(
        &self,
        call: &mut dyn Call_Cleanup,
        pending: Option<bool>,
        rollback: Option<bool>,
        base: Option<bool>,
        metadata: Option<bool>,
        boot_failures: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let options = CleanupOptions {
            pending: pending.unwrap_or(false),
            rollback: rollback.unwrap_or(false),
            base: base.unwrap_or(false),
            metadata: metadata.unwrap_or(false),
            boot_failures: boot_failures.unwrap_or(false),
        };
        self.run(call, Request::Cleanup(options), None, interactive)
    }

    fn install(
        &self,
        call: &mut dyn Call_Install,
        packages: Vec<String>,
        local_package_file_descriptors: Option<Vec<i64>>,
        dry_run: Option<bool>,
        idempotent: Option<bool>,
        apply_live: Option<bool>,
        allow_replacement: Option<bool>,
        reboot: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let indexes = local_package_file_descriptors.unwrap_or_default();
        let Some(fds) = descriptors::take(&indexes) else {
            return call.reply_invalid_parameter("localPackageFileDescriptors".into());
        };
        if packages.is_empty() && fds.is_empty() {
            return call.reply_invalid_parameter("packages".into());
        }
        let mut local = Vec::new();
        for (fd, index) in fds.into_iter().zip(&indexes) {
            match LocalPackage::new(fd, format!("file descriptor {index}")) {
                Ok(p) => local.push(p),
                Err(e) => return errors::reply(call, &e),
            }
        }
        let change = PackageRequest {
            change: PackageChange::Install { packages, local },
            dry_run: dry_run.unwrap_or(false),
            idempotent: idempotent.unwrap_or(false),
            live: live_options(apply_live, allow_replacement),
        };
        self.run(call, Request::Packages(change), reboot, interactive)
    }

    fn uninstall(
        &self,
        call: &mut dyn Call_Uninstall,
        packages: Vec<String>,
        all: Option<bool>,
        dry_run: Option<bool>,
        idempotent: Option<bool>,
        apply_live: Option<bool>,
        allow_replacement: Option<bool>,
        reboot: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let all = all.unwrap_or(false);
        if packages.is_empty() && !all {
            return call.reply_invalid_parameter("packages".into());
        }
        let change = PackageRequest {
            change: PackageChange::Uninstall { packages, all },
            dry_run: dry_run.unwrap_or(false),
            idempotent: idempotent.unwrap_or(false),
            live: live_options(apply_live, allow_replacement),
        };
        self.run(call, Request::Packages(change), reboot, interactive)
    }

    fn override_remove(
        &self,
        call: &mut dyn Call_OverrideRemove,
        packages: Vec<String>,
        dry_run: Option<bool>,
        reboot: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        if packages.is_empty() {
            return call.reply_invalid_parameter("packages".into());
        }
        let change = PackageRequest {
            change: PackageChange::OverrideRemove { packages },
            dry_run: dry_run.unwrap_or(false),
            idempotent: false,
            live: None,
        };
        self.run(call, Request::Packages(change), reboot, interactive)
    }

    fn override_replace(
        &self,
        call: &mut dyn Call_OverrideReplace,
        packages: Vec<String>,
        dry_run: Option<bool>,
        reboot: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        if packages.is_empty() {
            return call.reply_invalid_parameter("packages".into());
        }
        let change = PackageRequest {
            change: PackageChange::OverrideReplace { packages },
            dry_run: dry_run.unwrap_or(false),
            idempotent: false,
            live: None,
        };
        self.run(call, Request::Packages(change), reboot, interactive)
    }

    fn override_reset(
        &self,
        call: &mut dyn Call_OverrideReset,
        packages: Vec<String>,
        all: Option<bool>,
        reboot: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let all = all.unwrap_or(false);
        if packages.is_empty() && !all {
            return call.reply_invalid_parameter("packages".into());
        }
        let change = PackageRequest {
            change: PackageChange::OverrideReset { packages, all },
            dry_run: false,
            idempotent: false,
            live: None,
        };
        self.run(call, Request::Packages(change), reboot, interactive)
    }

    fn change_kernel_arguments(
        &self,
        call: &mut dyn Call_ChangeKernelArguments,
        append: Option<Vec<String>>,
        delete: Option<Vec<String>>,
        replace: Option<Vec<String>>,
        append_if_missing: Option<Vec<String>>,
        delete_if_present: Option<Vec<String>>,
        reboot: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let change = KargsChange {
            append: append.unwrap_or_default(),
            delete: delete.unwrap_or_default(),
            replace: replace.unwrap_or_default(),
            append_if_missing: append_if_missing.unwrap_or_default(),
            delete_if_present: delete_if_present.unwrap_or_default(),
        };
        self.run(call, Request::KernelArguments(change), reboot, interactive)
    }

    fn initramfs(
        &self,
        call: &mut dyn Call_Initramfs,
        enable: bool,
        arguments: Option<Vec<String>>,
        reboot: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let request = Request::Initramfs {
            enable,
            arguments: arguments.unwrap_or_default(),
        };
        self.run(call, request, reboot, interactive)
    }

    fn reset(
        &self,
        call: &mut dyn Call_Reset,
        overlays: Option<bool>,
        overrides: Option<bool>,
        initramfs: Option<bool>,
        reboot: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let options = ResetOptions {
            overlays: overlays.unwrap_or(false),
            overrides: overrides.unwrap_or(false),
            initramfs: initramfs.unwrap_or(false),
        };
        self.run(call, Request::Reset(options), reboot, interactive)
    }

    fn apply_live(
        &self,
        call: &mut dyn Call_ApplyLive,
        reset: Option<bool>,
        allow_replacement: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let options = LiveOptions {
            reset: reset.unwrap_or(false),
            allow_replacement: allow_replacement.unwrap_or(false),
        };
        self.run(call, Request::ApplyLive(options), None, interactive)
    }

    fn usr_overlay(
        &self,
        call: &mut dyn Call_UsrOverlay,
        hotfix: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let request = Request::UsrOverlay {
            hotfix: hotfix.unwrap_or(false),
        };
        self.run(call, request, None, interactive)
    }

    fn update_bootloader(
        &self,
        call: &mut dyn Call_UpdateBootloader,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        self.run(call, Request::UpdateBootloader, None, interactive)
    }

    fn get_bootloader_status(
        &self,
        call: &mut dyn Call_GetBootloaderStatus,
    ) -> varlink::Result<()> {
        let result = self
            .daemon
            .reader
            .query(|s| crate::operations::bootloader_status(s));
        match result {
            Ok(report) => {
                let (installed, booted) = convert::bootloader(&report);
                call.reply(
                    report.esp.display().to_string(),
                    installed,
                    booted,
                    report.update_available,
                    crate::bootchain::system::secure_boot(),
                )
            }
            Err(e) => errors::reply(call, &e),
        }
    }

    fn refresh_metadata(
        &self,
        call: &mut dyn Call_RefreshMetadata,
        force: Option<bool>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let request = Request::RefreshMetadata {
            force: force.unwrap_or(false),
        };
        self.run(call, request, None, interactive)
    }
}
