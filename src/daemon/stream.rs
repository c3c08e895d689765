//! Replying to a transaction method: progress while it runs (with `more`),
//! then its result or its typed error.

use super::{convert, errors};
use crate::protocol::sysroot::{VarlinkCallError, Watch_Reply};
use crate::transaction::Transaction;

/// Send a generated reply type through any call. Every transaction method
/// replies with the same shape (`Watch_Reply` is the generated type for it).
pub fn send<C: varlink::CallTrait + ?Sized, T: serde::Serialize>(
    call: &mut C,
    reply: T,
) -> varlink::Result<()> {
    let value = serde_json::to_value(reply).map_err(varlink::map_context!())?;
    call.reply_struct(varlink::Reply::parameters(Some(value)))
}

/// Follow `tx` to its end on `call`. If the client goes away, this returns an
/// error and the transaction carries on undisturbed. Log lines (apt's URLs,
/// maintainer scripts' output) go only to root and to whoever started the
/// transaction; other watchers see its steps, progress and result.
pub fn follow<C: VarlinkCallError + ?Sized>(call: &mut C, tx: &Transaction) -> varlink::Result<()> {
    let more = call.wants_more();
    let caller = super::auth::current().uid;
    let show_logs = caller == 0 || caller == tx.info().initiator_uid;
    let mut position = 0;
    loop {
        let (events, outcome) = tx.next(position);
        position += events.len();
        if more {
            call.set_continues(true);
            for event in events
                .iter()
                .filter(|e| show_logs || !matches!(e, crate::progress::Event::Log(_)))
            {
                send(
                    call,
                    Watch_Reply {
                        progress: Some(convert::progress(tx.id(), event)),
                        result: None,
                    },
                )?;
            }
        }
        if let Some(outcome) = outcome {
            call.set_continues(false);
            return match outcome.as_ref() {
                Ok(o) => send(
                    call,
                    Watch_Reply {
                        progress: None,
                        result: Some(convert::outcome(tx.id(), o)),
                    },
                ),
                Err(e) => errors::reply(call, e),
            };
        }
    }
}
