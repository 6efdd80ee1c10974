//! The environment cache: what a snapshot's key is made of, why a lookup missed, and
//! which snapshots a collection removes. The key hashes a canonical encoding (JSON with
//! sorted maps) of everything setup depends on, except the repository's commits.

use std::collections::BTreeMap;

use hangar_spec::{Environment, TaskId};
use hangar_store::db::{AttemptRecord, SnapshotRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Bumped when a snapshot's layout changes, so older ones are never reused.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Everything a snapshot's key is made of. Field order is the encoding's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyComponents {
    pub format: u32,
    /// The workspace: snapshots are never shared between workspaces (a setup's files
    /// are the workspace's). Left out of the encoding when blank (a snapshot as it
    /// travels between installations).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workspace: String,
    pub environment: String,
    pub repo: String,
    pub default_branch: String,
    /// The base image's manifest digest.
    pub image: String,
    pub setup_script: String,
    pub maintenance_script: String,
    pub env: BTreeMap<String, String>,
    /// Secret name to a keyed hash of its value (the key is per installation).
    pub secrets: BTreeMap<String, String>,
    /// The OCI runtime and hangar's version.
    pub runtime: String,
    /// The auto-install commands, with the lockfile that called for each.
    pub auto_install: Vec<String>,
    /// `[agent] user`: the snapshot's workspace and home are that user's. Left out of the
    /// encoding when unset, so the keys of environments without it stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `[toolchains]`, installed in setup. Left out when empty, like `user`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub toolchains: BTreeMap<String, String>,
}

impl KeyComponents {
    /// The key: sha256 over the canonical encoding, in hex.
    pub fn key(&self) -> String {
        let encoded = serde_json::to_vec(self).expect("components serialize");
        hex::encode(Sha256::digest(&encoded))
    }

    /// Why a snapshot built from `old` does not serve `self`, in words.
    pub fn changes_since(&self, old: &KeyComponents) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut differs = |changed: bool, what: &'static str| {
            if changed {
                out.push(what);
            }
        };
        differs(self.format != old.format, "snapshot format changed");
        differs(
            self.repo != old.repo || self.default_branch != old.default_branch,
            "repository changed",
        );
        differs(self.image != old.image, "image changed");
        differs(
            self.setup_script != old.setup_script,
            "setup script changed",
        );
        differs(
            self.maintenance_script != old.maintenance_script,
            "maintenance script changed",
        );
        differs(self.env != old.env, "environment variables changed");
        differs(self.secrets != old.secrets, "secrets changed");
        differs(self.runtime != old.runtime, "runtime changed");
        differs(
            self.auto_install != old.auto_install,
            "auto-install plan changed",
        );
        differs(self.user != old.user, "agent user changed");
        differs(self.toolchains != old.toolchains, "toolchains changed");
        out
    }
}

/// The components for an environment, given what only the engine knows.
pub fn components(
    workspace: &str,
    env: &Environment,
    image_digest: &str,
    runtime: &str,
    auto_install: &[crate::autoinstall::InstallStep],
    secret_hashes: BTreeMap<String, String>,
) -> KeyComponents {
    KeyComponents {
        format: SNAPSHOT_FORMAT,
        workspace: workspace.to_string(),
        environment: env.name.to_string(),
        repo: env.repo.clone(),
        default_branch: env.default_branch.clone(),
        image: image_digest.to_string(),
        setup_script: env.setup.script.clone(),
        maintenance_script: env.maintenance.script.clone(),
        env: env.env.clone(),
        secrets: secret_hashes,
        runtime: format!("{runtime} hangar-{}", env!("CARGO_PKG_VERSION")),
        auto_install: auto_install
            .iter()
            .map(|s| format!("{}: {}", s.found, s.command))
            .collect(),
        user: env.agent.user.clone(),
        toolchains: env.toolchains.clone(),
    }
}

/// How an attempt found its environment; stored on the attempt (as JSON text, which
/// [`CacheInfo::recorded`] reads back) and shown by `exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInfo {
    pub status: CacheStatus,
    pub reason: String,
    /// The short key of the snapshot used (built on a miss; a follow-up's source's).
    pub snapshot: String,
}

/// Whether an attempt's environment came from a snapshot. The spelling is the stored
/// text's, so it never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    /// A snapshot served it.
    Hit,
    /// None did: setup built one.
    Miss,
    /// A follow-up: it started from its source attempt's kept layer.
    From,
}

impl CacheStatus {
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

/// An attempt's stored cache info that does not parse (a damaged database, or one
/// written by a hangar that spelled it otherwise).
#[derive(Debug, thiserror::Error)]
#[error("failed to read how attempt {attempt} of task {task} found its environment: its stored cache info `{text}` does not parse: {source}")]
pub struct CacheInfoError {
    pub task: TaskId,
    pub attempt: u32,
    pub text: String,
    #[source]
    pub source: serde_json::Error,
}

impl CacheInfo {
    /// `hit (snapshot 3f2a, built 2 h ago)`, `miss (setup script changed since snapshot 3f2a)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.status, self.reason)
    }

    /// The text stored on the attempt.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("cache info serializes")
    }

    /// How attempt `a` of `task` found its environment, from the text stored on it;
    /// `None` until its prepare phase recorded it.
    pub fn recorded(task: &TaskId, a: &AttemptRecord) -> Result<Option<CacheInfo>, CacheInfoError> {
        let Some(text) = a.cache.as_deref() else {
            return Ok(None);
        };
        serde_json::from_str(text)
            .map(Some)
            .map_err(|source| CacheInfoError {
                task: task.clone(),
                attempt: a.index,
                text: text.to_string(),
                source,
            })
    }
}

/// The four hex digits a snapshot goes by.
pub fn short(key: &str) -> &str {
    &key[..key.len().min(4)]
}

/// The moment a lookup or a collection judges snapshots at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now<'a> {
    pub ms: i64,
    /// This boot's id: a snapshot not yet durable serves only the boot that built it.
    pub boot_id: &'a str,
}

/// Whether a snapshot's data may have been lost: committed by a rename before a
/// background sync reached the disk, and the machine restarted since.
pub fn lost(s: &SnapshotRecord, now: Now<'_>) -> bool {
    !s.durable && s.boot_id != now.boot_id
}

/// `snapshot 3f2a, built 2 h ago` or `snapshot 3f2a, imported from REF 5 min ago`.
pub fn hit_reason(s: &SnapshotRecord, now_ms: i64) -> String {
    let age = hangar_spec::format_ago(now_ms - s.created_ms);
    match &s.source {
        Some(source) => format!("snapshot {}, imported from {source} {age}", short(&s.key)),
        None => format!("snapshot {}, built {age}", short(&s.key)),
    }
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Hit(SnapshotRecord),
    /// The reason, for `miss (...)`.
    Miss(String),
}

/// Decides hit or miss for `key` among an environment's snapshots (newest first).
pub fn lookup(
    key: &str,
    wanted: &KeyComponents,
    snapshots: &[SnapshotRecord],
    now: Now<'_>,
) -> Lookup {
    if let Some(s) = snapshots.iter().find(|s| s.key == key) {
        if s.reset {
            return Lookup::Miss("reset".into());
        }
        if s.expires_ms <= now.ms {
            return Lookup::Miss(format!(
                "expired: snapshot {} was built {}",
                short(key),
                hangar_spec::format_ago(now.ms - s.created_ms)
            ));
        }
        if lost(s, now) {
            return Lookup::Miss(format!(
                "snapshot {} was not yet on disk when the machine restarted",
                short(key)
            ));
        }
        return Lookup::Hit(s.clone());
    }
    let Some(latest) = snapshots.first() else {
        return Lookup::Miss("none yet".into());
    };
    let reasons = match serde_json::from_str::<KeyComponents>(&latest.components) {
        Ok(old) => wanted.changes_since(&old),
        Err(_) => vec!["snapshot format changed"],
    };
    let what = if reasons.is_empty() {
        "key changed".to_string()
    } else {
        reasons.join(", ")
    };
    Lookup::Miss(format!("{what} since snapshot {}", short(&latest.key)))
}

/// Snapshots a collection removes: reset, expired or lost ones, then least recently used
/// ones until the rest fit in `budget` bytes. Leased (in use) snapshots are never chosen.
pub fn to_collect<'a>(
    all: &'a [SnapshotRecord],
    leased: &std::collections::HashSet<String>,
    now: Now<'_>,
    budget: Option<u64>,
) -> Vec<&'a SnapshotRecord> {
    let mut out: Vec<&SnapshotRecord> = all
        .iter()
        .filter(|s| !leased.contains(&s.key) && (s.reset || s.expires_ms <= now.ms || lost(s, now)))
        .collect();
    if let Some(budget) = budget {
        let mut kept: Vec<&SnapshotRecord> = all
            .iter()
            .filter(|s| !out.iter().any(|o| o.key == s.key))
            .collect();
        let mut total: u64 = kept.iter().map(|s| s.size.max(0) as u64).sum();
        kept.sort_by_key(|s| s.last_used_ms);
        for s in kept {
            if total <= budget {
                break;
            }
            if leased.contains(&s.key) {
                continue;
            }
            total -= s.size.max(0) as u64;
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_without_a_user_or_toolchains_keeps_its_key() {
        let json = serde_json::to_string(&base()).unwrap();
        assert!(!json.contains("user"), "{json}");
        let with = KeyComponents {
            user: Some("dev".into()),
            ..base()
        };
        assert_ne!(with.key(), base().key());
        assert_eq!(with.changes_since(&base()), ["agent user changed"]);
        let pinned = KeyComponents {
            toolchains: BTreeMap::from([("node".into(), "22.11.0".into())]),
            ..base()
        };
        assert_eq!(pinned.changes_since(&base()), ["toolchains changed"]);
        assert!(!json.contains("toolchains"), "{json}");
    }

    /// Regression: the key left the workspace out, so two workspaces' identical
    /// environments shared one snapshot, and a build in one removed the other's.
    #[test]
    fn workspaces_never_share_a_snapshot_key() {
        let other = KeyComponents {
            workspace: "team-b".into(),
            ..base()
        };
        assert_ne!(other.key(), base().key());
    }

    fn base() -> KeyComponents {
        KeyComponents {
            format: SNAPSHOT_FORMAT,
            workspace: "default".into(),
            environment: "web".into(),
            repo: "/srv/web".into(),
            default_branch: "main".into(),
            image: "sha256:aa".into(),
            setup_script: "make deps".into(),
            maintenance_script: "make update".into(),
            env: BTreeMap::from([("A".into(), "1".into())]),
            secrets: BTreeMap::from([("T".into(), "keyed-hash-of-v1".into())]),
            runtime: "crun hangar-0.1.0".into(),
            auto_install: vec!["package-lock.json: npm ci".into()],
            user: None,
            toolchains: BTreeMap::new(),
        }
    }

    fn snap(c: &KeyComponents, created_ms: i64) -> SnapshotRecord {
        SnapshotRecord {
            key: c.key(),
            workspace: "default".into(),
            environment: c.environment.clone(),
            components: serde_json::to_string(c).unwrap(),
            size: 10,
            created_ms,
            expires_ms: created_ms + 1000,
            last_used_ms: created_ms,
            hits: 0,
            reset: false,
            boot_id: "boot-1".into(),
            durable: true,
            source: None,
        }
    }

    fn at(ms: i64) -> Now<'static> {
        Now {
            ms,
            boot_id: "boot-1",
        }
    }

    /// Changes one component and expects a miss for exactly `reason`.
    fn check(change: impl FnOnce(&mut KeyComponents), reason: &str) {
        let old = base();
        let mut new = base();
        change(&mut new);
        assert_ne!(new.key(), old.key(), "{reason}: the key did not change");
        let got = lookup(&new.key(), &new, &[snap(&old, 0)], at(10));
        assert_eq!(
            got,
            Lookup::Miss(format!("{reason} since snapshot {}", short(&old.key())))
        );
    }

    #[test]
    fn each_component_alone_misses_with_its_reason() {
        check(|c| c.image = "sha256:bb".into(), "image changed");
        check(|c| c.setup_script.push_str(" all"), "setup script changed");
        check(
            |c| c.maintenance_script.clear(),
            "maintenance script changed",
        );
        check(
            |c| {
                c.env.insert("B".into(), "2".into());
            },
            "environment variables changed",
        );
        check(
            |c| {
                c.secrets.insert("T".into(), "keyed-hash-of-v2".into());
            },
            "secrets changed",
        );
        check(
            |c| c.runtime = "runc hangar-0.1.0".into(),
            "runtime changed",
        );
        check(|c| c.auto_install.clear(), "auto-install plan changed");
        check(|c| c.format += 1, "snapshot format changed");
        check(|c| c.default_branch = "dev".into(), "repository changed");
        check(
            |c| {
                c.setup_script.clear();
                c.image = "sha256:cc".into();
            },
            "image changed, setup script changed",
        );
    }

    #[test]
    fn nothing_else_misses() {
        let c = base();
        let s = snap(&c, 0);
        assert_eq!(
            lookup(&c.key(), &base(), std::slice::from_ref(&s), at(10)),
            Lookup::Hit(s.clone())
        );
        // Pinned: renaming, reordering or adding a field without `skip_serializing_if`
        // changes the key of every snapshot already built.
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"format":1,"workspace":"default","environment":"web","repo":"/srv/web","default_branch":"main","image":"sha256:aa","setup_script":"make deps","maintenance_script":"make update","env":{"A":"1"},"secrets":{"T":"keyed-hash-of-v1"},"runtime":"crun hangar-0.1.0","auto_install":["package-lock.json: npm ci"]}"#
        );
        assert_eq!(
            c.key(),
            "a31c9aee1bb5c45069bd23d350af92e2d8ee672e58c0d1013434579f180a080d",
            "the encoding is stable"
        );
        assert_eq!(
            lookup(&c.key(), &c, &[], at(10)),
            Lookup::Miss("none yet".into())
        );
        assert_eq!(
            lookup(
                &c.key(),
                &c,
                &[SnapshotRecord {
                    reset: true,
                    ..s.clone()
                }],
                at(10)
            ),
            Lookup::Miss("reset".into())
        );
        assert_eq!(
            lookup(&c.key(), &c, std::slice::from_ref(&s), at(1000)),
            Lookup::Miss(format!(
                "expired: snapshot {} was built just now",
                short(&c.key())
            ))
        );
    }

    #[test]
    fn a_snapshot_not_yet_on_disk_serves_only_its_own_boot() {
        let c = base();
        let pending = SnapshotRecord {
            durable: false,
            ..snap(&c, 0)
        };
        let other_boot = Now {
            ms: 10,
            boot_id: "boot-2",
        };
        assert_eq!(
            lookup(&c.key(), &c, std::slice::from_ref(&pending), at(10)),
            Lookup::Hit(pending.clone())
        );
        assert_eq!(
            lookup(&c.key(), &c, std::slice::from_ref(&pending), other_boot),
            Lookup::Miss(format!(
                "snapshot {} was not yet on disk when the machine restarted",
                short(&c.key())
            ))
        );
        let durable = snap(&c, 0);
        assert_eq!(
            lookup(&c.key(), &c, std::slice::from_ref(&durable), other_boot),
            Lookup::Hit(durable.clone())
        );
        let none = std::collections::HashSet::new();
        assert_eq!(
            to_collect(&[durable], &none, other_boot, None),
            Vec::<&SnapshotRecord>::new()
        );
        assert_eq!(
            to_collect(std::slice::from_ref(&pending), &none, other_boot, None),
            vec![&pending]
        );
        assert!(to_collect(std::slice::from_ref(&pending), &none, at(10), None).is_empty());
    }

    #[test]
    fn collection_takes_expired_then_least_recently_used() {
        let mk = |key: &str, used: i64, expires: i64, size: i64| SnapshotRecord {
            key: key.into(),
            workspace: "default".into(),
            environment: "e".into(),
            components: "{}".into(),
            size,
            created_ms: 0,
            expires_ms: expires,
            last_used_ms: used,
            hits: 0,
            reset: false,
            boot_id: "boot-1".into(),
            durable: true,
            source: None,
        };
        let all = vec![
            mk("old", 1, 5, 100),
            mk("lru", 2, 100, 100),
            mk("mru", 9, 100, 100),
            mk("busy", 0, 100, 100),
        ];
        let leased = std::collections::HashSet::from(["busy".to_string()]);
        let keys = |v: Vec<&SnapshotRecord>| v.iter().map(|s| s.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(to_collect(&all, &leased, at(10), None)), ["old"]);
        assert_eq!(
            keys(to_collect(&all, &leased, at(10), Some(200))),
            ["old", "lru"]
        );
        assert_eq!(
            keys(to_collect(&all, &leased, at(10), Some(0))),
            ["old", "lru", "mru"]
        );
    }

    fn attempt_with(cache: Option<&str>) -> AttemptRecord {
        AttemptRecord {
            index: 2,
            status: hangar_spec::AttemptStatus::Ready,
            sandbox: None,
            cache: cache.map(str::to_string),
            base_commit: None,
            result_tree: None,
            final_message: None,
            exit_code: None,
            error: None,
            phases: Vec::new(),
            summary: None,
            check: None,
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
        }
    }

    /// The stored text's spelling is fixed: attempts recorded by earlier versions read
    /// back, and what is written now reads as they did.
    #[test]
    fn stored_cache_info_reads_back_typed() {
        let task: TaskId = "0123456789ab".parse().unwrap();
        for (status, spelled) in [
            (CacheStatus::Hit, "hit"),
            (CacheStatus::Miss, "miss"),
            (CacheStatus::From, "from"),
        ] {
            let text = format!(r#"{{"status":"{spelled}","reason":"none yet","snapshot":"3f2a"}}"#);
            let info = CacheInfo {
                status,
                reason: "none yet".into(),
                snapshot: "3f2a".into(),
            };
            assert_eq!(info.to_stored(), text);
            assert_eq!(
                CacheInfo::recorded(&task, &attempt_with(Some(&text))).unwrap(),
                Some(info)
            );
        }
        assert_eq!(
            CacheInfo::recorded(&task, &attempt_with(None)).unwrap(),
            None
        );
    }

    /// Regression: the API read a stored text that did not parse as no cache info at all
    /// (`null`), so a damaged record looked like an attempt that never got that far.
    #[test]
    fn a_corrupt_stored_cache_info_is_an_error_naming_the_attempt() {
        let task: TaskId = "0123456789ab".parse().unwrap();
        for text in [
            r#"{"status":"maybe","reason":"r","snapshot":"s"}"#,
            r#"{"status":"hit""#,
            "",
        ] {
            let err = CacheInfo::recorded(&task, &attempt_with(Some(text))).unwrap_err();
            assert_eq!((err.task.clone(), err.attempt), (task.clone(), 2));
            let message = err.to_string();
            assert!(
                message.starts_with(
                    "failed to read how attempt 2 of task 0123456789ab found its environment: \
                     its stored cache info `"
                ),
                "{message}"
            );
            assert!(message.contains(text), "{message}");
        }
    }
}
