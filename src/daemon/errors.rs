//! Engine errors on the wire: [`Error::to_wire`] names the IDL error and
//! fills its parameters (see `crate::error`, the one table of errors).
//!
//! Errors keep their `org.aptostree.Sysroot` names on every interface (the
//! Update interface runs Sysroot's transactions), so any call can send them.

use varlink::{CallTrait, Reply};

use crate::error::Error;

/// The IDL error reply for `err`.
pub fn to_reply(err: &Error) -> Reply {
    let (name, parameters) = err.to_wire();
    Reply::error(name, parameters)
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
