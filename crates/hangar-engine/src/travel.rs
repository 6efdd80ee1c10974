//! Snapshots that travel between data dirs: `cache export` pushes an environment's
//! snapshot as an OCI image (the base image's layers plus the snapshot packed as one
//! layer, overlay whiteouts turned into OCI ones), and `cache import` pulls one, checks
//! that it was made from the same inputs as the environment here, and registers it under
//! this installation's key. The layer goes through the same safe unpacker as any image.

use std::collections::BTreeMap;

use hangar_image::{pack, Progress, RegistryOptions};
use hangar_secrets::ScanMode;
use hangar_store::db::SnapshotRecord;
use hangar_store::{Digest, LeaseKind};

use crate::cache::{self, KeyComponents, Lookup};
use crate::error::{EngineError, Result};
use crate::layers::{Kind, Swap};
use crate::Engine;

/// The config label holding the key components a snapshot was made from (secret names
/// only: their keyed hashes mean nothing on another installation).
pub const COMPONENTS_LABEL: &str = "dev.hangar.snapshot.components";

/// What `cache export` pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub environment: String,
    pub reference: String,
    /// The pushed manifest's digest.
    pub manifest: String,
    pub snapshot: String,
    /// The compressed size of the snapshot layer.
    pub layer_size: u64,
}

/// What `cache import` registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub environment: String,
    pub reference: String,
    pub snapshot: String,
    pub size: u64,
    /// False when a usable snapshot with the same key was already here (it is kept).
    pub imported: bool,
}

/// The components as they travel: secret values' hashes are dropped, their names kept.
fn portable(mut c: KeyComponents) -> KeyComponents {
    for v in c.secrets.values_mut() {
        v.clear();
    }
    c.workspace.clear();
    c
}

impl Engine {
    /// Pushes environment `env`'s current snapshot (the one its next task would use) to
    /// `reference`.
    pub async fn cache_export(
        &self,
        env: &str,
        reference: &str,
        opts: &RegistryOptions,
        progress: Progress<'_>,
    ) -> Result<Exported> {
        let (_, environment) = self.env(env).await?;
        self.check_registry(reference, opts.insecure).await?;
        let secrets = self.env_secrets(&environment).await?;
        let keyed = self.keyed(&environment, &secrets).await?;
        let fail = |reason: String| EngineError::Export {
            env: env.to_string(),
            reason,
        };
        let key = match self.lookup(env, &keyed.components).await? {
            (key, Lookup::Hit(_)) => key,
            (_, Lookup::Miss(reason)) => {
                return Err(fail(format!(
                    "it has no snapshot to export (cache miss: {reason}); run a task first"
                )))
            }
        };
        let dir = self.snapshot_dir(&key);
        // A lease keeps gc away from the snapshot while it is packed.
        let lease = self.store.hold(LeaseKind::Snapshot, &[key.as_str()])?;
        progress(&format!("packing snapshot {}", cache::short(&key)));
        let (store, packed_dir) = (self.store.clone(), dir.clone());
        let packed =
            tokio::task::spawn_blocking(move || pack::pack_into_store(&store, &packed_dir))
                .await
                .map_err(|e| fail(format!("the packing task failed: {e}")))??;
        let labels = BTreeMap::from([(
            COMPONENTS_LABEL.to_string(),
            serde_json::to_string(&portable(keyed.components.clone()))
                .expect("components serialize"),
        )]);
        let manifest = pack::derive_image(
            &self.store,
            &keyed.image,
            &packed,
            &format!("hangar cache export {env}"),
            labels,
        )?;
        hangar_image::push_manifest(&self.store, &manifest, reference, opts, progress).await?;
        drop(lease);
        Ok(Exported {
            environment: env.to_string(),
            reference: reference.to_string(),
            manifest: manifest.to_string(),
            snapshot: key,
            layer_size: packed.size,
        })
    }

    /// Pulls a snapshot exported by [`Engine::cache_export`] and makes it the snapshot of
    /// environment `env` (by default the one it was exported from), after checking that
    /// it was made from the same image, repository, scripts, variables, secret names,
    /// runtime and auto-install plan as that environment here.
    pub async fn cache_import(
        &self,
        reference: &str,
        env: Option<&str>,
        opts: &RegistryOptions,
        progress: Progress<'_>,
    ) -> Result<Imported> {
        let fail = |reason: String| EngineError::Import {
            reference: reference.to_string(),
            reason,
        };
        self.check_registry(reference, opts.insecure).await?;
        let manifest_digest = hangar_image::fetch(&self.store, reference, opts, progress).await?;
        let manifest = self.store.manifest(&manifest_digest)?;
        let config = self
            .store
            .config(&hangar_store::config_digest(&manifest)?)?;
        let label = config
            .config()
            .as_ref()
            .and_then(|c| c.labels().as_ref())
            .and_then(|l| l.get(COMPONENTS_LABEL))
            .ok_or_else(|| {
                fail(format!(
                    "it is not a hangar snapshot (its config has no `{COMPONENTS_LABEL}` label)"
                ))
            })?;
        let theirs: KeyComponents = serde_json::from_str(label)
            .map_err(|e| fail(format!("its `{COMPONENTS_LABEL}` label is unreadable: {e}")))?;
        let name = env.unwrap_or(&theirs.environment).to_string();
        let (rec, environment) = self.env(&name).await?;
        let secrets = self.env_secrets(&environment).await?;
        let keyed = self.keyed(&environment, &secrets).await?;
        let ours = keyed.components.clone();
        let changes = portable(ours.clone()).changes_since(&KeyComponents {
            environment: ours.environment.clone(),
            ..theirs
        });
        if !changes.is_empty() {
            return Err(fail(format!(
                "it was made from other inputs than environment `{name}` here: {}",
                changes.join(", ")
            )));
        }
        let (diff_id, blob) = self.snapshot_layer(&keyed.image, &manifest, &config, &fail)?;

        let key = ours.key();
        let lock = self.lock_snapshot(&key).await?;
        let existing = self.db.snapshot(&key).await?;
        if let Some(s) = existing.filter(|s| self.serves(s)) {
            drop(lock);
            return Ok(Imported {
                environment: name,
                reference: reference.to_string(),
                snapshot: s.key,
                size: s.size.max(0) as u64,
                imported: false,
            });
        }
        progress(&format!("unpacking snapshot {}", cache::short(&key)));
        let (store, layers, swapped) = (self.store.clone(), self.layers.clone(), key.clone());
        let (redactor, refused) = (secrets.redactor.clone(), reference.to_string());
        let in_use = EngineError::SnapshotInUse {
            reference: reference.to_string(),
            snapshot: cache::short(&key).to_string(),
        };
        let refuse = move |reason: String| EngineError::Import {
            reference: refused.clone(),
            reason,
        };
        let size = tokio::task::spawn_blocking(move || -> Result<u64> {
            let staging = store.staging_dir()?;
            let got = hangar_image::unpack_blob(&store, &blob, staging.path())?;
            if got != diff_id {
                return Err(refuse(format!(
                    "its snapshot layer hashes to {got}, not {diff_id}"
                )));
            }
            // Every agent here would read it: it may hold none of this environment's
            // secret values, whoever built it.
            let leaks = hangar_secrets::scan(staging.path(), &redactor, ScanMode::Report)?;
            if let Some(l) = leaks.first() {
                return Err(refuse(format!(
                    "its snapshot holds the value of secret `{}` in {}",
                    l.secret,
                    l.path.display()
                )));
            }
            hangar_sandbox::make_durable(staging.path())?;
            match layers.swap_in(Kind::Snapshot, &swapped, staging)? {
                Swap::Done => Ok(hangar_sandbox::disk::usage(
                    &layers.dir(Kind::Snapshot, &swapped),
                )),
                Swap::InUse => Err(in_use),
            }
        })
        .await
        .map_err(|e| fail(format!("the unpacking task failed: {e}")))??;
        let now = self.now();
        self.db
            .put_snapshot(&SnapshotRecord {
                key: key.clone(),
                workspace: self.workspace.to_string(),
                environment: rec.name.clone(),
                components: serde_json::to_string(&ours).expect("components serialize"),
                size: size as i64,
                created_ms: now,
                expires_ms: now + environment.cache.ttl.as_millis() as i64,
                last_used_ms: now,
                hits: 0,
                reset: false,
                boot_id: self.boot_id.clone(),
                durable: true,
                source: Some(reference.to_string()),
            })
            .await?;
        drop(lock);
        Ok(Imported {
            environment: name,
            reference: reference.to_string(),
            snapshot: key,
            size,
            imported: true,
        })
    }

    /// The snapshot layer of an exported image (its top layer) after checking that the
    /// layers below it are exactly `base`'s: the blob and its diff_id.
    fn snapshot_layer(
        &self,
        base: &hangar_store::ImageRecord,
        manifest: &oci_spec::image::ImageManifest,
        config: &oci_spec::image::ImageConfiguration,
        fail: &dyn Fn(String) -> EngineError,
    ) -> Result<(Digest, Digest)> {
        let base_config = self.store.image_config(base)?;
        let base_ids = base_config.rootfs().diff_ids();
        let ids = config.rootfs().diff_ids();
        let layers = manifest.layers();
        if ids.len() != base_ids.len() + 1
            || layers.len() != ids.len()
            || ids[..base_ids.len()] != base_ids[..]
        {
            return Err(fail(format!(
                "its layers are not image `{}` plus one snapshot layer",
                base.name
            )));
        }
        let blob: Digest = layers[layers.len() - 1].digest().to_string().parse()?;
        let diff_id: Digest = ids[ids.len() - 1].parse()?;
        Ok((diff_id, blob))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_components_keep_secret_names_only() {
        let c = KeyComponents {
            format: cache::SNAPSHOT_FORMAT,
            workspace: "default".into(),
            environment: "web".into(),
            repo: "/srv/web".into(),
            default_branch: "main".into(),
            image: "sha256:aa".into(),
            setup_script: "make".into(),
            maintenance_script: String::new(),
            env: BTreeMap::new(),
            secrets: BTreeMap::from([("TOKEN".into(), "hash-on-install-1".into())]),
            runtime: "crun".into(),
            auto_install: Vec::new(),
            user: None,
            toolchains: BTreeMap::new(),
        };
        let p = portable(c.clone());
        assert_eq!(p.secrets, BTreeMap::from([("TOKEN".into(), String::new())]));
        assert_eq!(p.workspace, "", "a snapshot travels to any workspace");
        assert!(!serde_json::to_string(&p)
            .unwrap()
            .contains(&c.secrets["TOKEN"]));
        let other_install = KeyComponents {
            secrets: BTreeMap::from([("TOKEN".into(), "hash-on-install-2".into())]),
            ..c.clone()
        };
        assert!(portable(other_install).changes_since(&p).is_empty());
        let renamed = KeyComponents {
            secrets: BTreeMap::from([("OTHER".into(), String::new())]),
            ..c
        };
        assert_eq!(renamed.changes_since(&p), ["secrets changed"]);
    }
}
