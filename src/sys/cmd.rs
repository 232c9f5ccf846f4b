//! The one door for external programs.
//!
//! Programs are found in a fixed list of directories, never through `$PATH`. A command is
//! an argv vector (no shell), runs with a timeout, has its stdout and stderr captured, and
//! a failure becomes a [`CmdError`] naming the escaped argv, the exit code or signal, and
//! what the program printed. Arguments marked secret are shown as `<redacted>`.
//!
//! Every program the daemon may run is listed in [`PROGRAMS`] with what needs it; shelfd
//! resolves them all once at start ([`Programs::at_start`]), logs which are missing, and
//! every later lookup answers from that table (STYLE.md rule 13; see
//! [`super::programs`]).

use std::path::PathBuf;
use std::process::Stdio;

pub use super::programs::{find_program, Programs, PROGRAMS};
use std::time::Duration;

use futures_lite::{future, AsyncWriteExt};

/// Directories searched for programs, in order.
pub const SEARCH_DIRS: &[&str] = &[
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
];

/// Most bytes of stdout/stderr kept in an error message.
const MAX_ERROR_OUTPUT: usize = 2000;

/// A failed command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdError {
    /// The program is not installed in any of the search directories.
    #[error("program {program} is not installed (looked in {dirs})", dirs = SEARCH_DIRS.join(", "))]
    NotFound {
        /// The program's name.
        program: String,
    },
    /// The program could not be started.
    #[error("could not start `{argv}`: {reason}")]
    Spawn {
        /// The escaped command line.
        argv: String,
        /// The OS error.
        reason: String,
    },
    /// The program ran and failed.
    #[error("`{argv}` failed ({status}){out}", out = show_output(stdout, stderr))]
    Failed {
        /// The escaped command line.
        argv: String,
        /// `exit status: N` or `signal: N`.
        status: String,
        /// Exit code, when it exited.
        code: Option<i32>,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The program ran longer than its timeout and was killed.
    #[error("`{argv}` did not finish within {secs} s and was killed")]
    TimedOut {
        /// The escaped command line.
        argv: String,
        /// The timeout.
        secs: u64,
    },
}

impl CmdError {
    /// The exit code, when the program ran and exited non-zero.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            CmdError::Failed { code, .. } => *code,
            _ => None,
        }
    }

    /// The program's stderr, when it ran.
    pub fn stderr(&self) -> &str {
        match self {
            CmdError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }
}

fn show_output(stdout: &str, stderr: &str) -> String {
    let mut s = String::new();
    if !stdout.trim().is_empty() {
        s.push_str(&format!("; stdout: {}", stdout.trim()));
    }
    if !stderr.trim().is_empty() {
        s.push_str(&format!("; stderr: {}", stderr.trim()));
    }
    s
}

fn clip(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() > MAX_ERROR_OUTPUT {
        let mut end = MAX_ERROR_OUTPUT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.into_owned()
    }
}

/// Quote one argument the way a shell would need it (for messages only; nothing is run
/// through a shell).
pub fn shell_escape(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The output of a command that exited 0.
#[derive(Debug, Clone)]
pub struct Output {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A command to run: program name, arguments, secrets, optional stdin.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: String,
    args: Vec<String>,
    secret: Vec<bool>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
    confine: Option<std::sync::Arc<super::landlock::Confinement>>,
}

impl Cmd {
    /// A command running `program` (a bare name, looked up in [`SEARCH_DIRS`], or an
    /// absolute path).
    pub fn new(program: &str) -> Self {
        Cmd {
            program: program.to_string(),
            args: Vec::new(),
            secret: Vec::new(),
            stdin: None,
            timeout: None,
            confine: None,
        }
    }

    /// Add an argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self.secret.push(false);
        self
    }

    /// Add several arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, it: I) -> Self {
        for a in it {
            self = self.arg(a);
        }
        self
    }

    /// Add an argument that must never be shown in errors or logs.
    pub fn secret_arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self.secret.push(true);
        self
    }

    /// Feed these bytes on standard input.
    pub fn stdin(mut self, input: Vec<u8>) -> Self {
        self.stdin = Some(input);
        self
    }

    /// Override the runner's timeout for this command.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Run the program confined by this Landlock ruleset (applied between fork and exec;
    /// the descriptors it holds are inherited).
    pub fn confined(mut self, c: super::landlock::Confinement) -> Self {
        self.confine = Some(std::sync::Arc::new(c));
        self
    }

    /// The command line, escaped, with secrets redacted.
    pub fn display(&self) -> String {
        let mut parts = vec![shell_escape(&self.program)];
        for (a, s) in self.args.iter().zip(&self.secret) {
            parts.push(if *s {
                "<redacted>".into()
            } else {
                shell_escape(a)
            });
        }
        parts.join(" ")
    }

    /// Replace every secret argument in `text` (a program may echo its arguments).
    fn redact(&self, mut text: String) -> String {
        for (a, s) in self.args.iter().zip(&self.secret) {
            if *s && !a.is_empty() {
                text = text.replace(a.as_str(), "<redacted>");
            }
        }
        text
    }

    /// The argument vector (without the program).
    pub fn argv(&self) -> &[String] {
        &self.args
    }
}

/// Runs commands with a default timeout. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Runner {
    timeout: Duration,
}

impl Runner {
    /// A runner whose commands time out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Runner { timeout }
    }

    /// The default timeout of this runner's commands (also used for requests to daemons
    /// on their sockets).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// [`Runner::run`] for synchronous code: the one blocking entry point. It blocks the
    /// calling thread until the command ends, so it must only be called off the event
    /// loop: on a blocking-pool thread (the synchronous [`crate::pool::Pool`] methods run
    /// under `smol::unblock`) or in a synchronous program (shelfctl).
    pub fn run_blocking(&self, cmd: &Cmd) -> Result<Output, CmdError> {
        smol::block_on(self.run(cmd))
    }

    /// Run a command to completion. Exit status 0 is `Ok`; anything else is a [`CmdError`].
    pub async fn run(&self, cmd: &Cmd) -> Result<Output, CmdError> {
        self.run_streaming(cmd, |_| {}).await
    }

    /// Run a command, handing each piece of its standard output to `on_stdout` as it
    /// arrives (for progress, e.g. `qemu-img convert -p`), and keeping it for the result.
    /// Dropping the future kills the command.
    pub async fn run_streaming(
        &self,
        cmd: &Cmd,
        mut on_stdout: impl FnMut(&[u8]),
    ) -> Result<Output, CmdError> {
        use futures_lite::AsyncReadExt;
        let path = if cmd.program.starts_with('/') {
            PathBuf::from(&cmd.program)
        } else {
            find_program(&cmd.program).ok_or_else(|| CmdError::NotFound {
                program: cmd.program.clone(),
            })?
        };
        let argv = cmd.display();
        let timeout = cmd.timeout.unwrap_or(self.timeout);
        log::trace!("run: {argv}");
        let mut command = std::process::Command::new(&path);
        if let Some(c) = cmd.confine.clone() {
            use std::os::unix::process::CommandExt;
            // SAFETY: the hook runs between fork and exec; `apply_in_child` makes only
            // async-signal-safe syscalls (fcntl, prctl, landlock_restrict_self) on
            // descriptors opened before the fork, and allocates nothing.
            unsafe {
                command.pre_exec(move || c.apply_in_child());
            }
        }
        let mut child = async_process::Command::from(command)
            .args(&cmd.args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("LC_ALL", "C")
            .spawn()
            .map_err(|e| CmdError::Spawn {
                argv: argv.clone(),
                reason: e.to_string(),
            })?;
        if let (Some(input), Some(mut pipe)) = (cmd.stdin.clone(), child.stdin.take()) {
            // A program that exits without reading its input is not an error here; its exit
            // status says what happened.
            let _ = pipe.write_all(&input).await;
            drop(pipe);
        }
        let mut out_pipe = child.stdout.take();
        let mut err_pipe = child.stderr.take();
        let finished = async {
            let mut stdout = Vec::new();
            let read_out = async {
                let mut buf = [0u8; 8192];
                if let Some(p) = out_pipe.as_mut() {
                    while let Ok(n) = p.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        on_stdout(&buf[..n]);
                        stdout.extend_from_slice(&buf[..n]);
                    }
                }
            };
            let read_err = async {
                let mut stderr = Vec::new();
                if let Some(p) = err_pipe.as_mut() {
                    let _ = p.read_to_end(&mut stderr).await;
                }
                stderr
            };
            let ((), stderr) = future::zip(read_out, read_err).await;
            let status = child.status().await;
            Some(status.map(|status| std::process::Output {
                status,
                stdout,
                stderr,
            }))
        };
        let expired = async {
            smol::Timer::after(timeout).await;
            None
        };
        let output = match future::or(finished, expired).await {
            Some(r) => r.map_err(|e| CmdError::Spawn {
                argv: argv.clone(),
                reason: e.to_string(),
            })?,
            None => {
                return Err(CmdError::TimedOut {
                    argv,
                    secs: timeout.as_secs(),
                })
            }
        };
        if output.status.success() {
            return Ok(Output {
                stdout: output.stdout,
                stderr: output.stderr,
            });
        }
        use std::os::unix::process::ExitStatusExt;
        let status = match (output.status.code(), output.status.signal()) {
            (Some(c), _) => format!("exit status: {c}"),
            (None, Some(s)) => format!("signal: {s}"),
            _ => output.status.to_string(),
        };
        Err(CmdError::Failed {
            argv,
            status,
            code: output.status.code(),
            stdout: cmd.redact(clip(&output.stdout)),
            stderr: cmd.redact(clip(&output.stderr)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner() -> Runner {
        Runner::new(Duration::from_secs(5))
    }

    #[test]
    fn true_succeeds_and_false_fails() {
        smol::block_on(async {
            runner().run(&Cmd::new("true")).await.unwrap();
            let e = runner().run(&Cmd::new("false")).await.unwrap_err();
            assert_eq!(e.exit_code(), Some(1));
            assert!(
                e.to_string().contains("`false` failed (exit status: 1)"),
                "{e}"
            );
        });
    }

    #[test]
    fn captures_output_and_feeds_stdin() {
        smol::block_on(async {
            let out = runner()
                .run(&Cmd::new("cat").stdin(b"pattern".to_vec()))
                .await
                .unwrap();
            assert_eq!(out.stdout, b"pattern");
        });
    }

    #[test]
    fn reports_stderr_and_hides_secrets() {
        smol::block_on(async {
            let e = runner()
                .run(&Cmd::new("ls").arg("/no/such/dir").secret_arg("hunter2"))
                .await
                .unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("<redacted>") && !msg.contains("hunter2"),
                "{msg}"
            );
            assert!(msg.contains("No such file"), "{msg}");
        });
    }

    #[test]
    fn kills_at_timeout() {
        smol::block_on(async {
            let t0 = std::time::Instant::now();
            let e = runner()
                .run(
                    &Cmd::new("sleep")
                        .arg("30")
                        .timeout(Duration::from_millis(200)),
                )
                .await
                .unwrap_err();
            assert!(matches!(e, CmdError::TimedOut { .. }), "{e}");
            assert!(t0.elapsed() < Duration::from_secs(10));
        });
    }

    #[test]
    fn missing_program_is_named() {
        let e = smol::block_on(runner().run(&Cmd::new("no-such-program-xyz"))).unwrap_err();
        assert!(matches!(e, CmdError::NotFound { .. }));
        assert!(e.to_string().contains("no-such-program-xyz"));
    }

    #[test]
    fn run_blocking_runs_off_the_event_loop() {
        let out = runner()
            .run_blocking(&Cmd::new("cat").stdin(b"sync".to_vec()))
            .unwrap();
        assert_eq!(out.stdout, b"sync");
        let e = runner().run_blocking(&Cmd::new("false")).unwrap_err();
        assert_eq!(e.exit_code(), Some(1));
    }

    #[test]
    fn escapes_for_display() {
        assert_eq!(shell_escape("a b"), "'a b'");
        assert_eq!(shell_escape("it's"), "'it'\\''s'");
        assert_eq!(shell_escape("--op=new"), "--op=new");
        assert_eq!(shell_escape(""), "''");
    }
}
