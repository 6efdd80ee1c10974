//! The API's wire types: what requests carry and responses hold, as JSON. The CLI's
//! `--json` output is these same documents.

use hangar_secrets::Secret;
use hangar_spec::{Approval, AttemptStatus, Harness, Phase, TaskStatus};
use hangar_store::db::{
    AttemptRecord, CheckResult, DiffSummary, EventRow, LogLine, NetworkEntry, TaskRecord,
};
use serde::{Deserialize, Serialize};

/// An error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// `not-found`, `bad-request`, `conflict`, `no-such-route`, `internal`.
    pub code: String,
    /// A sentence that reads after "failed to ...".
    pub message: String,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskSummary {
    pub id: String,
    pub title: String,
    pub status: TaskStatus,
    pub environment: String,
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
            created_at: rfc3339(t.created_ms),
            updated_at: rfc3339(t.updated_ms),
            attempt_total: t.attempt_total,
            summary: t.summary.unwrap_or_default(),
        }
    }
}

/// `GET /v1/tasks`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskList {
    pub tasks: Vec<TaskSummary>,
    /// Present when more tasks follow: pass it as `cursor`.
    pub cursor: Option<String>,
}

/// A task with its attempts (`GET /v1/tasks/{id}`, `hangar show --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    #[serde(flatten)]
    pub task: TaskSummary,
    pub prompt: String,
    pub branch: Option<String>,
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
}

impl TaskView {
    pub fn new(t: &TaskRecord, attempts: &[AttemptRecord], queue_position: Option<usize>) -> Self {
        TaskView {
            task: t.into(),
            prompt: t.prompt.clone(),
            branch: t.branch.clone(),
            commit: t.commit.clone(),
            environment_version: t.environment_version,
            from: t.from.as_ref().map(|(id, i)| format!("{id}:{i}")),
            attempts: attempts.iter().map(AttemptView::from).collect(),
            ranking: hangar_engine::best::rank(attempts),
            best: hangar_engine::best::best(attempts),
            queue_position,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptView {
    pub index: u32,
    pub status: AttemptStatus,
    pub final_message: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub base_commit: Option<String>,
    pub sandbox: Option<String>,
    pub cache: Option<hangar_engine::cache::CacheInfo>,
    pub timings: Vec<Timing>,
    pub summary: Option<DiffSummary>,
    pub check: Option<CheckResult>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timing {
    pub phase: Phase,
    pub started_at: String,
    pub duration_ms: i64,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> Self {
        AttemptView {
            index: a.index,
            status: a.status,
            final_message: a.final_message.clone(),
            exit_code: a.exit_code,
            error: a.error.clone(),
            base_commit: a.base_commit.clone(),
            sandbox: a.sandbox.clone(),
            cache: a
                .cache
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok()),
            timings: a
                .phases
                .iter()
                .map(|p| Timing {
                    phase: p.phase,
                    started_at: rfc3339(p.started_ms),
                    duration_ms: p.ended_ms - p.started_ms,
                })
                .collect(),
            summary: a.summary,
            check: a.check,
            created_at: rfc3339(a.created_ms),
            started_at: a.started_ms.map(rfc3339),
            finished_at: a.finished_ms.map(rfc3339),
        }
    }
}

/// `GET /v1/tasks/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Logs {
    pub logs: Vec<LogLine>,
}

/// `GET /v1/tasks/{id}/events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<EventRow>,
}

/// `GET /v1/tasks/{id}/network`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub network: Vec<NetworkEntry>,
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
            Event::Line(l) => StreamEvent::Line(l.clone()),
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretList {
    pub secrets: Vec<hangar_engine::secrets::SecretInfo>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
