//! API tokens: each grants one workspace. The token is shown once, when it is made;
//! only its SHA-256 is stored, so a stolen database grants nothing. The token itself
//! travels as a [`Secret`]: no log line or error message can carry it.

use hangar_secrets::Secret;
use hangar_spec::Workspace;
use hangar_store::db::TokenRecord;
use sha2::{Digest, Sha256};

use crate::{Engine, EngineError, Result};

/// What `token create` hands out, once.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: String,
    pub workspace: Workspace,
    /// The bearer token itself; nowhere else after this. Exposed only where the API
    /// writes it into `POST /v1/tokens`'s answer.
    pub token: Secret,
}

pub(crate) const PREFIX: &str = "hgr_";

/// A workspace's name, checked (see [`Workspace`]).
pub fn parse_workspace(name: &str) -> Result<Workspace> {
    name.parse().map_err(EngineError::InvalidWorkspace)
}

pub(crate) fn hash(token: &[u8]) -> String {
    hex::encode(Sha256::digest(token))
}

impl Engine {
    /// Makes a token that grants `workspace` (which exists from then on).
    pub async fn create_token(&self, workspace: &str) -> Result<NewToken> {
        let workspace = parse_workspace(workspace)?;
        let id = hex::encode(rand::random::<[u8; 4]>());
        let token = Secret::new(
            format!("{PREFIX}{}", hex::encode(rand::random::<[u8; 20]>())).into_bytes(),
        )?;
        let rec = TokenRecord {
            id: id.clone(),
            workspace: workspace.to_string(),
            created_ms: hangar_store::db::now_ms(),
        };
        self.db.create_token(&rec, &hash(token.expose())).await?;
        Ok(NewToken {
            id,
            workspace,
            token,
        })
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        Ok(self.db.tokens().await?)
    }

    pub async fn remove_token(&self, id: &str) -> Result<()> {
        Ok(self.db.delete_token(id).await?)
    }

    /// The workspace a bearer token grants; `None` for a token that does not exist.
    /// `token` is borrowed from the request's header: it is hashed, never copied.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Workspace>> {
        if !token.starts_with(PREFIX) {
            return Ok(None);
        }
        self.db
            .token_workspace(&hash(token.as_bytes()))
            .await?
            .map(|ws| parse_workspace(&ws))
            .transpose()
    }
}
