//! File descriptors that arrive with a call (SCM_RIGHTS).
//!
//! The varlink crate reads plain bytes, so the connection reads with
//! `recvmsg` here. As with sd-varlink, a parameter names a descriptor by its
//! index among those sent with its message. The kernel ends a read right after
//! the data that carried descriptors, so the descriptors of one `recvmsg`
//! belong to the message that contains the last byte of that read. Each call's
//! descriptors are kept in a thread-local (one connection per thread, as with
//! the caller's credentials) for the method adapters to take; what they leave
//! is closed when the call ends.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, BufRead, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// Most descriptors one message may carry. A call names a few local packages;
/// more is refused (the connection is closed).
pub const MAX_PER_MESSAGE: usize = 8;

/// The kernel's own limit per `sendmsg` (SCM_MAX_FD): room for that many, so
/// that the control data is never truncated (a truncated read would install
/// descriptors we could not see to close).
const KERNEL_MAX: usize = 253;

thread_local! {
    static CURRENT: RefCell<Vec<Option<OwnedFd>>> = const { RefCell::new(Vec::new()) };
}

/// Make `fds` the descriptors of the call this thread serves now.
pub fn set_current(fds: Vec<OwnedFd>) {
    CURRENT.with(|c| *c.borrow_mut() = fds.into_iter().map(Some).collect());
}

/// Take the descriptors that `indexes` name from the current call. None when
/// an index names no descriptor sent with the call, or one taken already.
pub fn take(indexes: &[i64]) -> Option<Vec<OwnedFd>> {
    CURRENT.with(|c| {
        let mut current = c.borrow_mut();
        let mut seen = std::collections::HashSet::new();
        for &i in indexes {
            let usable = usize::try_from(i)
                .ok()
                .filter(|&i| current.get(i).is_some_and(Option::is_some));
            if usable.is_none() || !seen.insert(i) {
                return None;
            }
        }
        Some(
            indexes
                .iter()
                .map(|&i| current[i as usize].take().expect("checked above"))
                .collect(),
        )
    })
}

/// A buffered reader over a connected socket that keeps the descriptors
/// received with the bytes, tagged with where in the stream they arrived.
pub struct SocketReader<'a> {
    stream: &'a UnixStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes received from the socket so far.
    received: u64,
    /// Bytes handed on (consumed) so far.
    consumed: u64,
    /// Descriptors, with the stream position of the last byte of their read.
    arrivals: VecDeque<(u64, Vec<OwnedFd>)>,
}

impl<'a> SocketReader<'a> {
    pub fn new(stream: &'a UnixStream, capacity: usize) -> Self {
        SocketReader {
            stream,
            buf: vec![0; capacity],
            start: 0,
            end: 0,
            received: 0,
            consumed: 0,
            arrivals: VecDeque::new(),
        }
    }

    /// Stream position of the next byte to be consumed.
    pub fn position(&self) -> u64 {
        self.consumed
    }

    /// The descriptors of the message that spans `[from, to)` in the stream.
    /// Ones that arrived before it belonged to no call that took them and are
    /// closed. Too many for one message is an error.
    pub fn take_for(&mut self, from: u64, to: u64) -> io::Result<Vec<OwnedFd>> {
        let mut fds = Vec::new();
        while let Some((at, _)) = self.arrivals.front() {
            if *at >= to {
                break;
            }
            let (at, batch) = self.arrivals.pop_front().expect("front exists");
            if at >= from {
                fds.extend(batch);
            }
        }
        if fds.len() > MAX_PER_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {MAX_PER_MESSAGE} file descriptors in one message"),
            ));
        }
        Ok(fds)
    }

    fn receive(&mut self) -> io::Result<usize> {
        let mut control = nix::cmsg_space!([RawFd; KERNEL_MAX]);
        let mut iov = [IoSliceMut::new(&mut self.buf)];
        let (bytes, fds) = loop {
            match recvmsg::<UnixAddr>(
                self.stream.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    let cmsgs = msg.cmsgs().map_err(io::Error::from)?;
                    for cmsg in cmsgs {
                        if let ControlMessageOwned::ScmRights(raw) = cmsg {
                            // SAFETY: the kernel just installed these
                            // descriptors in this process for us alone.
                            #[allow(unsafe_code)]
                            fds.extend(
                                raw.into_iter()
                                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                    break (msg.bytes, fds);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        self.received += bytes as u64;
        if !fds.is_empty() {
            if bytes == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "file descriptors without data",
                ));
            }
            self.arrivals.push_back((self.received - 1, fds));
            if self.arrivals.len() > MAX_PER_MESSAGE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "too many file descriptors not yet claimed",
                ));
            }
        }
        Ok(bytes)
    }
}

impl Read for SocketReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for SocketReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            let n = self.receive()?;
            self.start = 0;
            self.end = n;
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, amount: usize) {
        let amount = amount.min(self.end - self.start);
        self.start += amount;
        self.consumed += amount as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{sendmsg, ControlMessage};
    use std::io::IoSlice;
    use std::os::fd::AsFd;

    fn send(stream: &UnixStream, data: &[u8], fds: &[RawFd]) {
        let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
            vec![]
        } else {
            vec![ControlMessage::ScmRights(fds)]
        };
        sendmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &[IoSlice::new(data)],
            &cmsgs,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }

    fn frame(reader: &mut SocketReader) -> (Vec<u8>, Vec<OwnedFd>) {
        let from = reader.position();
        let mut message = Vec::new();
        reader.read_until(0, &mut message).unwrap();
        let fds = reader.take_for(from, reader.position()).unwrap();
        (message, fds)
    }

    #[test]
    fn descriptors_belong_to_the_message_that_carried_them() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        // Sent before the reader reads anything: the kernel may hand the
        // first message and the second's bytes over in one read.
        send(&a, b"first\0", &[]);
        send(&a, b"second\0", &[file.as_fd().as_raw_fd()]);
        send(&a, b"third\0", &[]);
        let mut reader = SocketReader::new(&b, 4096);
        let (m, fds) = frame(&mut reader);
        assert_eq!((m.as_slice(), fds.len()), (&b"first\0"[..], 0));
        let (m, fds) = frame(&mut reader);
        assert_eq!((m.as_slice(), fds.len()), (&b"second\0"[..], 1));
        let (m, fds) = frame(&mut reader);
        assert_eq!((m.as_slice(), fds.len()), (&b"third\0"[..], 0));
    }

    #[test]
    fn too_many_descriptors_in_one_message_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let raw = vec![file.as_raw_fd(); MAX_PER_MESSAGE + 1];
        send(&a, b"many\0", &raw);
        let mut reader = SocketReader::new(&b, 4096);
        let mut message = Vec::new();
        reader.read_until(0, &mut message).unwrap();
        assert!(reader.take_for(0, reader.position()).is_err());
    }

    #[test]
    fn indexes_name_each_descriptor_once() {
        let file = || OwnedFd::from(std::fs::File::open("/proc/self/exe").unwrap());
        set_current(vec![file(), file()]);
        assert!(take(&[2]).is_none());
        assert!(take(&[-1]).is_none());
        assert!(take(&[0, 0]).is_none());
        assert_eq!(take(&[1, 0]).map(|v| v.len()), Some(2));
        assert!(take(&[0]).is_none(), "taken already");
    }
}
