//! The routes for environments, their secrets, and API tokens. Like the task routes,
//! each is one engine call in the caller's workspace.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use hangar_spec::Environment;
use hangar_store::db::EnvRecord;
use serde::Deserialize;

use crate::server::{
    admin_only, json_body, query, Api, ApiError, ApiResult, Caller, JsonIn, QueryIn,
};
use crate::wire::{
    rfc3339, CreateToken, EnvFile, EnvList, EnvSummary, EnvView, NewToken, SecretList, TokenList,
    TokenSummary,
};

fn summary(rec: &EnvRecord, env: &Environment) -> EnvSummary {
    EnvSummary {
        name: rec.name.clone(),
        version: rec.version,
        repo: rec.repo.clone(),
        image: env.image.to_string(),
        created_at: rfc3339(rec.created_ms),
        updated_at: rfc3339(rec.updated_ms),
    }
}

fn env_view(rec: EnvRecord, env: &Environment) -> EnvView {
    EnvView {
        spec: serde_json::to_value(env).unwrap_or_default(),
        name: rec.name,
        version: rec.version,
        repo: rec.repo,
        created_at: rfc3339(rec.created_ms),
        updated_at: rfc3339(rec.updated_ms),
        source: rec.source,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvQuery {
    /// Only the environments serving this repository (`owner/name`, a URL or a path).
    repo: Option<String>,
}

/// The environment and secret operations, in the caller's workspace.
impl Api {
    /// The caller's environments (those serving `repo`, when given).
    pub async fn envs(&self, caller: &Caller, repo: Option<&str>) -> ApiResult<EnvList> {
        let engine = self.engine(caller);
        let mut envs = engine.envs().await?;
        if let Some(repo) = repo {
            let serving: Vec<String> = engine
                .resolve_env(repo)
                .await?
                .into_iter()
                .map(|e| e.name)
                .collect();
            envs.retain(|(rec, _)| serving.contains(&rec.name));
        }
        Ok(EnvList {
            environments: envs.iter().map(|(rec, env)| summary(rec, env)).collect(),
        })
    }

    pub async fn env(&self, caller: &Caller, name: &str) -> ApiResult<EnvView> {
        let (rec, env) = self.engine(caller).env(name).await?;
        Ok(env_view(rec, &env))
    }

    /// Stores a new environment from its file, validated as the CLI's.
    pub async fn create_env(&self, caller: &Caller, f: &EnvFile) -> ApiResult<EnvView> {
        let engine = self.engine(caller);
        let rec = engine
            .create_env(&f.file, &f.source, std::path::Path::new(&f.base_dir))
            .await?;
        self.env(caller, &rec.name).await
    }

    /// Replaces an environment's file (a new version), validated as the CLI's.
    pub async fn update_env(&self, caller: &Caller, name: &str, f: &EnvFile) -> ApiResult<EnvView> {
        self.engine(caller)
            .update_env(name, &f.file, &f.source, std::path::Path::new(&f.base_dir))
            .await?;
        self.env(caller, name).await
    }

    pub async fn delete_env(&self, caller: &Caller, name: &str) -> ApiResult<()> {
        Ok(self.engine(caller).delete_env(name).await?)
    }

    /// An environment's secrets by name (never their values).
    pub async fn secrets(&self, caller: &Caller, name: &str) -> ApiResult<SecretList> {
        let secrets = self.engine(caller).secret_ls(name).await?;
        Ok(SecretList::new(&secrets))
    }

    /// Sets a secret; the value is never echoed, logged or stored unencrypted.
    pub async fn set_secret(
        &self,
        caller: &Caller,
        name: &str,
        secret: &str,
        value: &hangar_secrets::Secret,
    ) -> ApiResult<()> {
        Ok(self.engine(caller).secret_set(name, secret, value).await?)
    }

    pub async fn remove_secret(&self, caller: &Caller, name: &str, secret: &str) -> ApiResult<()> {
        Ok(self.engine(caller).secret_rm(name, secret).await?)
    }
}

pub(crate) async fn list_envs(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    q: QueryIn<EnvQuery>,
) -> ApiResult<Json<EnvList>> {
    let q = query(q)?;
    Ok(Json(api.envs(&caller, q.repo.as_deref()).await?))
}

pub(crate) async fn create_env(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: JsonIn<EnvFile>,
) -> ApiResult<(StatusCode, Json<EnvView>)> {
    let f = json_body(body, "the environment")?;
    Ok((
        StatusCode::CREATED,
        Json(api.create_env(&caller, &f).await?),
    ))
}

pub(crate) async fn show_env(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<EnvView>> {
    Ok(Json(api.env(&caller, &name).await?))
}

pub(crate) async fn update_env(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: JsonIn<EnvFile>,
) -> ApiResult<Json<EnvView>> {
    let f = json_body(body, "the environment")?;
    Ok(Json(api.update_env(&caller, &name, &f).await?))
}

pub(crate) async fn delete_env(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    api.delete_env(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn list_secrets(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<SecretList>> {
    Ok(Json(api.secrets(&caller, &name).await?))
}

/// The body is the value itself (any bytes), handed to `Secret` at once.
pub(crate) async fn set_secret(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path((name, secret)): Path<(String, String)>,
    value: Bytes,
) -> ApiResult<StatusCode> {
    let value = hangar_secrets::Secret::new(value.to_vec())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    api.set_secret(&caller, &name, &secret, &value).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn remove_secret(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path((name, secret)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    api.remove_secret(&caller, &name, &secret).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn list_tokens(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<TokenList>> {
    admin_only(&caller, "manage tokens")?;
    let tokens = api.engine(&caller).tokens().await?;
    Ok(Json(TokenList {
        tokens: tokens
            .into_iter()
            .map(|t| TokenSummary {
                id: t.id,
                workspace: t.workspace.to_string(),
                created_at: rfc3339(t.created_ms),
            })
            .collect(),
    }))
}

pub(crate) async fn create_token(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: JsonIn<CreateToken>,
) -> ApiResult<(StatusCode, Json<NewToken>)> {
    admin_only(&caller, "manage tokens")?;
    let req = json_body(body, "the token request")?;
    let t = api.engine(&caller).create_token(&req.workspace).await?;
    Ok((
        StatusCode::CREATED,
        Json(NewToken {
            id: t.id,
            workspace: t.workspace.to_string(),
            token: t.token,
        }),
    ))
}

pub(crate) async fn remove_token(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    admin_only(&caller, "manage tokens")?;
    api.engine(&caller).remove_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
