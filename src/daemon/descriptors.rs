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
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io::{self, BufRead, IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// Most descriptors one message may carry. A call names a few local packages;
/// more is refused (the connection is closed).
pub const MAX_PER_MESSAGE: usize = 8;

/// Most descriptors all connections together may hold before their calls
/// end: the unit's LimitNOFILE (1024) must keep room for connections,
/// transactions and the programs they run.
const BUDGET: usize = 128;
/// What one user other than root may hold: two whole messages.
const PER_USER: usize = 2 * MAX_PER_MESSAGE;
/// Of [`BUDGET`], what only root may use, so that root's calls go through
/// when other users hold the rest.
const ROOT_RESERVE: usize = 2 * MAX_PER_MESSAGE;

/// Descriptors held in unfinished calls, in all and per user: one local
/// user cannot take what another's install needs.
struct Budget {
    held: std::sync::Mutex<(usize, BTreeMap<u32, usize>)>,
}

impl Budget {
    const fn new() -> Budget {
        Budget {
            held: std::sync::Mutex::new((0, BTreeMap::new())),
        }
    }

    fn take(&self, uid: u32, n: usize) -> bool {
        let mut held = self.held.lock().expect("budget lock");
        let (total, per_user) = &mut *held;
        let mine = per_user.get(&uid).copied().unwrap_or(0);
        let others = *total - per_user.get(&0).copied().unwrap_or(0);
        let fits = if uid == 0 {
            *total + n <= BUDGET
        } else {
            mine + n <= PER_USER && others + n <= BUDGET - ROOT_RESERVE
        };
        if fits {
            *total += n;
            per_user.insert(uid, mine + n);
        }
        fits
    }

    fn give(&self, uid: u32, n: usize) {
        let mut held = self.held.lock().expect("budget lock");
        let (total, per_user) = &mut *held;
        *total -= n;
        if let Some(mine) = per_user.get_mut(&uid) {
            *mine -= n;
            if *mine == 0 {
                per_user.remove(&uid);
            }
        }
    }
}

static HELD: Budget = Budget::new();

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
    /// Who sent them, whose budget they count against.
    uid: u32,
    /// Descriptors of this connection counted against [`BUDGET`]: not yet
    /// claimed, or handed to the call being served.
    charged: usize,
    /// Of those, the ones handed to the current call.
    in_call: usize,
}

impl<'a> SocketReader<'a> {
    /// A reader for a connection of user `uid`.
    pub fn new(stream: &'a UnixStream, capacity: usize, uid: u32) -> Self {
        SocketReader {
            uid,
            stream,
            buf: vec![0; capacity],
            start: 0,
            end: 0,
            received: 0,
            consumed: 0,
            arrivals: VecDeque::new(),
            charged: 0,
            in_call: 0,
        }
    }

    /// The current call is over and its descriptors are closed (or owned by
    /// a transaction, at most one at a time): give their budget back.
    pub fn call_ended(&mut self) {
        HELD.give(self.uid, self.in_call);
        self.charged -= self.in_call;
        self.in_call = 0;
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
            } else {
                // Closed as it drops.
                HELD.give(self.uid, batch.len());
                self.charged -= batch.len();
            }
        }
        if fds.len() > MAX_PER_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {MAX_PER_MESSAGE} file descriptors in one message"),
            ));
        }
        self.in_call += fds.len();
        Ok(fds)
    }

    fn receive(&mut self) -> io::Result<usize> {
        // Room for one message's worth: the kernel installs what fits and
        // drops the rest (MSG_CTRUNC), which closes the connection.
        let mut control = nix::cmsg_space!([RawFd; MAX_PER_MESSAGE]);
        let mut iov = [IoSliceMut::new(&mut self.buf)];
        let (bytes, fds, truncated) = loop {
            match recvmsg::<UnixAddr>(
                self.stream.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                    let mut fds = Vec::new();
                    if !truncated {
                        for cmsg in msg.cmsgs().map_err(io::Error::from)? {
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
                    }
                    break (msg.bytes, fds, truncated);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if truncated {
            close_received(&control);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("more than {MAX_PER_MESSAGE} file descriptors in one message"),
            ));
        }
        self.received += bytes as u64;
        if fds.is_empty() {
            return Ok(bytes);
        }
        let pending: usize = self.arrivals.iter().map(|(_, b)| b.len()).sum();
        if bytes == 0 || pending + fds.len() > MAX_PER_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "file descriptors without a message to claim them",
            ));
        }
        if !HELD.take(self.uid, fds.len()) {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "too many file descriptors held by unfinished calls",
            ));
        }
        self.charged += fds.len();
        self.arrivals.push_back((self.received - 1, fds));
        Ok(bytes)
    }
}

impl Drop for SocketReader<'_> {
    fn drop(&mut self) {
        HELD.give(self.uid, self.charged);
    }
}

/// Close the descriptors of a truncated control message, which nix will not
/// hand over (the kernel installed those that fitted).
fn close_received(control: &[u8]) {
    // SAFETY: `control` is the buffer recvmsg filled; the CMSG_* macros walk
    // it within its length, and each descriptor in an SCM_RIGHTS message is
    // ours alone to close.
    #[allow(unsafe_code)]
    unsafe {
        let mut header: libc::msghdr = std::mem::zeroed();
        header.msg_control = control.as_ptr() as *mut libc::c_void;
        header.msg_controllen = control.len() as _;
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let count = ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    libc::close(std::ptr::read_unaligned(data.add(i)));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
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
        let mut reader = SocketReader::new(&b, 4096, 0);
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
        let mut reader = SocketReader::new(&b, 4096, 0);
        let mut message = Vec::new();
        // The kernel truncates the control data: the connection is refused
        // (and what was installed closed).
        assert!(reader.read_until(0, &mut message).is_err());
    }

    #[test]
    fn descriptors_that_no_message_claims_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        let raw = vec![file.as_raw_fd(); MAX_PER_MESSAGE];
        // A message begun with 8 descriptors, then 8 more before it ends.
        send(&a, b"start", &raw);
        send(&a, b" more", &raw);
        let mut reader = SocketReader::new(&b, 4096, 0);
        let mut message = Vec::new();
        assert!(reader.read_until(0, &mut message).is_err());
    }

    /// One user at their share cannot make another's call fail, and root
    /// is served when every other user together holds all they may.
    #[test]
    fn each_user_has_a_share_of_the_descriptor_budget() {
        let budget = Budget::new();
        assert!(budget.take(1000, PER_USER));
        assert!(!budget.take(1000, 1), "one user past their share");
        assert!(budget.take(1001, MAX_PER_MESSAGE), "another user refused");
        budget.give(1001, MAX_PER_MESSAGE);
        let others = (BUDGET - ROOT_RESERVE) / PER_USER;
        for uid in 2000..2000 + others as u32 - 1 {
            assert!(budget.take(uid, PER_USER));
        }
        assert!(
            !budget.take(3000, 1),
            "users other than root past the total"
        );
        assert!(budget.take(0, ROOT_RESERVE), "root refused");
        assert!(!budget.take(0, 1));
        budget.give(1000, PER_USER);
        assert!(budget.take(3000, 1), "a share given back is not free again");
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
