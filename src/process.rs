//! Running other programs, one way: stdin closed, what they print kept, and
//! every failure naming the command, how it ended and what it said.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result};

use crate::progress::Sink;

/// What a command printed and how it ended.
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `cmd` and keep what it prints; an error only if it cannot start.
pub fn capture(cmd: &mut Command) -> Result<Captured> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("Running {}", shown(cmd)))?;
    Ok(out.into())
}

impl From<std::process::Output> for Captured {
    fn from(out: std::process::Output) -> Captured {
        Captured {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Run `cmd` to success and return its trimmed standard output; otherwise
/// an error with the command, its exit status and its output.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = capture(cmd)?;
    succeeded(cmd, out)
}

/// [`run`], with `input` on the command's standard input.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("Running {}", shown(cmd)))?;
    let mut stdin = child.stdin.take().expect("piped");
    // Written beside the reader: a command may print before it has read all.
    let out = std::thread::scope(|scope| {
        let writer = scope.spawn(move || std::io::Write::write_all(&mut stdin, input));
        let out = child.wait_with_output();
        // A command may exit without reading everything; its status says how it went.
        let _ = writer.join();
        out
    })
    .with_context(|| format!("Running {}", shown(cmd)))?;
    succeeded(cmd, out.into())
}

fn succeeded(cmd: &Command, out: Captured) -> Result<String> {
    if !out.status.success() {
        anyhow::bail!(
            "{} failed ({}):\n{}{}",
            shown(cmd),
            out.status,
            out.stdout,
            out.stderr
        );
    }
    Ok(out.stdout.trim().to_string())
}

/// What a command printed (the last of it: stdout and stderr interleaved by
/// line) and how it ended.
pub struct Logged {
    pub status: ExitStatus,
    /// The tail of the output, at most [`TAIL_BYTES`] of stdout then as much
    /// of stderr, each with a first line saying how many lines came before
    /// it (all of them are in the journal).
    pub text: String,
}

/// How much of a command's output a reply or a failure report carries.
pub const TAIL_BYTES: usize = 16 * 1024;

/// Longest line passed on as one: a longer one is passed on in pieces, so
/// that a program printing megabytes without a newline costs no memory.
pub const MAX_LINE: usize = 4096;

/// The last lines of some output, within [`TAIL_BYTES`].
#[derive(Default)]
struct Tail {
    lines: std::collections::VecDeque<String>,
    bytes: usize,
    dropped: usize,
}

impl Tail {
    fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > TAIL_BYTES {
            let old = self.lines.pop_front().expect("over budget, so not empty");
            self.bytes -= old.len() + 1;
            self.dropped += 1;
        }
    }

    fn text(self) -> String {
        let mut out = Vec::new();
        if self.dropped > 0 {
            out.push(format!(
                "[{} earlier lines not shown; the journal has them all]",
                self.dropped
            ));
        }
        out.extend(self.lines);
        out.join("\n")
    }
}

/// Call `f` with each line `reader` yields (without its newline, invalid
/// UTF-8 replaced), a line longer than [`MAX_LINE`] in pieces. Reads to the
/// end whatever comes: a writer must never lose its reader (it would die of
/// SIGPIPE on its next write).
fn each_line(reader: impl std::io::Read, mut f: impl FnMut(String)) {
    let mut reader = BufReader::with_capacity(MAX_LINE, reader);
    let mut line = Vec::new();
    loop {
        let available = match reader.fill_buf() {
            Ok([]) => break,
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let room = MAX_LINE - line.len();
        let (take, ends) = match available.iter().take(room).position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (
                available.len().min(room),
                line.len() + available.len() >= MAX_LINE,
            ),
        };
        line.extend_from_slice(&available[..take]);
        reader.consume(take);
        if ends {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            f(String::from_utf8_lossy(&line).into_owned());
            line.clear();
        }
    }
    if !line.is_empty() {
        f(String::from_utf8_lossy(&line).into_owned());
    }
}

/// Run `cmd`, sending each line it prints to `sink` as it appears (for
/// long work a user watches: maintainer scripts, mmdebstrap, skopeo), and
/// keep the tail of it.
pub fn run_logged(cmd: &mut Command, sink: &Sink) -> Result<Logged> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("Running {}", shown(cmd)))?;
    // A tail per stream: the two pipes are read at their own pace, so an
    // error's last words on stderr must not be pushed out by stdout lines
    // that were written before them but read after.
    let stderr = child.stderr.take().expect("piped");
    let err_sink = sink.clone();
    let errors = std::thread::spawn(move || {
        let mut tail = Tail::default();
        each_line(stderr, |line| {
            err_sink.log(&line);
            tail.push(line);
        });
        tail
    });
    let mut out_tail = Tail::default();
    each_line(child.stdout.take().expect("piped"), |line| {
        sink.log(&line);
        out_tail.push(line);
    });
    let status = child
        .wait()
        .with_context(|| format!("Waiting for {}", shown(cmd)))?;
    let err_tail = errors.join().unwrap_or_default();
    let text = [out_tail.text(), err_tail.text()]
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Logged { status, text })
}

/// The program and its arguments, as a user would type them.
fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Event, ProgressSink};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);
    impl ProgressSink for Lines {
        fn emit(&self, event: Event) {
            if let Event::Log(l) = event {
                self.0.lock().unwrap().push(l);
            }
        }
        fn cancel_requested(&self) -> bool {
            false
        }
        fn id(&self) -> &str {
            "test"
        }
    }

    #[test]
    fn a_failure_names_the_command_and_what_it_said() {
        let err = run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("sh -c echo out; echo err >&2; exit 3 failed"),
            "{err}"
        );
        assert!(err.contains("out") && err.contains("err"), "{err}");
        assert_eq!(run(Command::new("echo").arg(" hi ")).unwrap(), "hi");
        let missing = run(&mut Command::new("/nonexistent/program")).unwrap_err();
        assert!(format!("{missing:#}").contains("/nonexistent/program"));
    }

    #[test]
    fn input_reaches_the_command() {
        let out = run_with_input(Command::new("wc").arg("-l"), b"a\nb\nc\n").unwrap();
        assert_eq!(out, "3");
        let err = run_with_input(Command::new("sh").args(["-c", "exit 4"]), b"x").unwrap_err();
        assert!(err.to_string().contains("exit status: 4"), "{err}");
    }

    #[test]
    fn output_that_is_not_utf8_is_read_to_the_end() {
        let lines = Arc::new(Lines::default());
        let sink: Sink = lines.clone();
        // A Latin-1 line, then more: the writer must not get SIGPIPE.
        let ran = run_logged(
            Command::new("sh").args(["-c", "printf 'caf\\351\\n'; echo after; echo late >&2"]),
            &sink,
        )
        .unwrap();
        assert!(ran.status.success(), "{}", ran.text);
        assert!(
            ran.text.contains("after") && ran.text.contains("late"),
            "{}",
            ran.text
        );
        assert_eq!(lines.0.lock().unwrap().len(), 3);
    }

    #[test]
    fn huge_output_is_read_to_the_end_and_only_its_tail_kept() {
        let lines = Arc::new(Lines::default());
        let sink: Sink = lines.clone();
        // 4 MB in lines, then 1 MB without a newline, then a last line.
        let ran = run_logged(
            Command::new("sh").args([
                "-c",
                "yes 'some output' | head -c 4000000; head -c 1000000 /dev/zero | tr '\\0' x; echo; echo the end",
            ]),
            &sink,
        )
        .unwrap();
        assert!(ran.status.success());
        assert!(ran.text.len() <= TAIL_BYTES + 100, "{}", ran.text.len());
        assert!(ran.text.starts_with('['), "{}", &ran.text[..80]);
        assert!(ran.text.ends_with("the end"), "{}", ran.text);
        let lines = lines.0.lock().unwrap();
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE));
        assert_eq!(lines.last().map(String::as_str), Some("the end"));
    }
}
