//! GitHub's REST API (github.com and GitHub Enterprise Server, whose API base URL is
//! configured), as the [`Forge`] trait asks for it.

use std::time::Duration;

use hangar_secrets::Secret;

use crate::{FailedJob, Forge, ForgeError, NewPull, PullInfo, PullRequest, RepoInfo, RepoName};

/// github.com's API; GitHub Enterprise Server's is `https://HOST/api/v3`.
pub const DEFAULT_API: &str = "https://api.github.com";

/// How one client talks to one GitHub.
pub struct GitHubConfig {
    /// The API's base URL: `https://...`, or `http://` to a loopback address only.
    pub api: String,
    /// An installation token or a fine-grained token; sent only to `api`'s origin.
    pub token: Secret,
    /// Certificates trusted beside the host's roots (the admin's CAs).
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The longest wait a `Retry-After` may ask for before hangar gives up on it.
    pub max_retry_wait: Duration,
    /// How many times a request is tried when the forge says to try again.
    pub tries: u32,
}

pub struct GitHub {
    _config: GitHubConfig,
}

impl GitHub {
    pub fn new(config: GitHubConfig) -> Result<GitHub, ForgeError> {
        let _ = config;
        todo!("helper: build the client")
    }
}

impl Forge for GitHub {
    async fn repository(&self, _repo: &RepoName) -> Result<RepoInfo, ForgeError> {
        todo!()
    }
    async fn find_pull(
        &self,
        _repo: &RepoName,
        _head: &str,
        _base: &str,
    ) -> Result<Option<PullRequest>, ForgeError> {
        todo!()
    }
    async fn open_pull(&self, _repo: &RepoName, _pull: &NewPull) -> Result<PullRequest, ForgeError> {
        todo!()
    }
    async fn pull(&self, _repo: &RepoName, _number: u64) -> Result<PullInfo, ForgeError> {
        todo!()
    }
    async fn comment(&self, _repo: &RepoName, _number: u64, _body: &str) -> Result<(), ForgeError> {
        todo!()
    }
    async fn review(&self, _repo: &RepoName, _number: u64, _body: &str) -> Result<(), ForgeError> {
        todo!()
    }
    async fn failed_jobs(
        &self,
        _repo: &RepoName,
        _run_id: u64,
        _tail_lines: usize,
    ) -> Result<Vec<FailedJob>, ForgeError> {
        todo!()
    }
}
