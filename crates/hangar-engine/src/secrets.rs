//! An environment's secrets in the engine: setting, listing and removing their encrypted
//! values, and, for an attempt, the decrypted set with what each phase's execs get
//! (values for setup and maintenance, placeholders for projected secrets), the keyed
//! hashes that enter the cache key, and the redactor for everything stored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hangar_net::Injection;
use hangar_secrets::{Keyring, NamedSecret, Redactor, Secret};
use hangar_spec::{Environment, Phase, SecretDecl, SecretPhase};
use hangar_store::db::SecretRow;

use crate::error::{EngineError, Result};
use crate::Engine;

/// A declared secret as `hangar secret ls` shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    /// The phases whose execs get it (projected ones get a placeholder).
    pub phases: Vec<SecretPhase>,
    /// For a projected secret, the hosts the proxy sends it to.
    pub projected_to: Vec<String>,
    /// Whether a value is set.
    pub set: bool,
    pub updated_ms: Option<i64>,
}

/// An attempt's secrets, decrypted.
#[derive(Debug, Clone)]
pub(crate) struct EnvSecrets {
    pub named: Vec<NamedSecret>,
    /// `placeholders[i]` stands for `named[i]`.
    pub placeholders: Vec<String>,
    pub redactor: Redactor,
    /// Keyed hashes of the secrets setup sees: they shape the snapshot.
    pub setup_hashes: BTreeMap<String, String>,
}

impl EnvSecrets {
    pub(crate) fn none() -> EnvSecrets {
        EnvSecrets {
            named: Vec::new(),
            placeholders: Vec::new(),
            redactor: Redactor::none(),
            setup_hashes: BTreeMap::new(),
        }
    }

    /// The variables a phase's execs get: the value, or for a projected secret its
    /// placeholder. Phases that no secret may reach (checkout, collect) get none.
    pub(crate) fn env_for(&self, env: &Environment, phase: Phase) -> Vec<(String, String)> {
        let Some(phase) = secret_phase(phase) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = self
            .declared_for(env, phase)
            .map(|(i, s, decl)| {
                let value = if decl.inject.is_some() {
                    self.placeholders[i].clone()
                } else {
                    s.value.expose_str().to_string()
                };
                (s.name.clone(), value)
            })
            .collect();
        if phase == SecretPhase::Agent {
            // The harness hands this to the CLI; without a key, CLIs that insist on one
            // get a dummy.
            let key = self
                .model_key(env)
                .map(|i| self.placeholders[i].clone())
                .unwrap_or_else(|| "hangar-no-key".into());
            out.push((hangar_harness::KEY_VAR.into(), key));
        }
        out
    }

    /// The projected secrets a phase's proxy swaps in, for their hosts only.
    pub(crate) fn injections(&self, env: &Environment, phase: Phase) -> Vec<Injection> {
        let Some(phase) = secret_phase(phase) else {
            return Vec::new();
        };
        let mut out: Vec<Injection> = self
            .declared_for(env, phase)
            .filter_map(|(i, s, decl)| {
                let inject = decl.inject.as_ref()?;
                Some(Injection {
                    name: s.name.clone(),
                    placeholder: self.placeholders[i].clone(),
                    value: s.value.clone(),
                    hosts: inject.hosts.clone(),
                    header: inject.header.to_ascii_lowercase(),
                    format: inject.format.clone(),
                    plain_http: inject.plain_http,
                })
            })
            .collect();
        // The model key, projected for the endpoint's exact host and port, in the header
        // the harness's CLI puts it in.
        let agent = &env.agent;
        if let (SecretPhase::Agent, Some(i), Some((rule, tls))) =
            (phase, self.model_key(env), agent.endpoint_rule())
        {
            let wire = hangar_harness::harness(agent.harness).key_header();
            out.push(Injection {
                name: self.named[i].name.clone(),
                placeholder: self.placeholders[i].clone(),
                value: self.named[i].value.clone(),
                hosts: vec![rule],
                header: wire.header.to_string(),
                format: wire.format.to_string(),
                // An `http://` endpoint is the environment's explicit choice of the
                // clear, for that one host and port.
                plain_http: !tls,
            });
        }
        out
    }

    /// The secrets declared for `phase`, with their index and declaration.
    fn declared_for<'a>(
        &'a self,
        env: &'a Environment,
        phase: SecretPhase,
    ) -> impl Iterator<Item = (usize, &'a NamedSecret, &'a SecretDecl)> {
        self.named.iter().enumerate().filter_map(move |(i, s)| {
            let decl = env.secrets.get(&s.name)?;
            decl.phases.contains(&phase).then_some((i, s, decl))
        })
    }

    /// The index of the secret `[agent] key` names.
    fn model_key(&self, env: &Environment) -> Option<usize> {
        let key = env.agent.key.as_ref()?;
        self.named.iter().position(|s| &s.name == key)
    }

    /// Whether a phase's execs get a secret's real value.
    pub(crate) fn reach(&self, env: &Environment, phase: Phase) -> bool {
        let Some(phase) = secret_phase(phase) else {
            return false;
        };
        env.secrets_for(phase).any(|(_, d)| d.inject.is_none())
    }
}

fn secret_phase(phase: Phase) -> Option<SecretPhase> {
    match phase {
        Phase::Setup => Some(SecretPhase::Setup),
        Phase::Maintenance => Some(SecretPhase::Maintenance),
        Phase::Agent => Some(SecretPhase::Agent),
        _ => None,
    }
}

/// The installation's secret key: its file, and the keyring opened from it on first use
/// (a daemon that never meets a secret never reads it).
pub(crate) struct Keys {
    file: PathBuf,
    ring: OnceLock<Arc<Keyring>>,
}

impl Keys {
    pub(crate) fn new(file: PathBuf) -> Keys {
        Keys {
            file,
            ring: OnceLock::new(),
        }
    }

    /// The keyring, opened (or created) on first use.
    fn keyring(&self) -> Result<Arc<Keyring>> {
        if let Some(k) = self.ring.get() {
            return Ok(k.clone());
        }
        let k = Arc::new(Keyring::open(&self.file)?);
        Ok(self.ring.get_or_init(|| k).clone())
    }
}

impl Engine {
    /// The installation's keyring, opened (or created) on first use.
    pub(crate) fn keyring(&self) -> Result<Arc<Keyring>> {
        self.keys.keyring()
    }

    /// Sets a declared secret's value (encrypted at rest).
    pub async fn secret_set(&self, env: &str, name: &str, value: &Secret) -> Result<()> {
        let (_, environment) = self.env(env).await?;
        if !environment.secrets.contains_key(name) {
            return Err(EngineError::SecretUndeclared {
                env: env.to_string(),
                name: name.to_string(),
            });
        }
        let sealed = self.keyring()?.encrypt(name, value)?;
        self.db
            .put_secret(&self.workspace, env, name, &sealed)
            .await?;
        Ok(())
    }

    /// The environment's declared secrets, and whether each is set.
    pub async fn secret_ls(&self, env: &str) -> Result<Vec<SecretInfo>> {
        let (_, environment) = self.env(env).await?;
        let stored = self.db.secrets(&self.workspace, env).await?;
        Ok(environment
            .secrets
            .iter()
            .map(|(name, decl)| {
                let row = stored.iter().find(|r| &r.name == name);
                let mut phases = decl.phases.clone();
                let mut projected_to: Vec<String> = decl
                    .inject
                    .iter()
                    .flat_map(|i| i.hosts.iter().map(|h| h.to_string()))
                    .collect();
                // The model key reaches the agent as a placeholder for the endpoint.
                if environment.agent.key.as_ref() == Some(name) {
                    phases.push(SecretPhase::Agent);
                    projected_to.extend(
                        environment
                            .agent
                            .endpoint_rule()
                            .map(|(rule, _)| rule.to_string()),
                    );
                }
                SecretInfo {
                    name: name.clone(),
                    phases,
                    projected_to,
                    set: row.is_some(),
                    updated_ms: row.map(|r| r.updated_ms),
                }
            })
            .collect())
    }

    pub async fn secret_rm(&self, env: &str, name: &str) -> Result<()> {
        self.db.env(&self.workspace, env).await?;
        Ok(self.db.delete_secret(&self.workspace, env, name).await?)
    }

    /// Names of declared secrets that have no value.
    pub(crate) async fn unset_secrets(&self, env: &Environment) -> Result<Vec<String>> {
        let stored = self.db.secrets(&self.workspace, env.name.as_str()).await?;
        Ok(unset(env, &stored))
    }

    /// Decrypts an environment's declared secrets; a declared secret without a value is
    /// an error naming it.
    pub(crate) async fn env_secrets(&self, env: &Environment) -> Result<EnvSecrets> {
        if env.secrets.is_empty() {
            return Ok(EnvSecrets::none());
        }
        let stored = self.db.secrets(&self.workspace, env.name.as_str()).await?;
        let missing = unset(env, &stored);
        if !missing.is_empty() {
            return Err(missing_secrets(env, &missing));
        }
        let keyring = self.keyring()?;
        let stored = self.db.secrets(&self.workspace, env.name.as_str()).await?;
        let mut named = Vec::new();
        for row in stored.iter().filter(|r| env.secrets.contains_key(&r.name)) {
            named.push(NamedSecret {
                name: row.name.clone(),
                value: keyring.decrypt(&row.name, &row.ciphertext)?,
            });
        }
        let placeholders = named
            .iter()
            .map(|s| keyring.placeholder(&s.name, &s.value))
            .collect();
        let setup_hashes = named
            .iter()
            .filter(|s| env.secrets[&s.name].phases.contains(&SecretPhase::Setup))
            .map(|s| (s.name.clone(), keyring.hash(&s.name, &s.value)))
            .collect();
        Ok(EnvSecrets {
            redactor: Redactor::new(&named),
            named,
            placeholders,
            setup_hashes,
        })
    }
}

fn unset(env: &Environment, stored: &[SecretRow]) -> Vec<String> {
    env.secrets
        .keys()
        .filter(|n| !stored.iter().any(|r| &r.name == *n))
        .cloned()
        .collect()
}

pub(crate) fn missing_secrets(env: &Environment, missing: &[String]) -> EngineError {
    EngineError::SecretsUnset {
        env: env.name.to_string(),
        names: missing.to_vec(),
    }
}
