//! The router: each route turns a request into one call on the engine's runner and its
//! answer into JSON. No decisions are made here beyond HTTP's.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Extension;
use axum::{Json, Router};
use futures_util::StreamExt;
use hangar_engine::forge::{ForgeError, WebhookError};
use hangar_engine::runner::Runner;
use hangar_engine::{Engine, EngineError, Task, TaskFilter, Unfollowable};
use hangar_spec::Workspace;
use hangar_store::db::{AttemptRecord, DbError};

use crate::attach::run_command;
use crate::ops::{
    build_image, collect_cache, export_snapshot, import_image, import_snapshot, list_images,
    list_snapshots, pull_image, push_image, remove_image, reset_cache,
};
use crate::resources::{
    create_env, create_token, delete_env, list_envs, list_secrets, list_tokens, remove_secret,
    remove_token, set_secret, show_env, update_env,
};
use crate::session::create_ui_links;
use crate::wire::{
    AttemptQuery, Diagnostic, ErrorBody, ErrorInfo, Events, Health, Logs, Network, StreamEvent,
    SubmitTask, TaskList, TaskQuery, TaskSummary, TaskView,
};

/// What every handler shares: the API's configuration, handed to [`router`] (and to the
/// web UI, which calls the same operations in-process).
#[derive(Clone)]
pub struct Api {
    pub runner: Arc<Runner>,
    pub listener: Listener,
    /// Requests, and the long work they start, for the daemon's idle exit.
    pub activity: crate::Activity,
    /// The base URLs (`https://host:port`) of the daemon's TCP listeners, for the links
    /// it hands out (`hangar ui`'s sign-in URL); empty without a TCP listener.
    pub sites: Arc<[String]>,
}

/// Who may call without a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The Unix socket (mode 0600, so only its owner connects): without a token, the
    /// caller is the local admin of the default workspace.
    Local,
    /// TCP: every request needs a bearer token, which grants one workspace. `tls`: it
    /// speaks TLS (so the web UI's cookie may be `Secure`).
    Remote { tls: bool },
}

/// The caller of a request, as its token, its web session or the local socket says.
/// Only this crate makes one, so no other layer can name itself an admin.
#[derive(Debug, Clone)]
pub struct Caller {
    workspace: Workspace,
    /// The local admin (tokens are managed by it alone).
    admin: bool,
}

impl Caller {
    pub(crate) fn new(workspace: Workspace, admin: bool) -> Caller {
        Caller { workspace, admin }
    }

    /// The workspace everything the caller sees belongs to.
    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    /// Whether the caller is the local admin (the Unix socket, or a web session opened
    /// by its one-time link).
    pub fn is_admin(&self) -> bool {
        self.admin
    }
}

impl Api {
    /// The engine as the caller sees it: the local admin's view, or a token tenant's.
    pub(crate) fn engine(&self, caller: &Caller) -> Engine {
        let engine = self.runner.engine();
        if caller.admin {
            engine.in_workspace(&caller.workspace)
        } else {
            engine.for_tenant(&caller.workspace)
        }
    }
}

async fn authenticate(
    State(api): State<Api>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Borrowed from the header, never copied: the token reaches only its hash.
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    api.activity.touch();
    let caller = match (bearer, api.listener) {
        (Some(token), _) => match api.runner.engine().authenticate(token).await {
            Ok(Some(workspace)) => Caller {
                workspace,
                admin: false,
            },
            Ok(None) => return unauthorized("the token is not known (it may have been removed)"),
            Err(e) => return ApiError::from(e).into_response(),
        },
        (None, Listener::Local) => Caller {
            workspace: Workspace::default_workspace(),
            admin: true,
        },
        (None, Listener::Remote { .. }) => {
            return unauthorized("this listener needs a bearer token (see `hangar token create`)")
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn unauthorized(why: &str) -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("failed to authenticate: {why}"),
    )
    .into_response()
}

/// Refuses anyone but the local admin; `what` reads after "failed to".
pub(crate) fn admin_only(caller: &Caller, what: &str) -> ApiResult<()> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "failed to {what}: only the local admin (the Unix socket, without a token) may"
            ),
        ))
    }
}

macro_rules! routes {
    ($($method:ident $path:literal => $handler:expr),* $(,)?) => {
        /// Every route as (method, path), exactly as `openapi.json` lists them.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn add_routes(router: Router<Api>) -> Router<Api> {
            router$(.route($path, $method($handler)))*
        }
    };
}

routes! {
    get "/v1/tasks" => list_tasks,
    post "/v1/tasks" => submit_task,
    get "/v1/tasks/{id}" => show_task,
    post "/v1/tasks/{id}/cancel" => cancel_task,
    get "/v1/tasks/{id}/logs" => task_logs,
    get "/v1/tasks/{id}/events" => task_events,
    get "/v1/tasks/{id}/network" => task_network,
    get "/v1/tasks/{id}/diff" => task_diff,
    get "/v1/environments" => list_envs,
    post "/v1/environments" => create_env,
    get "/v1/environments/{name}" => show_env,
    put "/v1/environments/{name}" => update_env,
    delete "/v1/environments/{name}" => delete_env,
    get "/v1/environments/{name}/secrets" => list_secrets,
    put "/v1/environments/{name}/secrets/{secret}" => set_secret,
    delete "/v1/environments/{name}/secrets/{secret}" => remove_secret,
    get "/v1/images" => list_images,
    post "/v1/images/build" => build_image,
    post "/v1/images/pull" => pull_image,
    post "/v1/images/push" => push_image,
    post "/v1/images/import" => import_image,
    delete "/v1/images/{name}" => remove_image,
    get "/v1/cache" => list_snapshots,
    post "/v1/cache/gc" => collect_cache,
    post "/v1/cache/import" => import_snapshot,
    post "/v1/environments/{name}/cache/reset" => reset_cache,
    post "/v1/environments/{name}/cache/export" => export_snapshot,
    post "/v1/run" => run_command,
    get "/v1/tokens" => list_tokens,
    post "/v1/tokens" => create_token,
    delete "/v1/tokens/{id}" => remove_token,
    post "/v1/ui/links" => create_ui_links,
    post "/v1/tasks/{id}/pull" => crate::forge::open_pull,
    put "/v1/environments/{name}/forge" => crate::forge::connect_forge,
}

/// `GET /v1/health` answers without a token (it says nothing of any workspace).
pub const HEALTH: &str = "/v1/health";

/// The API's router, for one kind of listener (`api.listener`); every request and the
/// long work it starts count on `api.activity`.
pub fn router(api: Api) -> Router {
    add_routes(Router::new())
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            authenticate,
        ))
        .route(HEALTH, get(health))
        .route(
            crate::forge::GITHUB_WEBHOOK,
            post(crate::forge::github_webhook).layer(axum::extract::DefaultBodyLimit::max(
                crate::forge::MAX_DELIVERY,
            )),
        )
        .fallback(no_such_route)
        .with_state(api)
}

/// An API error: its status and a message that is safe to show (a 5xx says nothing of
/// the internals; the detail goes to the daemon's log).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    diagnostics: Vec<Diagnostic>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            diagnostics: Vec::new(),
        }
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What it says (safe to show: a 5xx says nothing of the internals).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A bad environment file's problems, each at its line.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// A 400: what the request asked for cannot be read; `message` says what.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    /// A 404: `message` names what was not found.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    /// A 500: `detail` goes to the daemon's log, the answer says nothing of it.
    pub(crate) fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!("request failed: {detail}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "failed to answer: an internal error (see the daemon's log)",
        )
    }

    /// The error's kind, as the API names it (`not-found`, `unauthorized`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What the caller is told: the body of an error answer, or a failed operation's
    /// last event.
    pub(crate) fn into_info(self) -> ErrorInfo {
        ErrorInfo {
            code: self.code.to_string(),
            message: self.message,
            diagnostics: self.diagnostics,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Image(e) => e.into(),
            EngineError::Store(e) => e.into(),
            e @ EngineError::Db(
                DbError::TaskNotFound(_)
                | DbError::EnvNotFound(_)
                | DbError::SecretNotFound { .. }
                | DbError::TokenNotFound(_)
                | DbError::AttemptNotFound { .. },
            ) => ApiError::new(StatusCode::NOT_FOUND, "not-found", e.to_string()),
            e @ EngineError::FollowUp(Unfollowable::NoAttempt { .. }) => {
                ApiError::new(StatusCode::NOT_FOUND, "not-found", e.to_string())
            }
            e @ (EngineError::Db(DbError::AmbiguousTask { .. } | DbError::EnvExists(_))
            | EngineError::SnapshotInUse { .. }
            | EngineError::TaskFinished { .. }
            | EngineError::TaskTaken(_)
            | EngineError::FollowedFileRejected { .. }
            | EngineError::FollowUp(
                Unfollowable::Unfinished { .. } | Unfollowable::NotKept { .. },
            )) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            EngineError::Spec(e) => ApiError {
                diagnostics: Diagnostic::of(&e),
                ..ApiError::bad_request(e.to_string())
            },
            e @ (EngineError::Db(DbError::BadCursor(_))
            | EngineError::InvalidTask(_)
            | EngineError::FollowUp(Unfollowable::Spec(_))
            | EngineError::EnvRenamed { .. }
            | EngineError::LocalRepoUnreadable { .. }
            | EngineError::SecretUndeclared { .. }
            | EngineError::SecretsUnset { .. }
            | EngineError::InvalidWorkspace(_)
            | EngineError::NoCommand
            | EngineError::BadVariable(_)
            | EngineError::Export { .. }
            | EngineError::Import { .. }) => ApiError::bad_request(e.to_string()),
            e @ (EngineError::NothingToPull { .. }
            | EngineError::TreeMismatch { .. }
            | EngineError::NothingToCommit { .. }
            | EngineError::PatchDoesNotApply { .. }
            | EngineError::NoSuchCommit { .. }
            | EngineError::PushRejected { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            // git's own words, the token taken out: the remote's, not hangar's internals.
            e @ EngineError::PushFailed { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "forge", e.to_string())
            }
            e @ (EngineError::BadIdentity { .. }
            | EngineError::BadBranch(_)
            | EngineError::BadPushUrl { .. }
            | EngineError::PullBranch { .. }
            | EngineError::ForgeSecretUnset { .. }) => ApiError::bad_request(e.to_string()),
            // The forge's own answer, relayed: it names no internals of hangar's.
            e @ EngineError::Forge(
                ForgeError::PullExists { .. }
                | ForgeError::Rejected { .. }
                | ForgeError::RateLimited { .. }
                | ForgeError::Failing { .. }
                | ForgeError::Unreachable { .. }
                | ForgeError::BadAnswer { .. },
            ) => ApiError::new(StatusCode::BAD_GATEWAY, "forge", e.to_string()),
            e @ EngineError::Forge(ForgeError::BadRepoName { .. } | ForgeError::BadUrl { .. }) => {
                ApiError::bad_request(e.to_string())
            }
            e @ EngineError::Webhook(WebhookError::Unsigned | WebhookError::BadSignature) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
            e @ EngineError::Webhook(WebhookError::BadPayload { .. }) => {
                ApiError::bad_request(e.to_string())
            }
            e @ EngineError::Forbidden { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            e => ApiError::internal(e),
        }
    }
}

/// How the store and image libraries' errors answer.
impl From<hangar_image::ImageError> for ApiError {
    fn from(e: hangar_image::ImageError) -> ApiError {
        use hangar_image::ImageError as I;
        use hangar_store::StoreError as S;
        match &e {
            I::Store(S::ImageNotFound(_)) => {
                ApiError::new(StatusCode::NOT_FOUND, "not-found", e.to_string())
            }
            I::Store(S::Io { .. } | S::Corrupt { .. } | S::BlobNotFound(_)) | I::Io { .. } => {
                ApiError::internal(e.to_string())
            }
            _ => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<hangar_store::StoreError> for ApiError {
    fn from(e: hangar_store::StoreError) -> ApiError {
        hangar_image::ImageError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let body = ErrorBody {
            error: self.into_info(),
        };
        (status, Json(body)).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

async fn no_such_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no-such-route",
        format!("failed to route {}: no such API route", uri.path()),
    )
}

async fn health(State(api): State<Api>) -> Json<Health> {
    let engine = api.runner.engine();
    Json(Health {
        version: env!("CARGO_PKG_VERSION").to_string(),
        max_running: engine.max_running(),
        running: engine.running(),
    })
}

/// A task's diff as `git apply` reads it, and the attempt it is of.
pub struct AttemptDiff {
    pub attempt: u32,
    pub patch: Vec<u8>,
}

/// The task operations, in the caller's view: each route below is one of these, and the
/// web UI calls them in-process.
impl Api {
    /// A page of the caller's tasks, newest first.
    pub async fn tasks(&self, caller: &Caller, q: TaskQuery) -> ApiResult<TaskList> {
        let page = self
            .engine(caller)
            .tasks(&TaskFilter {
                environment: q.environment,
                status: q.status,
                limit: q.limit.unwrap_or(20),
                cursor: q.cursor,
            })
            .await?;
        Ok(TaskList {
            tasks: page.tasks.iter().map(TaskSummary::from).collect(),
            cursor: page.cursor,
        })
    }

    /// Accepts a task (or a follow-up); it runs in the background.
    pub async fn submit(&self, caller: &Caller, req: SubmitTask) -> ApiResult<TaskView> {
        let task = self.runner.accept(self.engine(caller), &req.into()).await?;
        view(&self.engine(caller), &task).await
    }

    /// A task (an id or a unique prefix) with its attempts.
    pub async fn task(&self, caller: &Caller, id: &str) -> ApiResult<TaskView> {
        let engine = self.engine(caller);
        let task = engine.task(id).await?;
        view(&engine, &task).await
    }

    /// Asks a task's running attempts to stop; answers the task as it is then.
    pub async fn cancel(&self, caller: &Caller, id: &str) -> ApiResult<TaskView> {
        let engine = self.engine(caller);
        let task = engine.task(id).await?;
        engine.cancel(&task).await?;
        view(&engine, &task).await
    }

    /// The stored log lines of a task's attempts (`q`: one, or all).
    pub async fn logs(&self, caller: &Caller, id: &str, q: &AttemptQuery) -> ApiResult<Logs> {
        let (engine, task, only) = self.load_which(caller, id, q).await?;
        Ok(Logs::new(&engine.logs(&task, only).await?))
    }

    /// A task's log as it grows: what is stored, then each line as it comes, then the
    /// task's end. The daemon counts as busy while the stream lives.
    pub async fn follow(
        &self,
        caller: &Caller,
        id: &str,
        q: &AttemptQuery,
    ) -> ApiResult<impl futures_util::Stream<Item = StreamEvent> + Send + 'static> {
        let (engine, task, only) = self.load_which(caller, id, q).await?;
        let busy = self.activity.busy();
        Ok(self.runner.follow(engine, task, only).map(move |f| {
            let _busy = &busy;
            StreamEvent::from(f)
        }))
    }

    /// The agent's events.
    pub async fn events(&self, caller: &Caller, id: &str, q: &AttemptQuery) -> ApiResult<Events> {
        let (engine, task, only) = self.load_which(caller, id, q).await?;
        Ok(Events::new(&engine.events(&task, only).await?))
    }

    /// What the attempts' proxies allowed and refused.
    pub async fn network(&self, caller: &Caller, id: &str, q: &AttemptQuery) -> ApiResult<Network> {
        let (engine, task, only) = self.load_which(caller, id, q).await?;
        Ok(Network::new(&engine.network_log(&task, only).await?))
    }

    /// The diff of one attempt (`q.attempt`, `q.best`, or the best ready else the first).
    pub async fn diff(
        &self,
        caller: &Caller,
        id: &str,
        q: &AttemptQuery,
    ) -> ApiResult<AttemptDiff> {
        let engine = self.engine(caller);
        let (task, attempts) = load(&engine, id).await?;
        let index = pick(q, &task, &attempts)?;
        let Some(patch) = engine.diff(&task, index).await? else {
            let task = task.record();
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "failed to read the diff of task {} attempt {index}: it has none yet (status {})",
                    task.id, task.status
                ),
            ));
        };
        Ok(AttemptDiff {
            attempt: index,
            patch,
        })
    }

    /// The task a request names, the caller's view it was found in, and which of its
    /// attempts the query means (`None`: all).
    async fn load_which(
        &self,
        caller: &Caller,
        id: &str,
        q: &AttemptQuery,
    ) -> ApiResult<(Engine, Task, Option<u32>)> {
        let engine = self.engine(caller);
        let (task, attempts) = load(&engine, id).await?;
        let only = if !q.best && q.attempt.is_none() {
            None
        } else {
            Some(pick(q, &task, &attempts)?)
        };
        Ok((engine, task, only))
    }
}

async fn list_tasks(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    q: QueryIn<TaskQuery>,
) -> ApiResult<Json<TaskList>> {
    Ok(Json(api.tasks(&caller, query(q)?).await?))
}

async fn submit_task(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: JsonIn<SubmitTask>,
) -> ApiResult<(StatusCode, Json<TaskView>)> {
    let req = json_body(body, "the task")?;
    Ok((StatusCode::ACCEPTED, Json(api.submit(&caller, req).await?)))
}

pub(crate) type JsonIn<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// A JSON body, or a 400 that names what is wrong with it.
pub(crate) fn json_body<T>(body: JsonIn<T>, what: &str) -> ApiResult<T> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::bad_request(format!("failed to read {what}: {}", e.body_text())))
}

/// A task of the caller's workspace (an id or a unique prefix) and its attempts.
async fn load(engine: &Engine, id: &str) -> ApiResult<(Task, Vec<AttemptRecord>)> {
    let task = engine.task(id).await?;
    let attempts = engine.attempts(&task).await?;
    Ok((task, attempts))
}

/// A task of `engine`'s view as the API shows it.
async fn view(engine: &Engine, task: &Task) -> ApiResult<TaskView> {
    let attempts = engine.attempts(task).await?;
    let pulls = engine.pull_requests(task).await?;
    let trigger = engine.forge_trigger(task).await?;
    TaskView::new(
        task.record(),
        &attempts,
        engine.queue_position(task),
        &pulls,
        trigger.as_ref(),
    )
    .map_err(ApiError::internal)
}

async fn show_task(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskView>> {
    Ok(Json(api.task(&caller, &id).await?))
}

async fn cancel_task(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<TaskView>)> {
    Ok((StatusCode::ACCEPTED, Json(api.cancel(&caller, &id).await?)))
}

/// The attempt `q` means: `attempt=N`, `best=true`, or (where one is needed) the best
/// ready one, else the first.
fn pick(q: &AttemptQuery, task: &Task, attempts: &[AttemptRecord]) -> ApiResult<u32> {
    let task = task.record();
    let best = hangar_engine::best::best(attempts);
    if q.best {
        return best.ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "failed to pick the best attempt of task {}: none is ready (status {})",
                    task.id, task.status
                ),
            )
        });
    }
    if let Some(n) = q.attempt {
        return if attempts.iter().any(|a| a.index == n) {
            Ok(n)
        } else {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!(
                    "failed to find attempt {n} of task {} ({} attempts)",
                    task.id,
                    attempts.len()
                ),
            ))
        };
    }
    hangar_engine::best::default_attempt(attempts).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("failed to find an attempt of task {}", task.id),
        )
    })
}

pub(crate) type QueryIn<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// A query string, or a 400 that names what is wrong with it.
pub(crate) fn query<T>(q: QueryIn<T>) -> ApiResult<T> {
    q.map(|Query(w)| w)
        .map_err(|e| ApiError::bad_request(format!("failed to read the query: {}", e.body_text())))
}

async fn task_logs(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: QueryIn<AttemptQuery>,
) -> ApiResult<Response> {
    let q = query(q)?;
    if q.follow {
        return Ok(sse(api.follow(&caller, &id, &q).await?).into_response());
    }
    Ok(Json(api.logs(&caller, &id, &q).await?).into_response())
}

/// Server-sent events whose data is each item's JSON, kept alive while they wait.
pub(crate) fn sse<E: serde::Serialize>(
    items: impl futures_util::Stream<Item = E> + Send + 'static,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let events = items.map(|e| {
        Ok(SseEvent::default()
            .json_data(&e)
            .unwrap_or_else(|_| SseEvent::default().data("{}")))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

async fn task_events(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: QueryIn<AttemptQuery>,
) -> ApiResult<Json<Events>> {
    Ok(Json(api.events(&caller, &id, &query(q)?).await?))
}

async fn task_network(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: QueryIn<AttemptQuery>,
) -> ApiResult<Json<Network>> {
    Ok(Json(api.network(&caller, &id, &query(q)?).await?))
}

/// The diff of one attempt, as `git apply` reads it; the attempt's index is in the
/// `hangar-attempt` header.
async fn task_diff(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    q: QueryIn<AttemptQuery>,
) -> ApiResult<Response> {
    let d = api.diff(&caller, &id, &query(q)?).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/x-diff".to_string()),
            (
                header::HeaderName::from_static("hangar-attempt"),
                d.attempt.to_string(),
            ),
        ],
        d.patch,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regression test: a list cursor the caller made up was a 500, and its text (a
    /// newline included) went into the daemon's log as it was, forging a line.
    #[test]
    fn a_bad_cursor_is_a_bad_request() {
        let e = ApiError::from(EngineError::Db(DbError::BadCursor(
            "x\n2026-12-02 INFO hangar: token created".into(),
        )));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message(),
            r#"failed to read list cursor "x\n2026-12-02 INFO hangar: token created": expected one from a previous page"#
        );
    }
}
