//! `org.aptostree.Update`: sysupdate-style calls, each a thin adapter that
//! runs one of Sysroot's transactions (or queries) and waits for it.

use std::sync::Arc;

use super::stream::send as reply;
use super::{auth, errors, Daemon};
use crate::error::Error;
use crate::operations::Outcome;
use crate::operations::{self, CleanupOptions, ImageVersion, UpgradeOptions};
use crate::protocol::update::*;
use crate::transaction::{Job, Request};

pub struct UpdateInterface {
    daemon: Arc<Daemon>,
}

impl UpdateInterface {
    pub fn new(daemon: Arc<Daemon>) -> UpdateInterface {
        UpdateInterface { daemon }
    }

    /// Run `request` as a transaction, wait for it, and hand its outcome to
    /// `done`; an error (starting or from the transaction) is the reply.
    fn transact<C: varlink::CallTrait + ?Sized>(
        &self,
        call: &mut C,
        request: Request,
        interactive: Option<bool>,
        done: impl FnOnce(&mut C, &Outcome) -> varlink::Result<()>,
    ) -> varlink::Result<()> {
        if let Err(denied) = auth::authorize_request(&request, interactive.unwrap_or(false)) {
            return errors::permission_denied(call, &denied);
        }
        let job = Job {
            request,
            reboot: false,
        };
        let tx = match self.daemon.transactions.start(job, auth::initiator()) {
            Ok(tx) => tx,
            Err(e) => return errors::reply(call, &e),
        };
        match tx.wait().as_ref() {
            Ok(outcome) => done(call, outcome),
            Err(e) => errors::reply(call, e),
        }
    }
}

fn version(v: &ImageVersion) -> Version {
    Version {
        version: v.version.clone(),
        checksum: v.checksum.clone(),
        timestamp: v.timestamp as i64,
        installed: v.installed,
        current: v.current,
        newer: v.newer,
    }
}

impl VarlinkInterface for UpdateInterface {
    fn list_versions(&self, call: &mut dyn Call_ListVersions) -> varlink::Result<()> {
        match self.daemon.reader.query(operations::versions) {
            Ok(versions) => call.reply(versions.iter().map(version).collect()),
            Err(e) => errors::reply(call, &e),
        }
    }

    fn check_new(
        &self,
        call: &mut dyn Call_CheckNew,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let check = UpgradeOptions {
            check: true,
            ..Default::default()
        };
        self.transact(
            call,
            Request::Upgrade(check),
            interactive,
            |call, outcome| {
                let newer = outcome.update.as_ref().map(|u| Version {
                    version: u.version.clone().unwrap_or_else(|| u.checksum.clone()),
                    checksum: u.checksum.clone(),
                    timestamp: u.timestamp as i64,
                    installed: false,
                    current: false,
                    newer: true,
                });
                reply(call, CheckNew_Reply { newer })
            },
        )
    }

    fn update(
        &self,
        call: &mut dyn Call_Update,
        version: Option<String>,
        interactive: Option<bool>,
    ) -> varlink::Result<()> {
        let request = match version {
            None => Request::Upgrade(UpgradeOptions::default()),
            // Naming a version is the explicit request, older or not.
            Some(v) => Request::Deploy {
                revision: v,
                allow_downgrade: true,
                from: None,
            },
        };
        let reader = &self.daemon.reader;
        self.transact(call, request, interactive, |call, outcome| {
            match reader.query(|s| Ok(operations::versions(s)?.into_iter().find(|v| v.current))) {
                Ok(Some(v)) => reply(
                    call,
                    Update_Reply {
                        version: v.version,
                        checksum: v.checksum,
                        rebootRequired: outcome.reboot_required,
                    },
                ),
                Ok(None) => errors::reply(
                    call,
                    &Error::NoDeployment {
                        reason: "no current version".into(),
                    },
                ),
                Err(e) => errors::reply(call, &e),
            }
        })
    }

    fn vacuum(&self, call: &mut dyn Call_Vacuum, interactive: Option<bool>) -> varlink::Result<()> {
        let options = CleanupOptions {
            rollback: true,
            base: true,
            ..Default::default()
        };
        self.transact(
            call,
            Request::Cleanup(options),
            interactive,
            |call, outcome| {
                reply(
                    call,
                    Vacuum_Reply {
                        message: outcome.message.clone(),
                    },
                )
            },
        )
    }
}
