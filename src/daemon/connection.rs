//! One client connection: framing, validation, dispatch.
//!
//! The varlink crate would read a message of any size and has no notion of who
//! is calling. Here each message is read up to a fixed limit, checked against
//! the IDL ([`super::contract`]), normalised (a missing or null `parameters`
//! becomes `{}`) and only then handed to the generated dispatcher. A `oneway`
//! call gets no reply, as the protocol says. Anything that is not a Varlink
//! message closes the connection; the daemon itself carries on. A message
//! that has begun must end within [`limits::MESSAGE_DEADLINE`], and its bytes
//! count against the budget all partly received messages share.

use std::io::{self, BufRead, Cursor, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use varlink::{ConnectionHandler, VarlinkService};

use super::auth;
use super::contract::{Contract, Verdict};
use super::descriptors::{self, SocketReader};
use super::limits::{self, Limits};

/// Largest message accepted. Our biggest legitimate call (a long package list)
/// is a few kilobytes; sd-varlink allows 16 MiB, we need far less.
pub const MAX_MESSAGE: usize = 1024 * 1024;

#[derive(Debug)]
enum Frame {
    Message(Vec<u8>),
    Eof,
}

/// Read one NUL-terminated message (without the NUL), refusing oversized
/// ones, ones that take longer than the deadline once begun (`set_timeout`
/// bounds each read), and bytes beyond the shared budget.
fn read_frame(
    reader: &mut impl BufRead,
    limits: &Limits,
    mut set_timeout: impl FnMut(Option<Duration>) -> io::Result<()>,
) -> io::Result<Frame> {
    let mut charged = 0;
    let result = read_frame_charged(reader, limits, &mut charged, &mut set_timeout);
    limits.give_partial(charged);
    result
}

fn read_frame_charged(
    reader: &mut impl BufRead,
    limits: &Limits,
    charged: &mut usize,
    set_timeout: &mut impl FnMut(Option<Duration>) -> io::Result<()>,
) -> io::Result<Frame> {
    let mut message = Vec::new();
    // Waiting for a message to begin takes as long as the client likes.
    set_timeout(None)?;
    let mut deadline: Option<Instant> = None;
    loop {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "message not finished in time",
                ));
            }
            set_timeout(Some(left))?;
        }
        let available = reader.fill_buf()?;
        if available.is_empty() {
            if message.is_empty() {
                return Ok(Frame::Eof);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a message",
            ));
        }
        let (chunk, done) = match available.iter().position(|&b| b == 0) {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if message.len() + chunk.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message larger than {MAX_MESSAGE} bytes"),
            ));
        }
        if !limits.take_partial(chunk.len()) {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "too many bytes of unfinished messages",
            ));
        }
        *charged += chunk.len();
        message.extend_from_slice(chunk);
        let consumed = done.unwrap_or(chunk.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(Frame::Message(message));
        }
        deadline.get_or_insert_with(|| Instant::now() + limits::MESSAGE_DEADLINE);
    }
}

/// The replies of one call, each made to follow the schema's one rule for
/// absent values ([`crate::protocol::omit_absent`]) on its way out.
struct Replies<'a, W: Write> {
    inner: &'a mut W,
    pending: Vec<u8>,
}

impl<W: Write> Write for Replies<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|&b| b == 0) {
            let message: Vec<u8> = self.pending.drain(..=end).collect();
            let body = &message[..message.len() - 1];
            match serde_json::from_slice::<Value>(body) {
                Ok(mut reply) => {
                    crate::protocol::omit_absent(&mut reply);
                    let mut bytes = serde_json::to_vec(&reply)?;
                    bytes.push(0);
                    self.inner.write_all(&bytes)?;
                }
                Err(_) => self.inner.write_all(&message)?,
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer that drops everything: the reply sink of `oneway` calls.
struct Discard;

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_error(writer: &mut impl Write, error: &str, parameters: Value) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(&json!({ "error": error, "parameters": parameters }))?;
    bytes.push(0);
    writer.write_all(&bytes)?;
    writer.flush()
}

/// Serve every call on `stream` until the client hangs up or breaks the
/// protocol. One descriptor per connection: reads and writes share it.
pub fn serve(stream: UnixStream, service: &VarlinkService, limits: &Limits) -> io::Result<()> {
    let peer = auth::peer_of(&stream).ok();
    auth::set_current(peer);
    // An unknown peer counts as nobody, never as root.
    let uid = peer.as_ref().map_or(u32::MAX, |p| p.uid);
    let mut reader = SocketReader::new(&stream, 64 * 1024, uid);
    let mut writer = &stream;
    loop {
        let from = reader.position();
        let message = match read_frame(&mut reader, limits, |t| stream.set_read_timeout(t))? {
            Frame::Eof => return Ok(()),
            Frame::Message(m) => m,
        };
        // Taken (or closed) with this call, whatever becomes of it.
        descriptors::set_current(reader.take_for(from, reader.position())?);
        let mut request: Value = serde_json::from_slice(&message)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let Some(obj) = request.as_object_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message is not an object",
            ));
        };
        let method = match obj.get("method").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "message has no method",
                ))
            }
        };
        if obj.get("parameters").is_none_or(Value::is_null) {
            obj.insert("parameters".into(), json!({}));
        }
        let oneway = obj.get("oneway").and_then(Value::as_bool) == Some(true);
        tracing::debug!(method, oneway, "call");
        if let Verdict::InvalidParameter(field) = Contract::get().check(&method, &obj["parameters"])
        {
            if !oneway {
                write_error(
                    &mut writer,
                    "org.varlink.service.InvalidParameter",
                    json!({ "parameter": field }),
                )?;
            }
            descriptors::set_current(Vec::new());
            reader.call_ended();
            continue;
        }
        let mut framed = serde_json::to_vec(&request)?;
        framed.push(0);
        let mut input = Cursor::new(framed);
        let result = if oneway {
            service.handle(&mut input, &mut Discard, None)
        } else {
            let mut replies = Replies {
                inner: &mut writer,
                pending: Vec::new(),
            };
            service.handle(&mut input, &mut replies, None)
        };
        descriptors::set_current(Vec::new());
        reader.call_ended();
        if let Err(e) = result {
            // The reply (an error, if one was due) has been written; an I/O
            // error means the client is gone.
            if let varlink::ErrorKind::Io(_) = e.kind() {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()));
            }
            tracing::debug!("{method}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn frame(input: &mut impl BufRead, limits: &Limits) -> io::Result<Frame> {
        read_frame(input, limits, |_| Ok(()))
    }

    #[test]
    fn frames_split_on_nul_and_refuse_oversized_messages() {
        let limits = Limits::for_open_files(1024);
        let mut input = Cursor::new(b"{\"a\":1}\0{}\0".to_vec());
        assert!(
            matches!(frame(&mut input, &limits).unwrap(), Frame::Message(m) if m == b"{\"a\":1}")
        );
        assert!(matches!(frame(&mut input, &limits).unwrap(), Frame::Message(m) if m == b"{}"));
        assert!(matches!(frame(&mut input, &limits).unwrap(), Frame::Eof));

        let mut truncated = Cursor::new(b"{\"method\":".to_vec());
        assert!(frame(&mut truncated, &limits).is_err());

        let mut huge = BufReader::new(Cursor::new(vec![b' '; MAX_MESSAGE + 10]));
        assert_eq!(
            frame(&mut huge, &limits).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // Whatever happened, the shared budget is whole again.
        assert!(limits.take_partial(limits::PARTIAL_BUDGET));
    }

    #[test]
    fn a_message_that_overruns_the_shared_budget_is_refused() {
        let limits = Limits::for_open_files(1024);
        assert!(limits.take_partial(limits::PARTIAL_BUDGET - 4));
        let mut input = Cursor::new(b"{\"method\":\"x\"}\0".to_vec());
        assert_eq!(
            frame(&mut input, &limits).unwrap_err().kind(),
            io::ErrorKind::OutOfMemory
        );
    }
}
