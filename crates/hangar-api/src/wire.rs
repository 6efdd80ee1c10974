//! The API's wire types: what requests carry and responses hold, as JSON. The CLI's
//! `--json` output is these same documents. They are the API's own: the store's rows and
//! the engine's values are converted into them here, so renaming a column or an engine
//! field cannot change a document (a test pins each one's JSON).

use hangar_engine::{cache, secrets, travel};
use hangar_spec::TaskId;
use hangar_store::db::{self, AttemptRecord, PullRecord, TaskRecord, TriggerRecord};

/// The words the documents spell (statuses, phases, harnesses), and the credential type
/// secret values and tokens travel in: the API's clients name them from here.
pub use hangar_secrets::Secret;
pub use hangar_spec::{Approval, AttemptStatus, Harness, Phase, SecretPhase, TaskStatus};
use serde::{Deserialize, Serialize};

/// An error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// `not-found`, `bad-request`, `conflict`, `no-such-route`, `internal`.
    pub code: String,
    /// A sentence that reads after "failed to ...".
    pub message: String,
    /// An environment file's problems, each at its line (what `message` lists too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
}

/// One problem of a file: where and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl Diagnostic {
    /// Each of a bad environment file's problems.
    pub fn of(e: &hangar_spec::SpecError) -> Vec<Diagnostic> {
        e.diagnostics
            .iter()
            .map(|d| Diagnostic {
                file: e.file.clone(),
                line: d.line,
                message: d.message.clone(),
            })
            .collect()
    }
}

/// `POST /v1/tasks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    /// Optional for a follow-up (it runs in its source's environment).
    #[serde(default)]
    pub environment: String,
    /// A follow-up: `TASK[:ATTEMPT]` whose kept layer the attempts start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness: Option<Harness>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Best-of-N; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// An agent script's text, for the script harness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

impl From<SubmitTask> for hangar_engine::TaskRequest {
    fn from(s: SubmitTask) -> Self {
        hangar_engine::TaskRequest {
            environment: s.environment,
            prompt: s.prompt,
            branch: s.branch,
            commit: s.commit,
            script: s.script,
            harness: s.harness,
            approval: s.approval,
            attempts: s.attempts.unwrap_or(0),
            from: s.from,
        }
    }
}

/// A task in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub id: String,
    pub title: String,
    pub status: TaskStatus,
    pub environment: String,
    /// The branch asked for (the environment's default when none).
    pub branch: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub attempt_total: u32,
    pub summary: DiffSummary,
}

impl From<&TaskRecord> for TaskSummary {
    fn from(t: &TaskRecord) -> Self {
        TaskSummary {
            id: t.id.to_string(),
            title: t.title.clone(),
            status: t.status,
            environment: t.environment.clone(),
            branch: t.branch.clone(),
            created_at: rfc3339(t.created_ms),
            updated_at: rfc3339(t.updated_ms),
            attempt_total: t.attempt_total,
            summary: t.summary.map(DiffSummary::from).unwrap_or_default(),
        }
    }
}

/// `GET /v1/tasks`'s query: which page of which tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// At most this many (20 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// From a previous page's [`TaskList::cursor`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Which attempt of a task a read means: `attempt=N`, `best=true`, or (absent) all of
/// them, or where one is needed the best ready one, else the first; `follow=true` keeps
/// a log open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub best: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
}

/// `GET /v1/tasks`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskList {
    pub tasks: Vec<TaskSummary>,
    /// Present when more tasks follow: pass it as `cursor`.
    pub cursor: Option<String>,
}

/// A task with its attempts (`GET /v1/tasks/{id}`, `hangar show --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    #[serde(flatten)]
    pub task: TaskSummary,
    pub prompt: String,
    pub commit: Option<String>,
    pub environment_version: i64,
    /// A follow-up's source, `TASK:ATTEMPT`.
    pub from: Option<String>,
    pub attempts: Vec<AttemptView>,
    /// Attempt indexes, best first (ready, check passed, smaller diff).
    pub ranking: Vec<u32>,
    /// The best ready attempt, if any.
    pub best: Option<u32>,
    /// While waiting for a slot: 1 when it is next.
    pub queue_position: Option<usize>,
    /// The branches pushed for its attempts and their pull requests (`hangar pr`).
    pub pull_requests: Vec<PullView>,
    /// For a task a webhook started: what it owes the forge and how answering went.
    pub forge: Option<ForgeAnswer>,
}

impl TaskView {
    /// A task and its attempts; an attempt whose stored cache info does not parse is an
    /// error naming it (never shown as no cache info).
    pub fn new(
        t: &TaskRecord,
        attempts: &[AttemptRecord],
        queue_position: Option<usize>,
        pulls: &[PullRecord],
        trigger: Option<&TriggerRecord>,
    ) -> Result<Self, cache::CacheInfoError> {
        Ok(TaskView {
            task: t.into(),
            prompt: t.prompt.clone(),
            commit: t.commit.clone(),
            environment_version: t.environment_version,
            from: t.from.as_ref().map(|(id, i)| format!("{id}:{i}")),
            attempts: attempts
                .iter()
                .map(|a| AttemptView::new(&t.id, a))
                .collect::<Result<_, _>>()?,
            ranking: hangar_engine::best::rank(attempts),
            best: hangar_engine::best::best(attempts),
            queue_position,
            pull_requests: pulls.iter().map(PullView::from).collect(),
            forge: trigger.map(ForgeAnswer::from),
        })
    }
}

/// A branch hangar pushed for an attempt, and the pull request opened from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullView {
    pub attempt: u32,
    pub branch: String,
    /// The branch the pull request goes into.
    pub base: String,
    pub commit: String,
    /// `None`: the branch was pushed and no pull request opened (no forge, or not yet).
    pub number: Option<u64>,
    pub url: Option<String>,
    pub created_at: String,
}

impl From<&PullRecord> for PullView {
    fn from(p: &PullRecord) -> PullView {
        PullView {
            attempt: p.attempt,
            branch: p.branch.clone(),
            base: p.base.clone(),
            commit: p.commit.clone(),
            number: p.number,
            url: p.url.clone(),
            created_at: rfc3339(p.created_ms),
        }
    }
}

/// What a task a webhook started owes the forge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgeAnswer {
    /// `mention`, `review` or `autofix`.
    pub kind: String,
    /// `owner/name`.
    pub repository: String,
    /// The issue or pull request it answers on.
    pub number: Option<u64>,
    /// The branch a pull request of its change goes into.
    pub base: String,
    pub answered_at: Option<String>,
    /// Why answering failed, if it did.
    pub error: Option<String>,
}

impl From<&TriggerRecord> for ForgeAnswer {
    fn from(t: &TriggerRecord) -> ForgeAnswer {
        ForgeAnswer {
            kind: t.kind.clone(),
            repository: t.repository.clone(),
            number: t.number,
            base: t.base.clone(),
            answered_at: t.answered_ms.map(rfc3339),
            error: t.error.clone(),
        }
    }
}

/// `POST /v1/tasks/{id}/pull`: which attempt, onto what.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenPull {
    /// The attempt; none: the best ready one.
    #[serde(default)]
    pub attempt: Option<u32>,
    /// The branch to push; none: `hangar/<task>-<attempt>`.
    #[serde(default)]
    pub branch: Option<String>,
    /// The branch it goes into; none: the task's branch, else the default branch.
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub draft: bool,
}

/// What `POST /v1/tasks/{id}/pull` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullOpened {
    pub task: String,
    #[serde(flatten)]
    pub pull: PullView,
    /// Whether this call pushed or opened anything (`false`: it was all there).
    pub new: bool,
    /// Whether the environment names a forge (without one only the branch is pushed).
    pub forge: bool,
}

/// `PUT /v1/environments/{name}/forge`'s query (the webhook secret is the body).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectForge {
    /// The secret that holds the token; default `GITHUB_TOKEN`.
    #[serde(default)]
    pub token_secret: Option<String>,
    /// The secret the webhook secret goes into; default `GITHUB_WEBHOOK_SECRET`.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// `owner/name`; default: read from the repository's https URL.
    #[serde(default)]
    pub repository: Option<String>,
    /// The API's base URL (GitHub Enterprise Server); default github.com's.
    #[serde(default)]
    pub api: Option<String>,
}

/// The forge an environment now names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgeConnected {
    pub environment: String,
    pub kind: String,
    pub repository: String,
    pub api: String,
    pub token_secret: String,
    pub webhook_secret: String,
    /// Whether the token secret has a value (set it with `hangar secret set`).
    pub token_set: bool,
}

/// The answer to a webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookAnswer {
    /// `accepted`, `duplicate` or `not-served`.
    pub status: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptView {
    pub index: u32,
    pub status: AttemptStatus,
    pub final_message: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub base_commit: Option<String>,
    pub sandbox: Option<String>,
    pub cache: Option<CacheInfo>,
    pub timings: Vec<Timing>,
    pub summary: Option<DiffSummary>,
    pub check: Option<CheckResult>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub phase: Phase,
    pub started_at: String,
    pub duration_ms: i64,
}

impl AttemptView {
    /// Attempt `a` of task `task`, with how it found its environment as the engine reads
    /// it back ([`cache::CacheInfo::recorded`]).
    pub fn new(task: &TaskId, a: &AttemptRecord) -> Result<Self, cache::CacheInfoError> {
        let cache = cache::CacheInfo::recorded(task, a)?;
        Ok(AttemptView {
            index: a.index,
            status: a.status,
            final_message: a.final_message.clone(),
            exit_code: a.exit_code,
            error: a.error.clone(),
            base_commit: a.base_commit.clone(),
            sandbox: a.sandbox.clone(),
            cache: cache.as_ref().map(CacheInfo::from),
            timings: a
                .phases
                .iter()
                .map(|p| Timing {
                    phase: p.phase,
                    started_at: rfc3339(p.started_ms),
                    duration_ms: p.ended_ms - p.started_ms,
                })
                .collect(),
            summary: a.summary.map(DiffSummary::from),
            check: a.check.map(CheckResult::from),
            created_at: rfc3339(a.created_ms),
            started_at: a.started_ms.map(rfc3339),
            finished_at: a.finished_ms.map(rfc3339),
        })
    }
}

/// Files changed and lines added and removed by an attempt's diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiffSummary {
    pub files_changed: u32,
    pub lines_added: u32,
    pub lines_removed: u32,
}

impl From<db::DiffSummary> for DiffSummary {
    fn from(s: db::DiffSummary) -> Self {
        DiffSummary {
            files_changed: s.files_changed,
            lines_added: s.lines_added,
            lines_removed: s.lines_removed,
        }
    }
}

/// How `[agent] check` ended in an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub passed: bool,
    /// `None` when it was stopped (timeout).
    pub exit_code: Option<i32>,
}

impl From<db::CheckResult> for CheckResult {
    fn from(c: db::CheckResult) -> Self {
        CheckResult {
            passed: c.passed,
            exit_code: c.exit_code,
        }
    }
}

/// How an attempt found its environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInfo {
    pub status: CacheStatus,
    /// `snapshot 3f2a, built 2 h ago`, `setup script changed since snapshot 3f2a`.
    pub reason: String,
    /// The short key of the snapshot used (built on a miss; a follow-up's source's).
    pub snapshot: String,
}

impl From<&cache::CacheInfo> for CacheInfo {
    fn from(c: &cache::CacheInfo) -> Self {
        CacheInfo {
            status: c.status.into(),
            reason: c.reason.clone(),
            snapshot: c.snapshot.clone(),
        }
    }
}

/// `hit`: a snapshot served the attempt; `miss`: setup built one; `from`: a follow-up
/// started from its source's kept layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    Hit,
    Miss,
    From,
}

impl CacheStatus {
    pub const ALL: &'static [CacheStatus] =
        &[CacheStatus::Hit, CacheStatus::Miss, CacheStatus::From];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::From => "from",
        }
    }
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<cache::CacheStatus> for CacheStatus {
    fn from(s: cache::CacheStatus) -> Self {
        match s {
            cache::CacheStatus::Hit => CacheStatus::Hit,
            cache::CacheStatus::Miss => CacheStatus::Miss,
            cache::CacheStatus::From => CacheStatus::From,
        }
    }
}

/// One line of a phase's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub attempt: u32,
    pub seq: i64,
    pub ts_ms: i64,
    pub phase: Phase,
    pub stream: Stream,
    pub line: String,
}

impl From<&db::LogLine> for LogLine {
    fn from(l: &db::LogLine) -> Self {
        LogLine {
            attempt: l.attempt,
            seq: l.seq,
            ts_ms: l.ts_ms,
            phase: l.phase,
            stream: l.stream.into(),
            line: l.line.clone(),
        }
    }
}

/// Which stream a log line came from; `hangar` lines are hangar's own notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    Hangar,
}

impl Stream {
    pub const ALL: &'static [Stream] = &[Stream::Stdout, Stream::Stderr, Stream::Hangar];

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Hangar => "hangar",
        }
    }
}

impl From<db::Stream> for Stream {
    fn from(s: db::Stream) -> Self {
        match s {
            db::Stream::Stdout => Stream::Stdout,
            db::Stream::Stderr => Stream::Stderr,
            db::Stream::Hangar => Stream::Hangar,
        }
    }
}

/// `GET /v1/tasks/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logs {
    pub logs: Vec<LogLine>,
}

impl Logs {
    pub fn new(lines: &[db::LogLine]) -> Self {
        Logs {
            logs: lines.iter().map(LogLine::from).collect(),
        }
    }
}

/// One event of an agent's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEvent {
    pub attempt: u32,
    pub seq: i64,
    pub ts_ms: i64,
    /// message, command, file, error or final.
    pub kind: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<&db::EventRow> for AgentEvent {
    fn from(e: &db::EventRow) -> Self {
        AgentEvent {
            attempt: e.attempt,
            seq: e.seq,
            ts_ms: e.ts_ms,
            kind: e.kind.clone(),
            text: e.text.clone(),
            exit_code: e.exit_code,
            detail: e.detail.clone(),
        }
    }
}

/// `GET /v1/tasks/{id}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<AgentEvent>,
}

impl Events {
    pub fn new(rows: &[db::EventRow]) -> Self {
        Events {
            events: rows.iter().map(AgentEvent::from).collect(),
        }
    }
}

/// One decision of an attempt's egress proxy (redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEntry {
    pub attempt: u32,
    pub seq: i64,
    pub ts_ms: i64,
    /// The proxy's policy at the time (a phase, or `install` for a harness's install).
    pub phase: String,
    pub method: Option<String>,
    /// A request's path (without its query); absent for a connection.
    pub path: Option<String>,
    pub host: String,
    pub port: u16,
    /// `allowed`, `failed`, or the reason it was blocked.
    pub decision: String,
    pub rule: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub note: Option<String>,
}

impl From<&db::NetworkEntry> for NetworkEntry {
    fn from(e: &db::NetworkEntry) -> Self {
        NetworkEntry {
            attempt: e.attempt,
            seq: e.seq,
            ts_ms: e.ts_ms,
            phase: e.phase.clone(),
            method: e.method.clone(),
            path: e.path.clone(),
            host: e.host.clone(),
            port: e.port,
            decision: e.decision.clone(),
            rule: e.rule.clone(),
            bytes_up: e.bytes_up,
            bytes_down: e.bytes_down,
            note: e.note.clone(),
        }
    }
}

/// `GET /v1/tasks/{id}/network`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub network: Vec<NetworkEntry>,
}

impl Network {
    pub fn new(entries: &[db::NetworkEntry]) -> Self {
        Network {
            network: entries.iter().map(NetworkEntry::from).collect(),
        }
    }
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub version: String,
    /// Attempts that may run at once; the rest queue.
    pub max_running: usize,
    pub running: usize,
}

/// One message of a followed task (`GET /v1/tasks/{id}/logs?follow=true`, as server-sent
/// events whose data is this JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    PhaseStarted {
        attempt: u32,
        phase: Phase,
    },
    PhaseFinished {
        attempt: u32,
        phase: Phase,
        ms: i64,
        ok: bool,
    },
    Line(LogLine),
    /// The follower fell this many events behind and missed them (read them with
    /// `GET /v1/tasks/{id}/logs` afterwards).
    Missed {
        count: u64,
    },
    /// The task has finished; the stream ends.
    End {
        status: TaskStatus,
    },
}

/// A followed task's event ([`hangar_engine::runner::Runner::follow`]).
impl From<hangar_engine::runner::Followed> for StreamEvent {
    fn from(f: hangar_engine::runner::Followed) -> Self {
        use hangar_engine::runner::Followed;
        match f {
            Followed::Event(e) => StreamEvent::from(&e),
            Followed::Missed { count } => StreamEvent::Missed { count },
            Followed::End { status } => StreamEvent::End { status },
        }
    }
}

impl From<&hangar_engine::Event> for StreamEvent {
    fn from(e: &hangar_engine::Event) -> Self {
        use hangar_engine::Event;
        match e {
            Event::PhaseStarted { attempt, phase } => StreamEvent::PhaseStarted {
                attempt: *attempt,
                phase: *phase,
            },
            Event::PhaseFinished {
                attempt,
                phase,
                ms,
                ok,
            } => StreamEvent::PhaseFinished {
                attempt: *attempt,
                phase: *phase,
                ms: *ms,
                ok: *ok,
            },
            Event::Line(l) => StreamEvent::Line(l.into()),
        }
    }
}

/// Epoch milliseconds as RFC 3339, UTC, in milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `POST /v1/environments`, `PUT /v1/environments/{name}`: an environment file's text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvFile {
    /// The file's name, for messages (`.hangar/environment.toml`).
    pub file: String,
    pub source: String,
    /// Where a relative `repo` is taken from (the file's directory, on the daemon's
    /// machine).
    pub base_dir: String,
}

/// An environment in a listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvSummary {
    pub name: String,
    pub version: i64,
    pub repo: String,
    pub image: String,
    pub created_at: String,
    pub updated_at: String,
}

/// `GET /v1/environments[?repo=R]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvList {
    pub environments: Vec<EnvSummary>,
}

/// One environment: its file as stored and its parsed form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvView {
    pub name: String,
    pub version: i64,
    pub repo: String,
    pub created_at: String,
    pub updated_at: String,
    pub source: String,
    pub spec: serde_json::Value,
}

/// `GET /v1/environments/{name}/secrets`: names, phases, whether set; never values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

impl SecretList {
    pub fn new(secrets: &[secrets::SecretInfo]) -> Self {
        SecretList {
            secrets: secrets.iter().map(SecretInfo::from).collect(),
        }
    }
}

/// A declared secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    /// The phases whose execs get it (projected ones get a placeholder).
    pub phases: Vec<SecretPhase>,
    /// For a projected secret, the hosts the proxy sends it to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projected_to: Vec<String>,
    /// Whether a value is set.
    pub set: bool,
    pub updated_ms: Option<i64>,
}

impl From<&secrets::SecretInfo> for SecretInfo {
    fn from(s: &secrets::SecretInfo) -> Self {
        SecretInfo {
            name: s.name.clone(),
            phases: s.phases.clone(),
            projected_to: s.projected_to.clone(),
            set: s.set,
            updated_ms: s.updated_ms,
        }
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub workspace: String,
}

/// `POST /v1/tokens`'s answer: the token itself, this once. Its JSON is the one place a
/// token is written out; its `Debug` shows nothing of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewToken {
    pub id: String,
    pub workspace: String,
    #[serde(with = "exposed")]
    pub token: Secret,
}

/// A [`Secret`] as a JSON string, for [`NewToken`] alone.
mod exposed {
    use hangar_secrets::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(secret.expose_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        Secret::new(String::deserialize(d)?.into_bytes()).map_err(serde::de::Error::custom)
    }
}

/// `GET /v1/tokens`: never the tokens themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<TokenSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSummary {
    pub id: String,
    pub workspace: String,
    pub created_at: String,
}

/// One message of a long operation (an image build or pull, a snapshot export or
/// import), as server-sent events: progress lines, then `done` or `failed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OpEvent {
    Progress { line: String },
    Done { result: serde_json::Value },
    Failed { error: ErrorInfo },
}

/// `GET /v1/images`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageList {
    pub images: Vec<ImageSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageSummary {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub created: String,
}

/// `POST /v1/images/build`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildImage {
    pub name: String,
    /// `debian-<suite>`: build `name` from that suite's base packages plus `packages`;
    /// without it, `name` is a built-in recipe (`debian-<suite>`, `hangar-default`).
    #[serde(default)]
    pub from: Option<String>,
    /// Debian packages to add (checked against Debian's naming rules).
    #[serde(default)]
    pub packages: Vec<String>,
    /// A Debian mirror URL instead of the host's apt sources.
    #[serde(default)]
    pub mirror: Option<String>,
}

/// `POST /v1/images/pull`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullImage {
    pub reference: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub insecure: bool,
}

/// `POST /v1/images/push`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushImage {
    pub name: String,
    pub reference: String,
    #[serde(default)]
    pub insecure: bool,
}

/// `POST /v1/images/import`: a path on the daemon's machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportImage {
    pub path: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// What storing an image made: its name and manifest digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageStored {
    pub name: String,
    pub manifest: String,
}

/// `DELETE /v1/images/{name}`: what went with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRemoved {
    pub blobs: usize,
    pub layers: usize,
    pub bytes: u64,
}

/// `GET /v1/cache`: the workspace's snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub environment: String,
    pub key: String,
    pub size: i64,
    pub built_at: String,
    pub expires_at: String,
    pub last_used_at: String,
    pub hits: i64,
    pub reset: bool,
    pub durable: bool,
    pub source: Option<String>,
}

/// `POST /v1/environments/{name}/cache/reset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheReset {
    pub reset: u64,
}

/// `POST /v1/cache/gc`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheGc {
    /// Keep at most this many bytes of snapshots.
    #[serde(default)]
    pub budget: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheGcReport {
    pub snapshots: u32,
    pub bytes: u64,
    pub orphans: u32,
    pub kept: u32,
    /// Agent CLI layers no task used for their TTL, or left by an interrupted install.
    pub harnesses: u32,
}

/// `POST /v1/environments/{name}/cache/export`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSnapshot {
    pub reference: String,
    #[serde(default)]
    pub insecure: bool,
}

/// What `cache export` pushed: the `done` result of `POST
/// /v1/environments/{name}/cache/export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportResult {
    pub environment: String,
    pub reference: String,
    /// The pushed manifest's digest.
    pub manifest: String,
    pub snapshot: String,
    /// The compressed size of the snapshot layer.
    pub layer_size: u64,
}

impl From<travel::Exported> for ExportResult {
    fn from(e: travel::Exported) -> Self {
        ExportResult {
            environment: e.environment,
            reference: e.reference,
            manifest: e.manifest,
            snapshot: e.snapshot,
            layer_size: e.layer_size,
        }
    }
}

/// `POST /v1/cache/import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSnapshot {
    pub reference: String,
    /// The environment to use it for (default: the one it was exported from).
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub insecure: bool,
}

/// What `cache import` registered: the `done` result of `POST /v1/cache/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportResult {
    pub environment: String,
    pub reference: String,
    pub snapshot: String,
    pub size: u64,
    /// False when a usable snapshot with the same key was already here (it is kept).
    pub imported: bool,
}

impl From<travel::Imported> for ImportResult {
    fn from(i: travel::Imported) -> Self {
        ImportResult {
            environment: i.environment,
            reference: i.reference,
            snapshot: i.snapshot,
            size: i.size,
            imported: i.imported,
        }
    }
}

/// `POST /v1/run?spec=...`: a one-off command in a fresh sandbox made from an image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub image: String,
    pub argv: Vec<String>,
    /// `KEY=VALUE`, over the image's own.
    #[serde(default)]
    pub env: Vec<String>,
    /// Default: the image's working directory, else `/`.
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    #[serde(default)]
    pub pids: Option<i64>,
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Default: crun.
    #[serde(default)]
    pub runtime: Option<Runtime>,
    /// Pass standard input through.
    #[serde(default)]
    pub stdin: bool,
}

impl From<RunSpec> for hangar_engine::run::RunSpec {
    fn from(s: RunSpec) -> Self {
        hangar_engine::run::RunSpec {
            image: s.image,
            argv: s.argv,
            env: s.env,
            workdir: s.workdir,
            memory_bytes: s.memory_bytes,
            pids: s.pids,
            cpus: s.cpus,
            runtime: s.runtime.map(Into::into),
            stdin: s.stdin,
        }
    }
}

/// The OCI runtime a `run` sandbox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Crun,
    Runc,
}

impl From<Runtime> for hangar_engine::run::RuntimeKind {
    fn from(r: Runtime) -> Self {
        match r {
            Runtime::Crun => hangar_engine::run::RuntimeKind::Crun,
            Runtime::Runc => hangar_engine::run::RuntimeKind::Runc,
        }
    }
}

impl From<hangar_engine::run::RuntimeKind> for Runtime {
    fn from(r: hangar_engine::run::RuntimeKind) -> Self {
        match r {
            hangar_engine::run::RuntimeKind::Crun => Runtime::Crun,
            hangar_engine::run::RuntimeKind::Runc => Runtime::Runc,
        }
    }
}

impl Runtime {
    pub const ALL: &'static [Runtime] = &[Runtime::Crun, Runtime::Runc];

    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Crun => "crun",
            Runtime::Runc => "runc",
        }
    }
}

/// How a `run` command ended: the last frame of the upgraded connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it (the sandbox hit its memory limit).
    pub oom_killed: bool,
    /// Why it never ran (with code 126 or 127).
    pub message: Option<String>,
}

// ---- the web UI's sign-in links ----

/// `POST /v1/ui/links`'s answer: the URL of a one-time sign-in link on each of the
/// daemon's TCP listeners, all carrying the same code (one use in all). Its JSON is the
/// one place the code is written out; its `Debug` shows nothing of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UiLinks {
    #[serde(with = "exposed_each")]
    pub urls: Vec<Secret>,
    pub expires_at: String,
}

/// [`Secret`]s as a JSON list of strings, for [`UiLinks`] alone.
mod exposed_each {
    use hangar_secrets::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(secrets: &[Secret], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(secrets.iter().map(|v| v.expose_str()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|v| Secret::new(v.into_bytes()).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_spec::TaskId;

    /// `value`'s JSON is exactly `expected` (field names, order and spellings: what
    /// clients of the API read), and `expected` reads back as `value` (what the CLI does).
    fn check<T>(value: T, expected: &str)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        assert_eq!(serde_json::to_string(&value).unwrap(), expected);
        assert_eq!(serde_json::from_str::<T>(expected).unwrap(), value);
    }

    fn task_id() -> TaskId {
        "0123456789ab".parse().unwrap()
    }

    fn task() -> TaskRecord {
        TaskRecord {
            id: task_id(),
            workspace: "default".into(),
            environment: "web".into(),
            environment_version: 2,
            spec: String::new(),
            title: "fix the build".into(),
            prompt: "fix the build".into(),
            branch: Some("main".into()),
            commit: None,
            agent_script: None,
            harness: None,
            approval: None,
            from: Some((task_id(), 1)),
            status: TaskStatus::Ready,
            created_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_060_000,
            attempt_total: 2,
            summary: None,
        }
    }

    fn attempt(index: u32) -> AttemptRecord {
        AttemptRecord {
            index,
            status: AttemptStatus::Ready,
            sandbox: Some("sb1".into()),
            cache: None,
            base_commit: Some("abc".into()),
            result_tree: Some("def".into()),
            final_message: Some("done".into()),
            exit_code: Some(0),
            error: None,
            phases: vec![db::PhaseTiming {
                phase: Phase::Setup,
                started_ms: 1_700_000_001_000,
                ended_ms: 1_700_000_001_250,
            }],
            summary: Some(db::DiffSummary {
                files_changed: 1,
                lines_added: 2,
                lines_removed: 3,
            }),
            check: Some(db::CheckResult {
                passed: false,
                exit_code: None,
            }),
            created_ms: 1_700_000_000_000,
            started_ms: Some(1_700_000_000_500),
            finished_ms: None,
        }
    }

    fn line(stream: db::Stream) -> db::LogLine {
        db::LogLine {
            attempt: 1,
            seq: 7,
            ts_ms: 1_700_000_002_000,
            phase: Phase::Setup,
            stream,
            line: "npm ci".into(),
        }
    }

    #[test]
    fn task_documents_keep_their_json() {
        let hit = hangar_engine::cache::CacheInfo {
            status: cache::CacheStatus::Hit,
            reason: "snapshot 3f2a, built 2 h ago".into(),
            snapshot: "3f2a".into(),
        };
        let bare = AttemptRecord {
            status: AttemptStatus::Running,
            sandbox: None,
            base_commit: None,
            result_tree: None,
            final_message: None,
            exit_code: None,
            phases: Vec::new(),
            summary: None,
            check: None,
            started_ms: None,
            ..attempt(2)
        };
        check(
            TaskView::new(
                &task(),
                &[
                    AttemptRecord {
                        cache: Some(hit.to_stored()),
                        ..attempt(1)
                    },
                    bare,
                ],
                Some(1),
                &[PullRecord {
                    task: task().id,
                    attempt: 1,
                    branch: "hangar/01234567-1".into(),
                    base: "main".into(),
                    commit: "c0ffee".into(),
                    number: Some(7),
                    url: Some("https://forge.test/o/r/pull/7".into()),
                    created_ms: 1_700_000_060_000,
                }],
                Some(&TriggerRecord {
                    task: task().id,
                    kind: "mention".into(),
                    repository: "o/r".into(),
                    number: Some(3),
                    base: "main".into(),
                    answered_ms: Some(1_700_000_060_000),
                    error: Some("the forge answered 403".into()),
                }),
            )
            .unwrap(),
            concat!(
                r#"{"id":"0123456789ab","title":"fix the build","status":"ready","environment":"web","#,
                r#""branch":"main","created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:14:20.000Z","#,
                r#""attempt_total":2,"summary":{"files_changed":0,"lines_added":0,"lines_removed":0},"#,
                r#""prompt":"fix the build","commit":null,"environment_version":2,"#,
                r#""from":"0123456789ab:1","attempts":["#,
                r#"{"index":1,"status":"ready","final_message":"done","exit_code":0,"error":null,"#,
                r#""base_commit":"abc","sandbox":"sb1","#,
                r#""cache":{"status":"hit","reason":"snapshot 3f2a, built 2 h ago","snapshot":"3f2a"},"#,
                r#""timings":[{"phase":"setup","started_at":"2023-11-14T22:13:21.000Z","duration_ms":250}],"#,
                r#""summary":{"files_changed":1,"lines_added":2,"lines_removed":3},"#,
                r#""check":{"passed":false,"exit_code":null},"#,
                r#""created_at":"2023-11-14T22:13:20.000Z","started_at":"2023-11-14T22:13:20.500Z","#,
                r#""finished_at":null},"#,
                r#"{"index":2,"status":"running","final_message":null,"exit_code":null,"error":null,"#,
                r#""base_commit":null,"sandbox":null,"cache":null,"timings":[],"summary":null,"#,
                r#""check":null,"created_at":"2023-11-14T22:13:20.000Z","started_at":null,"#,
                r#""finished_at":null}],"#,
                r#""ranking":[1,2],"best":1,"queue_position":1,"pull_requests":[{"attempt":1,"#,
                r#""branch":"hangar/01234567-1","base":"main","commit":"c0ffee","number":7,"#,
                r#""url":"https://forge.test/o/r/pull/7","created_at":"2023-11-14T22:14:20.000Z"}],"#,
                r#""forge":{"kind":"mention","repository":"o/r","number":3,"base":"main","#,
                r#""answered_at":"2023-11-14T22:14:20.000Z","error":"the forge answered 403"}}"#,
            ),
        );
        check(
            PullOpened {
                task: "0123456789ab".into(),
                pull: PullView {
                    attempt: 2,
                    branch: "fix".into(),
                    base: "main".into(),
                    commit: "c0ffee".into(),
                    number: None,
                    url: None,
                    created_at: "2023-11-14T22:14:20.000Z".into(),
                },
                new: true,
                forge: false,
            },
            concat!(
                r#"{"task":"0123456789ab","attempt":2,"branch":"fix","base":"main","commit":"c0ffee","#,
                r#""number":null,"url":null,"created_at":"2023-11-14T22:14:20.000Z","new":true,"forge":false}"#,
            ),
        );
        check(
            OpenPull {
                attempt: Some(2),
                branch: None,
                base: Some("dev".into()),
                draft: true,
            },
            r#"{"attempt":2,"branch":null,"base":"dev","draft":true}"#,
        );
        check(
            ForgeConnected {
                environment: "web".into(),
                kind: "github".into(),
                repository: "o/r".into(),
                api: "https://api.github.com".into(),
                token_secret: "GITHUB_TOKEN".into(),
                webhook_secret: "GITHUB_WEBHOOK_SECRET".into(),
                token_set: false,
            },
            concat!(
                r#"{"environment":"web","kind":"github","repository":"o/r","api":"https://api.github.com","#,
                r#""token_secret":"GITHUB_TOKEN","webhook_secret":"GITHUB_WEBHOOK_SECRET","token_set":false}"#,
            ),
        );
        check(
            WebhookAnswer {
                status: "duplicate".into(),
                message: "this delivery was heard before".into(),
            },
            r#"{"status":"duplicate","message":"this delivery was heard before"}"#,
        );
        check(
            TaskSummary::from(&TaskRecord {
                summary: Some(db::DiffSummary {
                    files_changed: 4,
                    lines_added: 5,
                    lines_removed: 6,
                }),
                ..task()
            }),
            concat!(
                r#"{"id":"0123456789ab","title":"fix the build","status":"ready","environment":"web","#,
                r#""branch":"main","created_at":"2023-11-14T22:13:20.000Z","updated_at":"2023-11-14T22:14:20.000Z","#,
                r#""attempt_total":2,"summary":{"files_changed":4,"lines_added":5,"lines_removed":6}}"#,
            ),
        );
        for (status, spelled) in [
            (cache::CacheStatus::Miss, "miss"),
            (cache::CacheStatus::From, "from"),
        ] {
            let info = hangar_engine::cache::CacheInfo {
                status,
                reason: "none yet".into(),
                snapshot: "77aa".into(),
            };
            check(
                CacheInfo::from(&info),
                &format!(r#"{{"status":"{spelled}","reason":"none yet","snapshot":"77aa"}}"#),
            );
            // The wire spells it as the stored text does.
            assert_eq!(
                serde_json::to_string(&CacheInfo::from(&info)).unwrap(),
                info.to_stored()
            );
        }
    }

    #[test]
    fn queries_and_errors_keep_their_json() {
        check(TaskQuery::default(), "{}");
        check(
            TaskQuery {
                environment: Some("web".into()),
                status: Some(TaskStatus::Running),
                limit: Some(50),
                cursor: Some("1700:ab".into()),
            },
            r#"{"environment":"web","status":"running","limit":50,"cursor":"1700:ab"}"#,
        );
        check(AttemptQuery::default(), "{}");
        check(
            AttemptQuery {
                attempt: Some(2),
                best: true,
                follow: true,
            },
            r#"{"attempt":2,"best":true,"follow":true}"#,
        );
        let error = |diagnostics| ErrorBody {
            error: ErrorInfo {
                code: "bad-request".into(),
                message: "web.toml:3: `image`: expected a string".into(),
                diagnostics,
            },
        };
        check(
            error(vec![]),
            r#"{"error":{"code":"bad-request","message":"web.toml:3: `image`: expected a string"}}"#,
        );
        check(
            error(vec![Diagnostic {
                file: "web.toml".into(),
                line: 3,
                message: "`image`: expected a string".into(),
            }]),
            r#"{"error":{"code":"bad-request","message":"web.toml:3: `image`: expected a string","diagnostics":[{"file":"web.toml","line":3,"message":"`image`: expected a string"}]}}"#,
        );
    }

    #[test]
    fn logs_events_and_network_keep_their_json() {
        check(
            Logs::new(&[
                line(db::Stream::Stdout),
                line(db::Stream::Stderr),
                line(db::Stream::Hangar),
            ]),
            concat!(
                r#"{"logs":["#,
                r#"{"attempt":1,"seq":7,"ts_ms":1700000002000,"phase":"setup","stream":"stdout","line":"npm ci"},"#,
                r#"{"attempt":1,"seq":7,"ts_ms":1700000002000,"phase":"setup","stream":"stderr","line":"npm ci"},"#,
                r#"{"attempt":1,"seq":7,"ts_ms":1700000002000,"phase":"setup","stream":"hangar","line":"npm ci"}"#,
                r#"]}"#,
            ),
        );
        let event = |kind: &str, exit_code, detail: Option<&str>| db::EventRow {
            attempt: 2,
            seq: 1,
            ts_ms: 5,
            kind: kind.into(),
            text: "ls".into(),
            exit_code,
            detail: detail.map(Into::into),
        };
        check(
            Events::new(&[
                event("command", Some(1), None),
                event("file", None, Some("add")),
                event("message", None, None),
            ]),
            concat!(
                r#"{"events":["#,
                r#"{"attempt":2,"seq":1,"ts_ms":5,"kind":"command","text":"ls","exit_code":1},"#,
                r#"{"attempt":2,"seq":1,"ts_ms":5,"kind":"file","text":"ls","detail":"add"},"#,
                r#"{"attempt":2,"seq":1,"ts_ms":5,"kind":"message","text":"ls"}"#,
                r#"]}"#,
            ),
        );
        let entry = db::NetworkEntry {
            attempt: 1,
            seq: 3,
            ts_ms: 9,
            phase: "agent".into(),
            method: Some("GET".into()),
            path: Some("/x".into()),
            host: "example.test".into(),
            port: 443,
            decision: "allowed".into(),
            rule: Some("network.agent.allow *.test".into()),
            bytes_up: 10,
            bytes_down: 20,
            note: None,
        };
        check(
            Network::new(&[entry]),
            concat!(
                r#"{"network":[{"attempt":1,"seq":3,"ts_ms":9,"phase":"agent","method":"GET","#,
                r#""path":"/x","host":"example.test","port":443,"decision":"allowed","#,
                r#""rule":"network.agent.allow *.test","bytes_up":10,"bytes_down":20,"note":null}]}"#,
            ),
        );
    }

    #[test]
    fn stream_events_keep_their_json() {
        use hangar_engine::Event;
        check(
            StreamEvent::from(&Event::PhaseStarted {
                attempt: 1,
                phase: Phase::Agent,
            }),
            r#"{"type":"phase_started","attempt":1,"phase":"agent"}"#,
        );
        check(
            StreamEvent::from(&Event::PhaseFinished {
                attempt: 2,
                phase: Phase::Collect,
                ms: 40,
                ok: true,
            }),
            r#"{"type":"phase_finished","attempt":2,"phase":"collect","ms":40,"ok":true}"#,
        );
        check(
            StreamEvent::from(&Event::Line(line(db::Stream::Stderr))),
            concat!(
                r#"{"type":"line","attempt":1,"seq":7,"ts_ms":1700000002000,"phase":"setup","#,
                r#""stream":"stderr","line":"npm ci"}"#,
            ),
        );
        check(
            StreamEvent::Missed { count: 3 },
            r#"{"type":"missed","count":3}"#,
        );
        check(
            StreamEvent::End {
                status: TaskStatus::Cancelled,
            },
            r#"{"type":"end","status":"cancelled"}"#,
        );
    }

    #[test]
    fn secrets_and_snapshot_travel_keep_their_json() {
        check(
            SecretList::new(&[
                secrets::SecretInfo {
                    name: "TOKEN".into(),
                    phases: vec![SecretPhase::Setup, SecretPhase::Maintenance],
                    projected_to: Vec::new(),
                    set: false,
                    updated_ms: None,
                },
                secrets::SecretInfo {
                    name: "GH".into(),
                    phases: vec![SecretPhase::Agent],
                    projected_to: vec!["api.github.com".into()],
                    set: true,
                    updated_ms: Some(12),
                },
            ]),
            concat!(
                r#"{"secrets":["#,
                r#"{"name":"TOKEN","phases":["setup","maintenance"],"set":false,"updated_ms":null},"#,
                r#"{"name":"GH","phases":["agent"],"projected_to":["api.github.com"],"set":true,"updated_ms":12}"#,
                r#"]}"#,
            ),
        );
        check(
            ExportResult::from(travel::Exported {
                environment: "web".into(),
                reference: "registry.test/web:snap".into(),
                manifest: "sha256:aa".into(),
                snapshot: "3f2a".into(),
                layer_size: 1024,
            }),
            concat!(
                r#"{"environment":"web","reference":"registry.test/web:snap","#,
                r#""manifest":"sha256:aa","snapshot":"3f2a","layer_size":1024}"#,
            ),
        );
        check(
            ImportResult::from(travel::Imported {
                environment: "web".into(),
                reference: "registry.test/web:snap".into(),
                snapshot: "3f2a".into(),
                size: 2048,
                imported: false,
            }),
            concat!(
                r#"{"environment":"web","reference":"registry.test/web:snap","#,
                r#""snapshot":"3f2a","size":2048,"imported":false}"#,
            ),
        );
    }

    #[test]
    fn run_documents_keep_their_json() {
        let spec = RunSpec {
            image: "debian-bookworm".into(),
            argv: vec!["true".into()],
            runtime: Some(Runtime::Runc),
            cpus: Some(0.5),
            ..RunSpec::default()
        };
        check(
            spec.clone(),
            concat!(
                r#"{"image":"debian-bookworm","argv":["true"],"env":[],"workdir":null,"#,
                r#""memory_bytes":null,"pids":null,"cpus":0.5,"runtime":"runc","stdin":false}"#,
            ),
        );
        // What the CLI sends may leave the defaults out; the engine gets the runtime.
        let sent: RunSpec =
            serde_json::from_str(r#"{"image":"debian-bookworm","argv":["true"],"runtime":"crun"}"#)
                .unwrap();
        let engine: hangar_engine::run::RunSpec = sent.into();
        assert_eq!(engine.runtime, Some(hangar_engine::run::RuntimeKind::Crun));
        assert!(
            serde_json::from_str::<RunSpec>(r#"{"image":"i","argv":[],"runtime":"kata"}"#).is_err()
        );
        check(
            RunExit {
                code: None,
                signal: Some(9),
                oom_killed: true,
                message: None,
            },
            r#"{"code":null,"signal":9,"oom_killed":true,"message":null}"#,
        );
    }

    #[test]
    fn ui_links_keep_their_json_and_never_show_in_their_debug() {
        let url = "https://host:7700/ui/sign-in?code=hgc_0123456789abcdef";
        let links = UiLinks {
            urls: vec![Secret::new(url.as_bytes().to_vec()).unwrap()],
            expires_at: "2023-11-14T22:23:20.000Z".into(),
        };
        assert!(!format!("{links:?}").contains("hgc_"), "{links:?}");
        check(
            links,
            concat!(
                r#"{"urls":["https://host:7700/ui/sign-in?code=hgc_0123456789abcdef"],"#,
                r#""expires_at":"2023-11-14T22:23:20.000Z"}"#,
            ),
        );
    }

    /// The enums `openapi.json` spells are the ones the wire types write.
    #[test]
    fn the_openapi_document_spells_the_wire_enums() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI).unwrap();
        let schemas = &doc["components"]["schemas"];
        let spelled = |v: &serde_json::Value| -> Vec<String> {
            v["enum"]
                .as_array()
                .unwrap_or_else(|| panic!("no enum in {v}"))
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            spelled(&schemas["LogLine"]["properties"]["stream"]),
            Stream::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()
        );
        assert_eq!(
            spelled(&schemas["Attempt"]["properties"]["cache"]["properties"]["status"]),
            CacheStatus::ALL
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            spelled(
                &schemas["SecretList"]["properties"]["secrets"]["items"]["properties"]["phases"]
                    ["items"]
            ),
            SecretPhase::ALL
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            spelled(&schemas["RunSpec"]["properties"]["runtime"]),
            Runtime::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()
        );
        assert_eq!(
            spelled(&schemas["TaskStatus"]),
            TaskStatus::ALL
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_new_token_is_in_its_json_once_and_never_in_its_debug() {
        let token = "hgr_0123456789abcdef0123456789abcdef01234567";
        let t = NewToken {
            id: "1a2b3c4d".into(),
            workspace: "team-a".into(),
            token: Secret::new(token.as_bytes().to_vec()).unwrap(),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            format!(r#"{{"id":"1a2b3c4d","workspace":"team-a","token":"{token}"}}"#)
        );
        assert!(!format!("{t:?}").contains(token), "{t:?}");
        let back: NewToken = serde_json::from_str(&json).unwrap();
        assert_eq!(back.token.expose_str(), token);
    }
}
