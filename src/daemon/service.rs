//! `io.systemd.service`: the generic control interface systemd's own Varlink
//! services answer, so the usual tools can ping us and change our log level.

use std::sync::Arc;

use super::{auth, errors, Daemon};
use crate::logging;
use crate::protocol::service::*;

pub struct ServiceInterface {
    daemon: Arc<Daemon>,
}

impl ServiceInterface {
    pub fn new(daemon: Arc<Daemon>) -> ServiceInterface {
        ServiceInterface { daemon }
    }
}

impl VarlinkInterface for ServiceInterface {
    fn ping(&self, call: &mut dyn Call_Ping) -> varlink::Result<()> {
        call.reply()
    }

    fn reload(&self, call: &mut dyn Call_Reload) -> varlink::Result<()> {
        if let Err(denied) = auth::authorize(auth::Action::Reload, false) {
            return errors::permission_denied(call, &denied);
        }
        self.daemon.reload();
        call.reply()
    }

    fn set_log_level(&self, call: &mut dyn Call_SetLogLevel, level: i64) -> varlink::Result<()> {
        if let Err(denied) = auth::root_only() {
            return errors::permission_denied(call, &denied);
        }
        let Some(filter) = logging::level_from_syslog(level) else {
            return call.reply_invalid_parameter("level".into());
        };
        if let Some(handle) = &self.daemon.log_level {
            if let Err(e) = handle.modify(|f| *f = filter) {
                tracing::warn!("Changing the log level: {e}");
            }
        }
        tracing::info!("Log level set to {filter}");
        call.reply()
    }

    fn get_environment(&self, call: &mut dyn Call_GetEnvironment) -> varlink::Result<()> {
        if let Err(denied) = auth::root_only() {
            return errors::permission_denied(call, &denied);
        }
        call.reply(std::env::vars().map(|(k, v)| format!("{k}={v}")).collect())
    }
}
