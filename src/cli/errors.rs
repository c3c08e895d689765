//! Turning error replies into sentences for people: an error of ours reads
//! as its message in `crate::error` (the one table), the rest by name.

use crate::error::Error;

/// The Varlink error reply under `err`, if that is what it is.
fn error_reply(err: &anyhow::Error) -> Option<&varlink::Reply> {
    err.chain()
        .filter_map(|e| e.downcast_ref::<varlink::Error>())
        .find_map(|v| match v.kind() {
            varlink::ErrorKind::VarlinkErrorReply(reply) => Some(reply),
            _ => None,
        })
}

/// The error of ours that the daemon replied with, if it is one.
pub fn ours(err: &anyhow::Error) -> Option<Error> {
    let reply = error_reply(err)?;
    Error::from_wire(reply.error.as_deref()?, reply.parameters.as_ref())
}

/// One line (or a few) that says what went wrong.
pub fn describe(err: &anyhow::Error) -> String {
    let Some(reply) = error_reply(err) else {
        return format!("{err:#}");
    };
    let name = reply.error.as_deref().unwrap_or("?");
    if let Some(ours) = Error::from_wire(name, reply.parameters.as_ref()) {
        return ours.to_string();
    }
    if name == "org.varlink.service.PermissionDenied" {
        let action = reply.parameters.as_ref().and_then(|p| p["action"].as_str());
        return match action {
            None | Some("root") => "permission denied: this needs root".into(),
            Some(action) => format!(
                "permission denied: {action} needs root, or authorization by polkit \
                 (an administrator's password, or a rule in /etc/polkit-1/rules.d)"
            ),
        };
    }
    match &reply.parameters {
        Some(p) => format!("{name} {p}"),
        None => name.to_string(),
    }
}
