//! The task pages: the list (filtered, paged, refreshing itself while tasks run), the
//! form that starts a task or a follow-up, and one task's page (its attempts side by
//! side, their live logs, the agent's events, the network log and the diff inline).

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use futures_util::StreamExt;
use hangar_api::wire::{
    AgentEvent, Approval, AttemptQuery, AttemptStatus, AttemptView, EnvList, Harness, LogLine,
    NetworkEntry, OpenPull, StreamEvent, SubmitTask, TaskList, TaskQuery, TaskStatus, TaskSummary,
    TaskView,
};
use hangar_api::{Api, ApiError};
use maud::{html, Markup};
use serde::Deserialize;

use super::{age, answer, given, see_other, status, time, unix_lines, word, OrPage, Page};
use crate::auth::Session;
use crate::diff::{self, View};
use crate::layout::{csrf_field, page, Section};

/// Tasks on one page of the list.
const PAGE_SIZE: u32 = 50;

/// How often an open log stream checks that its session still lives.
const SESSION_RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// A patch larger than this is not parsed for the page (its whole text would be held
/// and parsed on every view): the page offers it as a download and `hangar diff`.
const MAX_INLINE_PATCH: usize = 1 << 20;

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/ui", get(|| async { see_other("/ui/tasks") }))
        .route("/ui/", get(|| async { see_other("/ui/tasks") }))
        .route("/ui/tasks", get(list).post(submit))
        .route("/ui/tasks/table", get(table))
        .route("/ui/tasks/new", get(new_form))
        .route("/ui/tasks/{id}", get(show))
        .route("/ui/tasks/{id}/live", get(live))
        .route("/ui/tasks/{id}/log", get(log_stream))
        .route("/ui/tasks/{id}/cancel", post(cancel))
        .route("/ui/tasks/{id}/attempts/{attempt}/pull", post(open_pull))
        .route("/ui/tasks/{id}/diff/{attempt}/file/{index}", get(diff_file))
        .route("/ui/tasks/{id}/diff/{attempt}/patch", get(diff_patch))
}

/// The list's query, as the filter form sends it (an empty field is no filter).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListParams {
    environment: String,
    status: String,
    cursor: String,
}

impl ListParams {
    fn query(&self) -> Result<TaskQuery, ApiError> {
        Ok(TaskQuery {
            environment: given(&self.environment),
            status: word("the status filter", &self.status)?,
            limit: Some(PAGE_SIZE),
            cursor: given(&self.cursor),
        })
    }

    /// The filters as a query string (without the cursor).
    fn filters(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(e) = given(&self.environment) {
            q.append_pair("environment", &e);
        }
        if let Some(s) = given(&self.status) {
            q.append_pair("status", &s);
        }
        q.finish()
    }

    /// The whole query string (the cursor too): what the table refreshes itself with.
    fn all(&self) -> String {
        let mut q = self.filters();
        if let Some(c) = given(&self.cursor) {
            let mut s = form_urlencoded::Serializer::new(q);
            s.append_pair("cursor", &c);
            q = s.finish();
        }
        q
    }
}

async fn list(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Query(p): Query<ListParams>,
) -> Page {
    let q = p.query().or_page(&s, Section::Tasks)?;
    let (tasks, envs) = tokio::try_join!(api.tasks(&s.caller, q), api.envs(&s.caller, None))
        .or_page(&s, Section::Tasks)?;
    let body = html! {
        div.toolbar {
            form #filters method="get" action="/ui/tasks" {
                label {
                    "Environment "
                    select name="environment" {
                        option value="" { "all" }
                        @for e in &envs.environments {
                            option value=(e.name) selected[p.environment.trim() == e.name] { (e.name) }
                        }
                    }
                }
                label {
                    "Status "
                    select name="status" {
                        option value="" { "all" }
                        @for st in TaskStatus::ALL {
                            option value=(st.as_str()) selected[p.status.trim() == st.as_str()] { (st.as_str()) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            a.button #new-task href="/ui/tasks/new" { "New task" }
        }
        (task_table(&tasks, &p))
    };
    Ok(answer(
        StatusCode::OK,
        page("Tasks", Section::Tasks, Some(&s), body),
    ))
}

/// The table alone: what it swaps in for itself while it refreshes.
async fn table(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Query(p): Query<ListParams>,
) -> Page {
    let q = p.query().or_page(&s, Section::Tasks)?;
    let tasks = api.tasks(&s.caller, q).await.or_page(&s, Section::Tasks)?;
    Ok(answer(StatusCode::OK, task_table(&tasks, &p)))
}

/// The task table, refreshing itself every 2 s while a task in it is unfinished, and
/// every 10 s on the first page (where new tasks appear).
fn task_table(tasks: &TaskList, p: &ListParams) -> Markup {
    let running = tasks.tasks.iter().any(|t| !t.status.is_finished());
    let every = if running {
        Some("every 2s")
    } else if given(&p.cursor).is_none() {
        Some("every 10s")
    } else {
        None
    };
    let refresh = format!("/ui/tasks/table?{}", p.all());
    html! {
        div #task-table hx-get=[every.map(|_| &refresh)] hx-trigger=[every] hx-swap="outerHTML" {
            (task_rows(&tasks.tasks))
            nav.paging aria-label="Pages" {
                @if given(&p.cursor).is_some() {
                    a #first-page href={ "/ui/tasks?" (p.filters()) } { "Newest" }
                }
                @if let Some(c) = &tasks.cursor {
                    @let next = {
                        let mut q = form_urlencoded::Serializer::new(p.filters());
                        q.append_pair("cursor", c);
                        q.finish()
                    };
                    a #next-page href={ "/ui/tasks?" (next) } { "Older tasks" }
                }
            }
        }
    }
}

/// Tasks as table rows, each linking to its task (the environment page's recent tasks
/// too).
pub(super) fn task_rows(tasks: &[TaskSummary]) -> Markup {
    html! {
        @if tasks.is_empty() {
            p.empty { "No tasks." }
        } @else {
            div.scroll {
                table #tasks {
                    thead {
                        tr {
                            th scope="col" { "Task" }
                            th scope="col" { "Title" }
                            th scope="col" { "Status" }
                            th scope="col" { "Environment" }
                            th scope="col" { "Branch" }
                            th scope="col" { "Attempts" }
                            th scope="col" { "Changes" }
                            th scope="col" { "Age" }
                        }
                    }
                    tbody {
                        @for t in tasks {
                            tr data-task=(t.id) {
                                td.id { a href={ "/ui/tasks/" (t.id) } { code { (t.id) } } }
                                td.title { (t.title) }
                                td.status { (status(t.status.as_str())) }
                                td.env { a href={ "/ui/environments/" (t.environment) } { (t.environment) } }
                                td.branch { (t.branch.as_deref().unwrap_or("default")) }
                                td.attempts { (t.attempt_total) }
                                td.changes {
                                    span.add { "+" (t.summary.lines_added) }
                                    " "
                                    span.del { "−" (t.summary.lines_removed) }
                                }
                                td.age { (age(&t.created_at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The start form's fields, as typed (kept when the form comes back with an error).
#[derive(Debug, Default, Deserialize)]
struct NewTask {
    #[serde(default)]
    environment: String,
    #[serde(default, rename = "ref")]
    git_ref: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    attempts: String,
    #[serde(default)]
    harness: String,
    #[serde(default)]
    approval: String,
    #[serde(default)]
    script: String,
    /// A follow-up's source, `TASK:ATTEMPT`.
    #[serde(default)]
    from: String,
}

impl NewTask {
    fn request(&self) -> Result<SubmitTask, ApiError> {
        let attempts = given(&self.attempts)
            .map(|a| {
                a.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "failed to read attempts `{a}`: expected a whole number, 1 or more"
                    ))
                })
            })
            .transpose()?;
        // A hexadecimal name of 7 or more digits is a commit; anything else a branch.
        let (branch, commit) = match given(&self.git_ref) {
            Some(r) if r.len() >= 7 && r.bytes().all(|b| b.is_ascii_hexdigit()) => (None, Some(r)),
            r => (r, None),
        };
        Ok(SubmitTask {
            environment: self.environment.trim().to_string(),
            from: given(&self.from),
            prompt: unix_lines(&self.prompt),
            branch,
            commit,
            harness: word("the harness", &self.harness)?,
            approval: word("the approval", &self.approval)?,
            attempts,
            script: Some(unix_lines(&self.script)).filter(|s| !s.trim().is_empty()),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NewParams {
    from: String,
    environment: String,
}

async fn new_form(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Query(p): Query<NewParams>,
) -> Page {
    let envs = api
        .envs(&s.caller, None)
        .await
        .or_page(&s, Section::Tasks)?;
    let typed = NewTask {
        from: given(&p.from).unwrap_or_default(),
        environment: given(&p.environment).unwrap_or_default(),
        attempts: "1".into(),
        ..NewTask::default()
    };
    Ok(answer(
        StatusCode::OK,
        new_task_page(&s, &envs, &typed, None),
    ))
}

async fn submit(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Form(typed): Form<NewTask>,
) -> Page {
    let submitted = match typed.request() {
        Ok(req) => api.submit(&s.caller, req).await,
        Err(e) => Err(e),
    };
    match submitted {
        Ok(task) => Ok(see_other(&format!("/ui/tasks/{}", task.task.id))),
        Err(e) => {
            let envs = api
                .envs(&s.caller, None)
                .await
                .or_page(&s, Section::Tasks)?;
            Ok(answer(
                e.status(),
                new_task_page(&s, &envs, &typed, Some(&e)),
            ))
        }
    }
}

fn new_task_page(s: &Session, envs: &EnvList, typed: &NewTask, error: Option<&ApiError>) -> Markup {
    let follow_up = !typed.from.trim().is_empty();
    let title = if follow_up {
        "Follow-up task"
    } else {
        "New task"
    };
    let body = html! {
        @if let Some(e) = error {
            p.error role="alert" { (e.message()) }
        }
        form #new-task.stack method="post" action="/ui/tasks" {
            (csrf_field(&s.csrf))
            @if follow_up {
                p { "Continues from attempt " code { (typed.from) } ", in its environment, from where that attempt left its workspace." }
                input type="hidden" name="from" value=(typed.from);
            } @else {
                label {
                    "Environment"
                    select name="environment" required {
                        @for e in &envs.environments {
                            option value=(e.name) selected[typed.environment == e.name] { (e.name) " (" (e.repo) ")" }
                        }
                    }
                }
                label {
                    "Branch or commit"
                    input name="ref" value=(typed.git_ref) placeholder="the environment's default branch" autocomplete="off";
                }
            }
            label {
                "Prompt"
                textarea name="prompt" rows="6" required { (typed.prompt) }
            }
            div.row {
                label {
                    "Attempts"
                    input type="number" name="attempts" min="1" value=(typed.attempts);
                }
                label {
                    "Harness"
                    select name="harness" {
                        option value="" { "the environment's" }
                        @for h in Harness::ALL {
                            option value=(h.as_str()) selected[typed.harness == h.as_str()] { (h.as_str()) }
                        }
                    }
                }
                label {
                    "Approval"
                    select name="approval" {
                        option value="" { "the environment's" }
                        @for a in Approval::ALL {
                            option value=(a.as_str()) selected[typed.approval == a.as_str()] { (a.as_str()) }
                        }
                    }
                }
            }
            details open[!typed.script.is_empty()] {
                summary { "Agent script (the script harness)" }
                label {
                    "Script"
                    textarea name="script" rows="6" spellcheck="false" { (typed.script) }
                }
            }
            button type="submit" { "Start" }
        }
    };
    page(title, Section::Tasks, Some(s), body)
}

/// Which attempt's diff the task page shows, and how.
#[derive(Debug, Default, Deserialize)]
struct ShowParams {
    diff: Option<u32>,
    #[serde(default)]
    view: View,
    /// The `updated_at` the page last saw (the live refresh's): the lower part is sent
    /// again only when the task changed since.
    seen: Option<String>,
}

/// Everything the task page shows, read as the caller.
struct Shown {
    task: TaskView,
    logs: Vec<LogLine>,
    events: Vec<AgentEvent>,
    network: Vec<NetworkEntry>,
    /// The attempt whose diff is shown, and the diff.
    diff: Option<(u32, String)>,
}

/// What the page shows of `task` beside the task itself; `logs`: the stored log too (a
/// running task's comes by its stream).
async fn read(
    api: &Api,
    s: &Session,
    task: TaskView,
    p: &ShowParams,
    logs: bool,
) -> Result<Shown, ApiError> {
    let all = AttemptQuery::default();
    // The task's id, not the prefix the URL may have.
    let id = task.task.id.clone();
    let (events, network) = tokio::try_join!(
        api.events(&s.caller, &id, &all),
        api.network(&s.caller, &id, &all)
    )?;
    let logs = if logs && task.task.status.is_finished() {
        api.logs(&s.caller, &id, &all).await?.logs
    } else {
        Vec::new()
    };
    let which = AttemptQuery {
        attempt: p.diff,
        ..AttemptQuery::default()
    };
    let diff = if task.attempts.iter().any(|a| a.summary.is_some()) {
        match api.diff(&s.caller, &id, &which).await {
            Ok(d) => Some((d.attempt, String::from_utf8_lossy(&d.patch).into_owned())),
            Err(e) if e.status() == StatusCode::CONFLICT => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    Ok(Shown {
        task,
        logs,
        events: events.events,
        network: network.network,
        diff,
    })
}

async fn show(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(p): Query<ShowParams>,
) -> Page {
    let task = api.task(&s.caller, &id).await.or_page(&s, Section::Tasks)?;
    let shown = read(&api, &s, task, &p, true)
        .await
        .or_page(&s, Section::Tasks)?;
    let t = &shown.task;
    let body = html! {
        section.task-head {
            dl.meta {
                dt { "Environment" } dd { a href={ "/ui/environments/" (t.task.environment) } { (t.task.environment) } " v" (t.environment_version) }
                dt { "Branch" } dd { (t.task.branch.as_deref().unwrap_or("default")) @if let Some(c) = &t.commit { " at " code { (c) } } }
                dt { "Created" } dd { (time(&t.task.created_at)) }
                @if let Some(from) = &t.from {
                    dt { "Follows" } dd { a href={ "/ui/tasks/" (from.split(':').next().unwrap_or(from)) } { code { (from) } } }
                }
            }
            h2 { "Prompt" }
            pre.prompt { (t.prompt) }
        }
        (live_top(&s.csrf, t, &p))
        (logs_section(t, &shown.logs))
        (live_bottom(&shown, &p, false))
    };
    Ok(answer(
        StatusCode::OK,
        page(&t.task.title, Section::Tasks, Some(&s), body),
    ))
}

/// The parts of the task page that change while it runs: swapped in by its refresh.
async fn live(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    Query(p): Query<ShowParams>,
) -> Page {
    let task = api.task(&s.caller, &id).await.or_page(&s, Section::Tasks)?;
    let top = live_top(&s.csrf, &task, &p);
    if p.seen.as_deref() == Some(task.task.updated_at.as_str()) {
        return Ok(answer(StatusCode::OK, top));
    }
    let shown = read(&api, &s, task, &p, false)
        .await
        .or_page(&s, Section::Tasks)?;
    let markup = html! {
        (top)
        (live_bottom(&shown, &p, true))
    };
    Ok(answer(StatusCode::OK, markup))
}

/// Status, queue position, the cancel button and the attempts side by side; refreshes
/// itself every 2 s until the task is finished.
fn live_top(csrf: &str, t: &TaskView, p: &ShowParams) -> Markup {
    let finished = t.task.status.is_finished();
    // The page's own choices (which diff, which view) travel with each refresh.
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("seen", &t.task.updated_at);
    if let Some(d) = p.diff {
        q.append_pair("diff", &d.to_string());
    }
    if p.view == View::Split {
        q.append_pair("view", "split");
    }
    let refresh = format!("/ui/tasks/{}/live?{}", t.task.id, q.finish());
    html! {
        section #live-top hx-get=[(!finished).then_some(&refresh)] hx-trigger=[(!finished).then_some("every 2s")] hx-swap="outerHTML" {
            div.toolbar {
                p { "Status " span #task-status { (status(t.task.status.as_str())) }
                    @if let Some(n) = t.queue_position { " · waiting for a slot, " (n) " in the queue" }
                }
                @if !finished {
                    form #cancel method="post" action={ "/ui/tasks/" (t.task.id) "/cancel" } {
                        (csrf_field(csrf))
                        button.danger type="submit" { "Cancel" }
                    }
                }
            }
            h2 { "Attempts" }
            div #attempts.attempts {
                @for a in &t.attempts {
                    (attempt_card(csrf, t, a))
                }
            }
        }
    }
}

fn attempt_card(csrf: &str, t: &TaskView, a: &AttemptView) -> Markup {
    let best = t.best == Some(a.index);
    let rank = t.ranking.iter().position(|i| *i == a.index).map(|r| r + 1);
    html! {
        article.attempt.best[best] data-attempt=(a.index) aria-label={ "Attempt " (a.index) } {
            header {
                h3 { "Attempt " (a.index) }
                @if best { span.badge.best-mark { "best" } }
            }
            dl {
                dt { "Status" } dd.status { (status(a.status.as_str())) }
                dt { "Rank" } dd.rank { @if let Some(r) = rank { (r) " of " (t.ranking.len()) } @else { "—" } }
                dt { "Cache" } dd.cache {
                    @if let Some(c) = &a.cache {
                        span class={ "badge cache-" (c.status.as_str()) } { (c.status.as_str()) } " " (c.reason)
                    } @else { "—" }
                }
                dt { "Check" } dd.check {
                    @match &a.check {
                        Some(c) if c.passed => span.badge.status-ready { "passed" },
                        Some(c) => span.badge.status-error { "failed" @if let Some(code) = c.exit_code { " (exit " (code) ")" } @else { " (stopped)" } },
                        None => "—",
                    }
                }
                dt { "Changes" } dd {
                    @if let Some(d) = &a.summary {
                        (d.files_changed) (if d.files_changed == 1 { " file, " } else { " files, " }) span.add { "+" (d.lines_added) } " " span.del { "−" (d.lines_removed) }
                    } @else { "—" }
                }
                @if let Some(started) = &a.started_at { dt { "Started" } dd { (time(started)) } }
                @if let Some(done) = &a.finished_at { dt { "Finished" } dd { (time(done)) } }
            }
            @if !a.timings.is_empty() {
                table.timings {
                    caption { "Phases" }
                    tbody {
                        @for p in &a.timings {
                            tr { th scope="row" { (p.phase.as_str()) } td { (hangar_spec::format_millis(p.duration_ms)) } }
                        }
                    }
                }
            }
            @if let Some(e) = &a.error {
                p.error { (e) }
            }
            @if let Some(m) = &a.final_message {
                h4 { "Final message" }
                pre.final-message { (m) }
            }
            @if a.status == AttemptStatus::Ready {
                a.follow-up.button href={ "/ui/tasks/new?from=" (t.task.id) ":" (a.index) } { "Follow up" }
            }
            @let pull = t.pull_requests.iter().find(|p| p.attempt == a.index);
            @match pull {
                Some(p) => {
                    p.pull-request {
                        @match (&p.url, p.number) {
                            // The forge's answer names the page; only a web address becomes a link.
                            (Some(url), Some(n)) if url.starts_with("https://") || url.starts_with("http://") => { "Pull request " a href=(url) rel="noreferrer" { "#" (n) } " from " code { (p.branch) } }
                            (Some(url), Some(n)) => { "Pull request #" (n) " (" (url) ") from " code { (p.branch) } }
                            _ => { "Branch " code { (p.branch) } " pushed (no pull request: the environment names no forge)" }
                        }
                    }
                }
                None => {
                    @if a.status == AttemptStatus::Ready && a.summary.is_some_and(|d| d.files_changed > 0) {
                        form.open-pull method="post" action={ "/ui/tasks/" (t.task.id) "/attempts/" (a.index) "/pull" } {
                            (csrf_field(csrf))
                            button type="submit" { "Open pull request" }
                        }
                    }
                }
            }
        }
    }
}

/// Each attempt's log: stored lines for a finished task; for a running one, one event
/// stream whose lines go to their attempt's box as they come.
fn logs_section(t: &TaskView, stored: &[LogLine]) -> Markup {
    let finished = t.task.status.is_finished();
    let stream = format!("/ui/tasks/{}/log", t.task.id);
    html! {
        section #logs {
            h2 { "Logs" }
            div hx-ext=[(!finished).then_some("sse")] sse-connect=[(!finished).then_some(&stream)] sse-close=[(!finished).then_some("end")] {
                @for a in &t.attempts {
                    details.log open {
                        summary { "Attempt " (a.index) }
                        pre.log id=(format!("log-{}", a.index)) sse-swap=[(!finished).then(|| format!("line-{}", a.index))] hx-swap=[(!finished).then_some("beforeend")] tabindex="0" aria-live="off" {
                            @for l in stored.iter().filter(|l| l.attempt == a.index) {
                                (log_line(l))
                            }
                        }
                    }
                }
                p.log-note #log-note sse-swap=[(!finished).then_some("note")] hx-swap=[(!finished).then_some("innerHTML")] {}
            }
        }
    }
}

fn log_line(l: &LogLine) -> Markup {
    html! { span class={ "line " (l.stream.as_str()) } data-phase=(l.phase.as_str()) { (l.line) "\n" } }
}

/// The log as it grows, as server-sent events of HTML: `line-N` for attempt N's box,
/// `note` for what the page should say, `end` when the task is finished. It also ends
/// when its session does (signed out, expired, its token removed), checked every
/// [`SESSION_RECHECK`] while it is open.
async fn log_stream(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Page {
    let q = AttemptQuery {
        follow: true,
        ..AttemptQuery::default()
    };
    let events = api
        .follow(&s.caller, &id, &q)
        .await
        .or_page(&s, Section::Tasks)?;
    let ended = async move {
        loop {
            tokio::time::sleep(SESSION_RECHECK).await;
            if !s.alive(&api).await {
                break;
            }
        }
    };
    let events = events.take_until(ended);
    let events = events.map(|e| -> Result<SseEvent, Infallible> {
        Ok(match e {
            StreamEvent::Line(l) => SseEvent::default()
                .event(format!("line-{}", l.attempt))
                .data(log_line(&l).into_string()),
            StreamEvent::PhaseStarted { attempt, phase } => SseEvent::default()
                .event(format!("line-{attempt}"))
                .data(html! { span.line.phase { "── " (phase.as_str()) " ──\n" } }.into_string()),
            StreamEvent::PhaseFinished {
                attempt,
                phase,
                ms,
                ok,
            } => SseEvent::default().event(format!("line-{attempt}")).data(
                html! { span.line.phase { "── " (phase.as_str()) (if ok { " done in " } else { " failed after " }) (hangar_spec::format_millis(ms)) " ──\n" } }
                    .into_string(),
            ),
            StreamEvent::Missed { count } => SseEvent::default().event("note").data(
                html! { (count) " log lines were skipped while this page fell behind; they are in the stored log." }
                    .into_string(),
            ),
            StreamEvent::End { status } => SseEvent::default().event("end").data(status.as_str()),
        })
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The apply line, the diff, the agent's events and the network log; `oob`: as a part
/// of the refresh's answer that replaces its namesake elsewhere on the page.
fn live_bottom(shown: &Shown, p: &ShowParams, oob: bool) -> Markup {
    let t = &shown.task;
    let id = &t.task.id;
    html! {
        section #live-bottom hx-swap-oob=[oob.then_some("true")] {
            @if let Some((attempt, patch)) = &shown.diff {
                // Without `?diff=` the page shows the attempt `hangar apply` picks too.
                @let apply = match p.diff {
                    None => format!("hangar apply {id}"),
                    Some(n) => format!("hangar apply {id} --attempt {n}"),
                };
                h2 #diff-heading { "Diff of attempt " (attempt) @if t.best == Some(*attempt) { " (best)" } }
                div.toolbar {
                    p #apply-line { code { (apply) } }
                    button #copy-apply type="button" data-copy="#apply-line code" { "Copy" }
                    @if t.attempts.iter().filter(|a| a.summary.is_some()).count() > 1 {
                        nav.attempt-diffs aria-label="Diff of attempt" {
                            @for a in t.attempts.iter().filter(|a| a.summary.is_some()) {
                                a href={ "?diff=" (a.index) "#diff-heading" } aria-current=[(a.index == *attempt).then_some("true")] { "attempt " (a.index) }
                            }
                        }
                    }
                }
                @if patch.len() > MAX_INLINE_PATCH {
                    p.file-note #diff {
                        "This diff is " (super::bytes(patch.len())) ": too large to show in the page. "
                        a href={ "/ui/tasks/" (id) "/diff/" (attempt) "/patch" } download { "Download the patch" }
                        " or print it with " code { "hangar diff " (id) } "."
                    }
                } @else {
                    (diff::render(&diff::parse(patch), p.view, &links(id, *attempt)))
                }
            } @else if !t.task.status.is_finished() {
                p.empty #diff-pending { "The diff appears here when an attempt finishes." }
            } @else {
                p.empty { "No attempt left a diff." }
            }
            h2 { "Agent events" }
            (events_list(&shown.events))
            h2 { "Network" }
            (network_table(&shown.network))
        }
    }
}

fn events_list(events: &[AgentEvent]) -> Markup {
    html! {
        @if events.is_empty() {
            p.empty #events { "No agent events." }
        } @else {
            ol #events.events {
                @for e in events {
                    li class={ "event kind-" (e.kind) } {
                        span.badge { (e.kind) } " "
                        span.attempt-no { "attempt " (e.attempt) } " "
                        @if let Some(code) = e.exit_code {
                            span class={ "badge " (if code == 0 { "status-ready" } else { "status-error" }) } { "exit " (code) } " "
                        }
                        pre.event-text { (e.text) }
                        @if let Some(d) = &e.detail {
                            details { summary { "Output" } pre { (d) } }
                        }
                    }
                }
            }
        }
    }
}

fn network_table(entries: &[NetworkEntry]) -> Markup {
    html! {
        @if entries.is_empty() {
            p.empty #network { "No network requests." }
        } @else {
            div.scroll {
                table #network {
                    thead { tr {
                        th scope="col" { "Attempt" } th scope="col" { "Phase" } th scope="col" { "Request" }
                        th scope="col" { "Decision" } th scope="col" { "Rule" } th scope="col" { "Bytes up/down" }
                    } }
                    tbody {
                        @for e in entries {
                            @let class = match e.decision.as_str() { "allowed" => "allowed", "failed" => "failed", _ => "blocked" };
                            tr class=(class) {
                                td { (e.attempt) }
                                td { (e.phase) }
                                td { @if let Some(m) = &e.method { (m) " " } (e.host) ":" (e.port) @if let Some(p) = &e.path { (p) } }
                                td { (e.decision) @if let Some(n) = &e.note { " (" (n) ")" } }
                                td { (e.rule.as_deref().unwrap_or("—")) }
                                td { (e.bytes_up) " / " (e.bytes_down) }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn cancel(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Page {
    let t = api
        .cancel(&s.caller, &id)
        .await
        .or_page(&s, Section::Tasks)?;
    Ok(see_other(&format!("/ui/tasks/{}", t.task.id)))
}

/// Pushes the attempt's diff as a branch and opens its pull request, then shows the
/// task (whose attempt now links to it).
async fn open_pull(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Path((id, attempt)): Path<(String, u32)>,
) -> Page {
    let req = OpenPull {
        attempt: Some(attempt),
        ..OpenPull::default()
    };
    let opened = api
        .open_pull(&s.caller, &id, &req)
        .await
        .or_page(&s, Section::Tasks)?;
    Ok(see_other(&format!("/ui/tasks/{}", opened.task)))
}

/// One file of a diff in the other view: what a file's view switch swaps in.
async fn diff_file(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Path((id, attempt, index)): Path<(String, u32, usize)>,
    Query(p): Query<ShowParams>,
) -> Page {
    let q = AttemptQuery {
        attempt: Some(attempt),
        ..AttemptQuery::default()
    };
    let d = api
        .diff(&s.caller, &id, &q)
        .await
        .or_page(&s, Section::Tasks)?;
    if d.patch.len() > MAX_INLINE_PATCH {
        return Err(ApiError::bad_request(format!(
            "failed to show a file of the diff of task {id} attempt {attempt}: the diff is {}, \
             too large to show in the page (download it, or `hangar diff {id}`)",
            super::bytes(d.patch.len())
        )))
        .or_page(&s, Section::Tasks);
    }
    let files = diff::parse(&String::from_utf8_lossy(&d.patch));
    let file = files
        .get(index)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "failed to find file {index} of the diff of task {id} attempt {attempt} ({} files)",
                files.len()
            ))
        })
        .or_page(&s, Section::Tasks)?;
    Ok(answer(
        StatusCode::OK,
        diff::render_file(file, index, p.view, &links(&id, attempt)),
    ))
}

/// The links of attempt `attempt`'s diff: its files' fragments, and a page that shows
/// that attempt's diff again.
fn links(id: &str, attempt: u32) -> diff::Links {
    diff::Links {
        file_url: format!("/ui/tasks/{id}/diff/{attempt}/file"),
        page_query: format!("diff={attempt}"),
    }
}

/// An attempt's patch as a file to save (`git apply` reads it), for a diff too large
/// for the page.
async fn diff_patch(
    State(api): State<Api>,
    Extension(s): Extension<Session>,
    Path((id, attempt)): Path<(String, u32)>,
) -> Page {
    let q = AttemptQuery {
        attempt: Some(attempt),
        ..AttemptQuery::default()
    };
    let d = api
        .diff(&s.caller, &id, &q)
        .await
        .or_page(&s, Section::Tasks)?;
    // The API found the task by `id`, so it is hex digits (a prefix at most).
    let name = format!("attachment; filename=\"task-{id}-{attempt}.patch\"");
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/x-diff; charset=utf-8".to_string(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, name),
        ],
        d.patch,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::hostile::{self, assert_inert};
    use hangar_api::wire::{CacheInfo, CacheStatus, DiffSummary, Phase, Stream};

    fn summary(title: &str, env: &str) -> TaskSummary {
        TaskSummary {
            id: "0123456789ab".into(),
            title: title.into(),
            status: TaskStatus::Ready,
            environment: env.into(),
            branch: Some(hostile::all()),
            created_at: "2026-12-02T06:00:00.000Z".into(),
            updated_at: "2026-12-02T06:01:00.000Z".into(),
            attempt_total: 1,
            summary: DiffSummary::default(),
        }
    }

    fn attempt(index: u32) -> AttemptView {
        AttemptView {
            index,
            status: AttemptStatus::Ready,
            final_message: Some(hostile::all()),
            exit_code: Some(0),
            error: Some(hostile::all()),
            base_commit: None,
            sandbox: None,
            cache: Some(CacheInfo {
                status: CacheStatus::Miss,
                reason: hostile::all(),
                snapshot: "3f2a".into(),
            }),
            timings: vec![],
            summary: None,
            check: None,
            created_at: "2026-12-02T06:00:00.000Z".into(),
            started_at: None,
            finished_at: None,
        }
    }

    fn view(attempts: Vec<AttemptView>) -> TaskView {
        TaskView {
            task: summary(&hostile::all(), "web"),
            prompt: hostile::all(),
            commit: None,
            environment_version: 1,
            from: None,
            ranking: attempts.iter().map(|a| a.index).collect(),
            best: attempts.first().map(|a| a.index),
            attempts,
            queue_position: None,
            pull_requests: vec![hangar_api::wire::PullView {
                attempt: 1,
                branch: hostile::all(),
                base: hostile::all(),
                commit: hostile::all(),
                number: Some(7),
                url: Some("javascript:alert(1)".into()),
                created_at: "2026-12-02T06:00:00.000Z".into(),
            }],
            forge: None,
        }
    }

    #[test]
    fn what_a_task_says_renders_as_text() {
        // A title, an environment name and a branch in the list.
        assert_inert(&task_rows(&[summary(&hostile::all(), hostile::URL)]).into_string());
        // The attempts' messages, errors and cache reasons.
        let t = view(vec![attempt(1), attempt(2)]);
        for a in &t.attempts {
            assert_inert(&attempt_card("csrf", &t, a).into_string());
        }
        // A pull request's page address from the forge is a link only when it is a web
        // address.
        let card = attempt_card("csrf", &t, &t.attempts[0]).into_string();
        assert!(card.contains("Pull request #7"), "{card}");
        assert!(!card.contains("href=\"javascript:"), "{card}");
        // Log lines, stored or streamed.
        let line = LogLine {
            attempt: 1,
            seq: 1,
            ts_ms: 0,
            phase: Phase::Agent,
            stream: Stream::Stdout,
            line: hostile::all(),
        };
        assert_inert(&logs_section(&t, std::slice::from_ref(&line)).into_string());
        assert_inert(&log_line(&line).into_string());
        // The agent's events and the network log.
        let event = AgentEvent {
            attempt: 1,
            seq: 1,
            ts_ms: 0,
            kind: hostile::all(),
            text: hostile::all(),
            exit_code: Some(1),
            detail: Some(hostile::all()),
        };
        assert_inert(&events_list(&[event]).into_string());
        let entry = NetworkEntry {
            attempt: 1,
            seq: 1,
            ts_ms: 0,
            phase: "agent".into(),
            method: Some("GET".into()),
            path: Some(hostile::all()),
            host: hostile::URL.into(),
            port: 443,
            decision: hostile::all(),
            rule: Some(hostile::all()),
            bytes_up: 0,
            bytes_down: 0,
            note: Some(hostile::all()),
        };
        assert_inert(&network_table(&[entry]).into_string());
    }

    #[test]
    fn the_best_attempt_is_marked_and_each_ranked() {
        let mut t = view(vec![attempt(1), attempt(2), attempt(3)]);
        t.ranking = vec![2, 3, 1];
        t.best = Some(2);
        let cards: Vec<String> = t
            .attempts
            .iter()
            .map(|a| attempt_card("csrf", &t, a).into_string())
            .collect();
        assert!(cards[1].contains(r#"class="attempt best""#), "{}", cards[1]);
        assert!(!cards[0].contains("attempt best"));
        for (card, rank) in cards.iter().zip(["3 of 3", "1 of 3", "2 of 3"]) {
            assert!(
                card.contains(&format!(r#"<dd class="rank">{rank}</dd>"#)),
                "{card}"
            );
        }
    }

    #[test]
    fn a_running_task_refreshes_itself_and_a_finished_one_stops() {
        let s = "c";
        let p = ShowParams {
            diff: Some(2),
            view: View::Split,
            seen: None,
        };
        let mut t = view(vec![attempt(1)]);
        t.task.status = TaskStatus::Running;
        let running = live_top(s, &t, &p).into_string();
        assert!(running.contains(r#"hx-trigger="every 2s""#), "{running}");
        // The page's diff and view ride along, and what it last saw.
        assert!(
            running.contains("/live?seen=2026-12-02T06%3A01%3A00.000Z&amp;diff=2&amp;view=split"),
            "{running}"
        );
        assert!(running.contains(r#"<form id="cancel""#));
        t.task.status = TaskStatus::Ready;
        let finished = live_top(s, &t, &p).into_string();
        assert!(
            !finished.contains("hx-trigger") && !finished.contains("hx-get"),
            "{finished}"
        );
        assert!(!finished.contains("cancel"));
        // A finished task's log is the stored one: no stream.
        assert!(!logs_section(&t, &[]).into_string().contains("sse-connect"));
        t.task.status = TaskStatus::Running;
        let live = logs_section(&t, &[]).into_string();
        assert!(
            live.contains(r#"sse-connect="/ui/tasks/0123456789ab/log""#),
            "{live}"
        );
        assert!(live.contains(r#"sse-swap="line-1""#), "{live}");
    }

    fn check_request(typed: NewTask, expected: Result<SubmitTask, &str>) {
        match (typed.request(), expected) {
            (Ok(got), Ok(want)) => {
                assert_eq!(
                    serde_json::to_value(got).unwrap(),
                    serde_json::to_value(want).unwrap()
                )
            }
            (Err(got), Err(want)) => assert!(got.message().contains(want), "{}", got.message()),
            (got, want) => panic!(
                "got {:?}, want {want:?}",
                got.map(|r| serde_json::to_string(&r).unwrap())
                    .map_err(|e| e.message().to_string())
            ),
        }
    }

    #[test]
    fn the_start_form_reads_into_a_task_request() {
        let form = |f: fn(&mut NewTask)| {
            let mut t = NewTask {
                environment: "web".into(),
                prompt: "fix it".into(),
                attempts: "1".into(),
                ..NewTask::default()
            };
            f(&mut t);
            t
        };
        let request = |f: fn(&mut SubmitTask)| {
            let mut r = SubmitTask {
                environment: "web".into(),
                prompt: "fix it".into(),
                attempts: Some(1),
                ..SubmitTask::default()
            };
            f(&mut r);
            Ok(r)
        };
        check_request(form(|_| {}), request(|_| {}));
        check_request(
            form(|t| t.git_ref = " main ".into()),
            request(|r| r.branch = Some("main".into())),
        );
        check_request(
            form(|t| t.git_ref = "3f2a9c1".into()),
            request(|r| r.commit = Some("3f2a9c1".into())),
        );
        check_request(
            form(|t| t.git_ref = "cafe".into()),
            request(|r| r.branch = Some("cafe".into())),
        );
        check_request(
            form(|t| t.attempts = "3".into()),
            request(|r| r.attempts = Some(3)),
        );
        check_request(
            form(|t| t.attempts = "".into()),
            request(|r| r.attempts = None),
        );
        check_request(
            form(|t| t.attempts = "0".into()),
            Err("failed to read attempts `0`"),
        );
        check_request(
            form(|t| t.attempts = "two".into()),
            Err("expected a whole number"),
        );
        check_request(
            form(|t| t.harness = "script".into()),
            request(|r| r.harness = Some(Harness::Script)),
        );
        check_request(
            form(|t| t.harness = "gpt".into()),
            Err("failed to read the harness: `gpt` is not one of codex, claude"),
        );
        check_request(
            form(|t| t.approval = "auto".into()),
            request(|r| r.approval = Some(Approval::Auto)),
        );
        check_request(
            form(|t| t.approval = "yolo".into()),
            Err("failed to read the approval: `yolo` is not one of read-only, auto, full-access"),
        );
        check_request(form(|t| t.script = "  \n".into()), request(|_| {}));
        check_request(
            form(|t| t.script = "echo hi".into()),
            request(|r| r.script = Some("echo hi".into())),
        );
        // What a browser sends: CRLF line breaks, which bash would not run.
        check_request(
            form(|t| {
                t.script = "set -e\r\necho hi\r\n".into();
                t.prompt = "fix\r\nit".into();
            }),
            request(|r| {
                r.script = Some("set -e\necho hi\n".into());
                r.prompt = "fix\nit".into();
            }),
        );
        check_request(
            form(|t| t.from = "0123456789ab:2".into()),
            request(|r| r.from = Some("0123456789ab:2".into())),
        );
    }

    fn check_filters(p: ListParams, query: Result<TaskQuery, &str>, string: &str) {
        match (p.query(), query) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => assert!(got.message().contains(want), "{}", got.message()),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
        assert_eq!(p.all(), string);
    }

    #[test]
    fn list_filters_read_and_travel() {
        let q = |f: fn(&mut TaskQuery)| {
            let mut q = TaskQuery {
                limit: Some(PAGE_SIZE),
                ..TaskQuery::default()
            };
            f(&mut q);
            Ok(q)
        };
        check_filters(ListParams::default(), q(|_| {}), "");
        check_filters(
            ListParams {
                environment: "".into(),
                status: "".into(),
                cursor: "".into(),
            },
            q(|_| {}),
            "",
        );
        check_filters(
            ListParams {
                environment: "web app".into(),
                status: "running".into(),
                cursor: "17:ab".into(),
            },
            q(|q| {
                q.environment = Some("web app".into());
                q.status = Some(TaskStatus::Running);
                q.cursor = Some("17:ab".into());
            }),
            "environment=web+app&status=running&cursor=17%3Aab",
        );
        check_filters(
            ListParams {
                status: "done".into(),
                ..ListParams::default()
            },
            Err("failed to read the status filter: `done` is not one of pending, running"),
            "status=done",
        );
    }
}
