//! The forge's routes: `POST /v1/tasks/{id}/pull` (`hangar pr`), `PUT
//! /v1/environments/{name}/forge` (`hangar forge connect`) and the GitHub webhook, which
//! needs no token: its deliveries are signed, and the engine checks the signature
//! against each listening environment's secret before it reads anything of the body.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hangar_engine::{Delivery, ForgeConnect, Heard, PullOptions};

use crate::server::{json_body, query, Api, ApiError, ApiResult, Caller, JsonIn, QueryIn};
use crate::wire::{ConnectForge, ForgeConnected, OpenPull, PullOpened, PullView, WebhookAnswer};

/// Where GitHub delivers webhooks (on every listener; reachable by GitHub only on a TCP
/// one).
pub const GITHUB_WEBHOOK: &str = "/v1/forge/github/webhook";

/// The largest delivery read: GitHub caps payloads at 25 MB.
pub(crate) const MAX_DELIVERY: usize = 25 << 20;

/// The secrets `hangar forge connect` declares unless told other names.
const TOKEN_SECRET: &str = "GITHUB_TOKEN";
const WEBHOOK_SECRET: &str = "GITHUB_WEBHOOK_SECRET";

impl Api {
    /// Pushes an attempt's diff as a branch and opens its pull request; the same attempt
    /// asked again answers its first branch and pull request.
    pub async fn open_pull(
        &self,
        caller: &Caller,
        id: &str,
        req: &OpenPull,
    ) -> ApiResult<PullOpened> {
        let engine = self.engine(caller);
        let task = engine.task(id).await?;
        let pulled = engine
            .open_pull(
                &task,
                &PullOptions {
                    attempt: req.attempt,
                    branch: req.branch.clone(),
                    base: req.base.clone(),
                    draft: req.draft,
                },
            )
            .await?;
        Ok(PullOpened {
            task: task.id().to_string(),
            pull: PullView::from(&pulled.record),
            new: pulled.new,
            forge: pulled.forge,
        })
    }

    /// Names the environment's forge, declaring its two secrets and setting the webhook
    /// secret's value.
    pub async fn connect_forge(
        &self,
        caller: &Caller,
        name: &str,
        q: &ConnectForge,
        webhook_secret: hangar_secrets::Secret,
    ) -> ApiResult<ForgeConnected> {
        let engine = self.engine(caller);
        let connect = ForgeConnect {
            token_secret: q
                .token_secret
                .clone()
                .unwrap_or_else(|| TOKEN_SECRET.into()),
            webhook_secret_name: q
                .webhook_secret
                .clone()
                .unwrap_or_else(|| WEBHOOK_SECRET.into()),
            webhook_secret,
            repository: q.repository.clone(),
            api: q.api.clone(),
        };
        let env = engine.connect_forge(name, &connect).await?;
        let forge = env.forge.ok_or_else(|| {
            ApiError::internal(format!(
                "environment `{name}` has no [forge] after connecting"
            ))
        })?;
        let token_set = engine
            .secret_ls(name)
            .await?
            .iter()
            .any(|s| s.name == forge.token && s.set);
        Ok(ForgeConnected {
            environment: name.to_string(),
            kind: forge.kind.to_string(),
            repository: forge.repository,
            api: forge.api,
            token_secret: forge.token,
            webhook_secret: forge.webhook_secret.unwrap_or_default(),
            token_set,
        })
    }

    /// Hears a GitHub webhook delivery.
    pub async fn github_webhook(
        &self,
        delivery: Delivery,
    ) -> ApiResult<(StatusCode, WebhookAnswer)> {
        let heard = self.runner.hear(delivery).await?;
        let (status, word, message) = match heard {
            Heard::Accepted(m) => (StatusCode::ACCEPTED, "accepted", m),
            Heard::Ignored(m) => (StatusCode::NO_CONTENT, "ignored", m),
            Heard::Duplicate => (
                StatusCode::OK,
                "duplicate",
                "this delivery was heard before".to_string(),
            ),
            Heard::NotServed(repo) => (
                StatusCode::ACCEPTED,
                "not-served",
                format!("no environment serves {repo}"),
            ),
        };
        Ok((
            status,
            WebhookAnswer {
                status: word.to_string(),
                message,
            },
        ))
    }
}

pub(crate) async fn open_pull(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: JsonIn<OpenPull>,
) -> ApiResult<Json<PullOpened>> {
    let req = json_body(body, "the pull request")?;
    Ok(Json(api.open_pull(&caller, &id, &req).await?))
}

pub(crate) async fn connect_forge(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    q: QueryIn<ConnectForge>,
    value: Bytes,
) -> ApiResult<Json<ForgeConnected>> {
    let q = query(q)?;
    let secret = hangar_secrets::Secret::new(value.to_vec())
        .map_err(|e| ApiError::bad_request(format!("failed to read the webhook secret: {e}")))?;
    Ok(Json(api.connect_forge(&caller, &name, &q, secret).await?))
}

pub(crate) async fn github_webhook(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    api.activity.touch();
    if body.len() > MAX_DELIVERY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "failed to read the webhook delivery: it is larger than GitHub sends",
        ));
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (Some(event), Some(id)) = (header("x-github-event"), header("x-github-delivery")) else {
        return Err(ApiError::bad_request(
            "failed to read the webhook delivery: it has no X-GitHub-Event or X-GitHub-Delivery \
             header",
        ));
    };
    let delivery = Delivery {
        event,
        id,
        signature: header("x-hub-signature-256"),
        body: body.to_vec(),
    };
    let (status, answer) = api.github_webhook(delivery).await?;
    if status == StatusCode::NO_CONTENT {
        return Ok(status.into_response());
    }
    Ok((status, Json(answer)).into_response())
}
