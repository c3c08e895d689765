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

/// What a command printed (stdout and stderr interleaved by line) and how
/// it ended.
pub struct Logged {
    pub status: ExitStatus,
    pub text: String,
}

/// Run `cmd`, sending each line it prints to `sink` as it appears (for
/// long work a user watches: maintainer scripts, mmdebstrap, skopeo).
pub fn run_logged(cmd: &mut Command, sink: &Sink) -> Result<Logged> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("Running {}", shown(cmd)))?;
    let stderr = child.stderr.take().expect("piped");
    let err_sink = sink.clone();
    let errors = std::thread::spawn(move || {
        let mut lines = Vec::new();
        // Bytes, not UTF-8 lines: a script that prints Latin-1 must not
        // lose its reader (it would die of SIGPIPE on its next write).
        for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line).into_owned();
            err_sink.log(&line);
            lines.push(line);
        }
        lines
    });
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .split(b'\n')
        .map_while(Result::ok)
    {
        let line = String::from_utf8_lossy(&line).into_owned();
        sink.log(&line);
        lines.push(line);
    }
    let status = child
        .wait()
        .with_context(|| format!("Waiting for {}", shown(cmd)))?;
    lines.extend(errors.join().unwrap_or_default());
    Ok(Logged {
        status,
        text: lines.join("\n"),
    })
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
}
