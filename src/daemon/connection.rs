//! One client connection: framing, validation, dispatch.
//!
//! The varlink crate would read a message of any size and has no notion of who
//! is calling. Here each message is read up to a fixed limit, checked against
//! the IDL ([`super::contract`]), normalised (a missing or null `parameters`
//! becomes `{}`) and only then handed to the generated dispatcher. A `oneway`
//! call gets no reply, as the protocol says. Anything that is not a Varlink
//! message closes the connection; the daemon itself carries on.

use std::io::{self, BufRead, BufReader, Cursor, Write};
use std::os::unix::net::UnixStream;

use serde_json::{json, Value};
use varlink::{ConnectionHandler, VarlinkService};

use super::auth;
use super::contract::{Contract, Verdict};

/// Largest message accepted. Our biggest legitimate call (a long package list)
/// is a few kilobytes; sd-varlink allows 16 MiB, we need far less.
pub const MAX_MESSAGE: usize = 1024 * 1024;

#[derive(Debug)]
enum Frame {
    Message(Vec<u8>),
    Eof,
}

/// Read one NUL-terminated message (without the NUL), refusing oversized ones.
fn read_frame(reader: &mut impl BufRead) -> io::Result<Frame> {
    let mut message = Vec::new();
    loop {
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
        message.extend_from_slice(chunk);
        let consumed = done.unwrap_or(chunk.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(Frame::Message(message));
        }
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

/// Serve every call on `stream` until the client hangs up or breaks the protocol.
pub fn serve(stream: UnixStream, service: &VarlinkService) -> io::Result<()> {
    auth::set_current(auth::peer_of(&stream).ok());
    let mut reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
    let mut writer = stream;
    loop {
        let message = match read_frame(&mut reader)? {
            Frame::Eof => return Ok(()),
            Frame::Message(m) => m,
        };
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
            continue;
        }
        let mut framed = serde_json::to_vec(&request)?;
        framed.push(0);
        let mut input = Cursor::new(framed);
        let result = if oneway {
            service.handle(&mut input, &mut Discard, None)
        } else {
            service.handle(&mut input, &mut writer, None)
        };
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

    #[test]
    fn frames_split_on_nul_and_refuse_oversized_messages() {
        let mut input = Cursor::new(b"{\"a\":1}\0{}\0".to_vec());
        assert!(matches!(read_frame(&mut input).unwrap(), Frame::Message(m) if m == b"{\"a\":1}"));
        assert!(matches!(read_frame(&mut input).unwrap(), Frame::Message(m) if m == b"{}"));
        assert!(matches!(read_frame(&mut input).unwrap(), Frame::Eof));

        let mut truncated = Cursor::new(b"{\"method\":".to_vec());
        assert!(read_frame(&mut truncated).is_err());

        let mut huge = BufReader::new(Cursor::new(vec![b' '; MAX_MESSAGE + 10]));
        assert_eq!(
            read_frame(&mut huge).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
