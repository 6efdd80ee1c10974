//! Running one step of a phase inside the sandbox: a fresh bash that sources
//! `~/.bashrc`, turns errexit on, and sources the step's script from hangar's own
//! directory; output is logged line by line, and a failure names the script's line.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hangar_sandbox::{ExecSpec, ExitStatus, Sandbox, Stdio};
use hangar_secrets::Redactor;
use hangar_spec::{Phase, TaskId};
use hangar_store::db::{now_ms, Db, LogLine, Stream};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};

use crate::error::Result;
use crate::{Event, Progress};

/// hangar's directory inside every sandbox: scripts, markers, the collected diff.
pub(crate) const RUN_DIR: &str = "/.hangar/run";
/// The workspace as the agent found it (see `attempt::MARK`): outside [`RUN_DIR`], so
/// an attempt's kept layer carries it to its follow-ups.
pub(crate) const START_DIR: &str = "/.hangar/start";
/// Where the repository's mirror is mounted, read-only.
pub(crate) const MIRROR_DIR: &str = "/.hangar/mirror.git";
/// How many lines of output a failure shows.
pub(crate) const TAIL_LINES: usize = 20;
/// Longest log line kept; the rest is cut (a minified file printed whole, say).
const MAX_LINE: usize = 16 * 1024;

/// Writes an attempt's log lines to the database in batches and shows them as progress,
/// with the environment's secret values redacted first.
pub(crate) struct Logger {
    tx: Option<mpsc::UnboundedSender<LogLine>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    seq: AtomicI64,
    attempt: u32,
    progress: Progress,
    redactor: Redactor,
}

impl Logger {
    pub(crate) fn new(
        db: Db,
        task: TaskId,
        attempt: u32,
        progress: Progress,
        redactor: Redactor,
    ) -> Logger {
        let (tx, mut rx) = mpsc::unbounded_channel::<LogLine>();
        let writer = tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 256).await > 0 {
                if let Err(e) = db.append_logs(&task, &batch).await {
                    tracing::warn!("{e}");
                }
                batch.clear();
            }
        });
        Logger {
            tx: Some(tx),
            writer: Some(writer),
            seq: AtomicI64::new(0),
            attempt,
            progress,
            redactor,
        }
    }

    pub(crate) fn line(&self, phase: Phase, stream: Stream, text: &str) {
        let line = LogLine {
            attempt: self.attempt,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            ts_ms: now_ms(),
            phase,
            stream,
            line: self.redactor.redact(text).into_owned(),
        };
        (self.progress)(&Event::Line(line.clone()));
        if let Some(tx) = &self.tx {
            let _ = tx.send(line);
        }
    }

    pub(crate) fn note(&self, phase: Phase, text: &str) {
        self.line(phase, Stream::Hangar, text);
    }

    /// Waits until every line is stored.
    pub(crate) async fn finish(mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
    }
}

/// One script to run.
pub(crate) struct Step<'a> {
    pub phase: Phase,
    /// File stem under [`RUN_DIR`] (`setup`, `agent`, ...).
    pub name: &'a str,
    pub script: &'a str,
    pub cwd: &'a str,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub runs_as: RunsAs,
}

/// Who a step's process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunsAs {
    Root,
    /// `[agent] user`: the agent and the check, in a workspace that user owns.
    User {
        uid: u32,
        gid: u32,
    },
}

/// Where a step run as [`RunsAs::User`] may write (its errexit file): the user owns it.
pub(crate) const USER_RUN_DIR: &str = "/.hangar/run/user";

/// How a step ended.
pub(crate) struct StepResult {
    pub status: ExitStatus,
    /// The script line errexit stopped at.
    pub failed_line: Option<usize>,
    /// The last lines of output, both streams interleaved.
    pub tail: Vec<String>,
    pub last_stdout: Option<String>,
    pub timed_out: bool,
    pub cancelled: bool,
}

impl StepResult {
    /// What a failed step last said, or its exit code when it said nothing.
    pub(crate) fn last_words(&self) -> String {
        self.tail
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| format!("exit code {}", self.status.code_or_signal()))
    }

    pub(crate) fn success(&self) -> bool {
        self.status.success() && !self.timed_out && !self.cancelled
    }
}

/// The wrapper every step runs under. `$1` is the working directory, `$2` the file the
/// errexit trap writes `<line> <code>` to, `$3` the script. The trap names the file by a
/// variable: `set -E` runs it inside the script's functions too, where `$2` is theirs.
const WRAPPER: &str = r#"if [ -f "$HOME/.bashrc" ]; then . "$HOME/.bashrc"; fi
cd "$1" || exit 1
__hangar_err=$2
set -eE
trap 'printf "%s %s\n" "$LINENO" "$?" > "$__hangar_err"' ERR
. "$3""#;

pub(crate) async fn run_step(
    sandbox: &Sandbox,
    logger: &Logger,
    step: Step<'_>,
    cancel: &mut watch::Receiver<bool>,
) -> Result<StepResult> {
    let script_path = format!("{RUN_DIR}/{}.sh", step.name);
    let (uid, gid, err_dir) = match step.runs_as {
        RunsAs::Root => (0, 0, RUN_DIR),
        RunsAs::User { uid, gid } => (uid, gid, USER_RUN_DIR),
    };
    let err_path = format!("{err_dir}/{}.err", step.name);
    sandbox.write_file(&script_path, step.script.as_bytes(), 0o644)?;
    let argv = [
        "bash",
        "--noprofile",
        "--norc",
        "-c",
        WRAPPER,
        &format!("hangar-{}", step.name),
        step.cwd,
        &err_path,
        &script_path,
    ];
    let mut proc = sandbox
        .exec(ExecSpec {
            env: step.env,
            uid,
            gid,
            stdout: Stdio::Piped,
            stderr: Stdio::Piped,
            ..ExecSpec::new(argv)
        })
        .await?;
    let tail = Arc::new(std::sync::Mutex::new(VecDeque::new()));
    let last_stdout = Arc::new(std::sync::Mutex::new(None::<String>));
    let read_out = pump(
        proc.stdout.take(),
        logger,
        step.phase,
        Stream::Stdout,
        &tail,
        Some(&last_stdout),
    );
    let read_err = pump(
        proc.stderr.take(),
        logger,
        step.phase,
        Stream::Stderr,
        &tail,
        None,
    );
    let signaller = proc.signaller();
    let wait = async {
        let (mut timed_out, mut cancelled) = (false, false);
        let deadline = async {
            match step.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let mut wait = std::pin::pin!(proc.wait());
        loop {
            tokio::select! {
                status = &mut wait => return (status, timed_out, cancelled),
                _ = &mut deadline, if !timed_out => {
                    timed_out = true;
                    signaller.send(libc::SIGKILL);
                }
                changed = cancel.changed(), if !cancelled => {
                    if changed.is_err() || *cancel.borrow() {
                        cancelled = true;
                        signaller.send(libc::SIGKILL);
                    }
                }
            }
        }
    };
    // A background process that inherited the pipes may keep them open after the step
    // ends; its output stops being read shortly after.
    let pumps = async {
        tokio::join!(read_out, read_err);
    };
    tokio::pin!(pumps, wait);
    let mut pumped = false;
    let status = loop {
        tokio::select! {
            status = &mut wait => break status,
            _ = &mut pumps, if !pumped => pumped = true,
        }
    };
    if !pumped {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut pumps).await;
    }
    let (status, timed_out, cancelled) = status;
    let status = status?;
    let failed_line = if status.success() {
        None
    } else {
        sandbox
            .read_file(&err_path)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
    };
    let tail = tail.lock().expect("tail lock").iter().cloned().collect();
    let last_stdout = last_stdout.lock().expect("last line lock").take();
    Ok(StepResult {
        status,
        failed_line,
        tail,
        last_stdout,
        timed_out,
        cancelled,
    })
}

/// Reads a stream line by line into the log, the shared tail and (for stdout) the last
/// non-empty line.
async fn pump(
    pipe: Option<impl AsyncRead + Unpin>,
    logger: &Logger,
    phase: Phase,
    stream: Stream,
    tail: &std::sync::Mutex<VecDeque<String>>,
    last: Option<&std::sync::Mutex<Option<String>>>,
) {
    let Some(pipe) = pipe else { return };
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        buf.truncate(MAX_LINE);
        let text = String::from_utf8_lossy(&buf).into_owned();
        logger.line(phase, stream, &text);
        if let Some(last) = last {
            if !text.trim().is_empty() {
                *last.lock().expect("last line lock") = Some(text.clone());
            }
        }
        let mut t = tail.lock().expect("tail lock");
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(text);
    }
}

/// The text of line `n` (1-based) of a script, trimmed, for error messages.
pub(crate) fn script_line(script: &str, n: usize) -> Option<String> {
    script
        .lines()
        .nth(n.checked_sub(1)?)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}
