//! Snapshots travel: exported from one data dir through a real registry (Debian's
//! `docker-registry` on 127.0.0.1) and imported into another, they give the identical
//! tree and a cache hit; an import made from other inputs, or of an image that is not a
//! snapshot, is refused with the reason.

use std::path::Path;

mod common;

use hangar_engine::cache::CacheInfo;
use hangar_engine::{Engine, EngineConfig, EngineError};
use hangar_image::RegistryOptions;
use hangar_spec::TaskId;
use hangar_store::{Bucket, LeaseKind, Store};

const SETUP: &str = r#"
echo from-setup > /opt/from-setup
ln /opt/from-setup /opt/hard-link
ln -s ../opt/from-setup /usr/local/soft-link
install -m 4755 /bin/true /usr/local/bin/setuid-true
mkdir -p /home/dev && echo owned > /home/dev/file && chown -R 1000:1000 /home/dev
python3 -c "import os; os.setxattr('/opt/from-setup', 'user.origin', b'setup')"
rm /etc/debian_version
rm -rf /usr/share/doc && mkdir /usr/share/doc && echo fresh > /usr/share/doc/only
"#;

fn source(name: &str, repo: &Path, setup: &str) -> String {
    format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n\
         [setup]\nscript = '''\n{setup}\n'''\n\
         [agent]\nscript = '''\necho \"$(cat /opt/from-setup) $(ls /usr/share/doc) $(test -e /etc/debian_version || echo deleted)\"\n'''\n",
        repo.display()
    )
}

async fn run(engine: &Engine, env: &str) -> (Option<String>, CacheInfo) {
    let (_, a) = common::run(engine, &common::request(env, "go")).await;
    assert_eq!(a.error, None);
    let cache = common::cache_of(&a);
    (a.final_message, cache)
}

fn quiet(_: &str) {}

#[tokio::test]
async fn an_exported_snapshot_imports_as_the_identical_tree_and_a_hit() {
    let registry = hangar_testkit::Registry::start();
    let opts = RegistryOptions { insecure: true };
    let here = hangar_testkit::shared_store();
    let base = hangar_testkit::debian_image(&here);
    let a = Engine::open(EngineConfig::new(
        here.clone(),
        hangar_testkit::init_binary(),
    ))
    .await
    .unwrap();
    let origin = hangar_testkit::repo_with(&[("README", b"x\n")]);
    let name = format!("travel-{}", TaskId::random());
    let file = source(&name, origin.path(), SETUP);
    a.create_env("e.toml", &file, origin.path()).await.unwrap();

    let snapshot_ref = format!("{}/snapshots/{name}:1", registry.addr);
    let err = a
        .cache_export(&name, &snapshot_ref, &opts, &quiet)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "failed to export the snapshot of environment `{name}`: it has no snapshot to export (cache miss: none yet)"
        )),
        "{err}"
    );

    let (message, cache) = run(&a, &name).await;
    assert_eq!(cache.status.as_str(), "miss");
    assert_eq!(message.as_deref(), Some("from-setup only deleted"));
    let exported = a
        .cache_export(&name, &snapshot_ref, &opts, &quiet)
        .await
        .unwrap();
    assert!(exported.snapshot.starts_with(&cache.snapshot));

    // Another data dir, as on another machine: the base image comes from the registry.
    let there_dir = tempfile::tempdir().unwrap();
    let there = Store::open(there_dir.path()).unwrap();
    let base_ref = format!("{}/base/{name}:1", registry.addr);
    hangar_image::push(&here, base.name.as_str(), &base_ref, &opts, &quiet)
        .await
        .unwrap();
    hangar_image::pull(
        &there,
        &base_ref,
        Some(&"debian-bookworm".parse().unwrap()),
        &opts,
        &quiet,
    )
    .await
    .unwrap();
    let b = Engine::open(EngineConfig::new(
        there.clone(),
        hangar_testkit::init_binary(),
    ))
    .await
    .unwrap();
    b.create_env("e.toml", &file, origin.path()).await.unwrap();

    let imported = b
        .cache_import(&snapshot_ref, None, &opts, &quiet)
        .await
        .unwrap();
    assert!(imported.imported);
    assert_eq!(imported.environment, name);
    assert_eq!(
        imported.snapshot, exported.snapshot,
        "the same inputs give the same key on both data dirs"
    );
    let tree_a = hangar_testkit::tree(&here.path(Bucket::Snapshots).join(&exported.snapshot));
    let tree_b = hangar_testkit::tree(&there.path(Bucket::Snapshots).join(&imported.snapshot));
    for expected in [
        "etc/debian_version char 0",
        "opt/from-setup file",
        "user.origin=setup",
        "trusted.overlay.opaque=y",
        "linked-with opt/from-setup",
        "home/dev/file file 6 bytes",
    ] {
        assert!(
            tree_a.iter().any(|l| l.contains(expected)),
            "{expected} in the snapshot:\n{}",
            tree_a.join("\n")
        );
    }
    assert_eq!(tree_b, tree_a, "the imported snapshot is the same tree");

    let (message, cache) = run(&b, &name).await;
    assert_eq!(message.as_deref(), Some("from-setup only deleted"));
    assert_eq!(
        (cache.status.as_str(), cache.reason.clone()),
        (
            "hit",
            format!(
                "snapshot {}, imported from {snapshot_ref} just now",
                cache.snapshot
            )
        )
    );

    let again = b
        .cache_import(&snapshot_ref, None, &opts, &quiet)
        .await
        .unwrap();
    assert!(!again.imported, "a usable snapshot with that key is kept");

    // An environment made from other inputs refuses it, naming what differs.
    let other = format!("other-{}", TaskId::random());
    b.create_env(
        "o.toml",
        &source(&other, origin.path(), "echo different > /opt/from-setup"),
        origin.path(),
    )
    .await
    .unwrap();
    let err = b
        .cache_import(&snapshot_ref, Some(&other), &opts, &quiet)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Import { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "failed to import {snapshot_ref}: it was made from other inputs than environment `{other}` here: setup script changed"
        )
    );
    assert!(b
        .snapshots()
        .await
        .unwrap()
        .iter()
        .all(|s| s.environment != other));

    // A crafted snapshot layer meets the same unpacker as any image layer.
    let crafted_ref = format!("{}/snapshots/{name}:crafted", registry.addr);
    let outside = tempfile::tempdir().unwrap();
    push_crafted(
        &here,
        &base,
        &exported.manifest,
        outside.path(),
        &crafted_ref,
    )
    .await;
    assert_eq!(b.cache_reset(&name).await.unwrap(), 1);
    let err = b
        .cache_import(&crafted_ref, None, &opts, &quiet)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("entry `opt/evil`")
            && err.to_string().contains("escapes the layer"),
        "{err}"
    );
    assert!(!outside.path().join("pwned").exists());
    assert!(
        b.snapshots().await.unwrap().iter().all(|s| s.reset),
        "nothing was registered"
    );

    // A snapshot holding a value that is a secret here is refused, whoever built it.
    let secret_env = format!("sec-{}", TaskId::random());
    let secret_file = format!(
        "name = \"{secret_env}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n\
         [setup]\nscript = 'echo shared-value-1234 > /opt/shared'\n\
         [secrets.TOKEN]\n[agent]\nscript = 'true'\n",
        origin.path().display()
    );
    for engine in [&a, &b] {
        engine
            .create_env("s.toml", &secret_file, origin.path())
            .await
            .unwrap();
    }
    let value = |v: &str| hangar_secrets::Secret::new(v.as_bytes().to_vec()).unwrap();
    a.secret_set(&secret_env, "TOKEN", &value("only-on-a-1234"))
        .await
        .unwrap();
    b.secret_set(&secret_env, "TOKEN", &value("shared-value-1234"))
        .await
        .unwrap();
    run(&a, &secret_env).await;
    let secret_ref = format!("{}/snapshots/{secret_env}:1", registry.addr);
    a.cache_export(&secret_env, &secret_ref, &opts, &quiet)
        .await
        .unwrap();
    let err = b
        .cache_import(&secret_ref, None, &opts, &quiet)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("failed to import {secret_ref}: its snapshot holds the value of secret `TOKEN` in /opt/shared")
    );

    let err = b
        .cache_import(&base_ref, Some(&name), &opts, &quiet)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("it is not a hangar snapshot (its config has no `dev.hangar.snapshot.components` label)"),
        "{err}"
    );
}

/// Regression: importing over a snapshot directory a sandbox still used answered 500
/// (`Directory not empty`) and left the unpacked layer in `tmp/layer-*`.
#[tokio::test]
async fn an_import_over_a_snapshot_in_use_is_refused_and_leaves_nothing() {
    let registry = hangar_testkit::Registry::start();
    let opts = RegistryOptions { insecure: true };
    let store = hangar_testkit::shared_store();
    hangar_testkit::debian_image(&store);
    let engine = Engine::open(EngineConfig::new(
        store.clone(),
        hangar_testkit::init_binary(),
    ))
    .await
    .unwrap();
    let origin = hangar_testkit::repo_with(&[("README", b"x\n")]);
    let name = format!("in-use-{}", TaskId::random());
    // A file only this test's layer holds, to find its staging directory by.
    let marker = format!("marker-{name}");
    let setup = format!("echo from-setup > /opt/from-setup\ntouch /opt/{marker}");
    engine
        .create_env(
            "e.toml",
            &source(&name, origin.path(), &setup),
            origin.path(),
        )
        .await
        .unwrap();
    let (_, cache) = run(&engine, &name).await;
    assert_eq!(cache.status.as_str(), "miss");
    let reference = format!("{}/snapshots/{name}:1", registry.addr);
    let exported = engine
        .cache_export(&name, &reference, &opts, &quiet)
        .await
        .unwrap();
    // The snapshot no longer serves, but a sandbox (its lease, as a running attempt
    // writes it) still has it as a lower; the attempt's kept layer, which leases it too,
    // is taken away so that the sandbox's lease alone decides.
    assert_eq!(engine.cache_reset(&name).await.unwrap(), 1);
    for kept in std::fs::read_dir(store.path(Bucket::Kept))
        .unwrap()
        .flatten()
    {
        let lease = std::fs::read_to_string(kept.path().join(LeaseKind::Snapshot.file_name()))
            .unwrap_or_default();
        if lease.lines().any(|l| l == exported.snapshot) {
            std::fs::remove_dir_all(kept.path()).unwrap();
        }
    }
    let holder = tempfile::Builder::new()
        .prefix("holder-")
        .tempdir_in(store.path(hangar_store::Bucket::Run))
        .unwrap();
    hangar_store::lease(
        holder.path(),
        LeaseKind::Snapshot,
        &[exported.snapshot.as_str()],
    )
    .unwrap();

    let err = engine
        .cache_import(&reference, None, &opts, &quiet)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::SnapshotInUse { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "failed to import {reference}: snapshot {} is in use by a running attempt or a \
             kept one; import again when they are done",
            &exported.snapshot[..4]
        )
    );
    let left: Vec<_> = std::fs::read_dir(store.path(Bucket::Tmp))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("opt").join(&marker).exists())
        .map(|e| e.path())
        .collect();
    assert_eq!(
        left,
        Vec::<std::path::PathBuf>::new(),
        "staging left behind"
    );
    let dir = store.path(Bucket::Snapshots).join(&exported.snapshot);
    assert!(
        dir.join("opt").join(&marker).exists(),
        "the snapshot in use is untouched"
    );

    // Once nothing uses it, the import replaces it.
    drop(holder);
    let imported = engine
        .cache_import(&reference, None, &opts, &quiet)
        .await
        .unwrap();
    assert!(imported.imported);
    assert!(dir.join("opt").join(&marker).exists());
}

/// Pushes an image like `exported` (same base, same label) whose snapshot layer holds a
/// symlink out of the layer and a file written through it.
async fn push_crafted(
    store: &Store,
    base: &hangar_store::ImageRecord,
    exported: &str,
    outside: &Path,
    reference: &str,
) {
    let manifest = store.manifest(&exported.parse().unwrap()).unwrap();
    let config = store
        .config(&hangar_store::config_digest(&manifest).unwrap())
        .unwrap();
    let labels = config.config().as_ref().unwrap().labels().clone().unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    tar.append_link(
        &mut link,
        "opt/evil",
        format!("../../../../../../../..{}", outside.display()),
    )
    .unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_size(6);
    file.set_mode(0o644);
    tar.append_data(&mut file, "opt/evil/pwned", &b"pwned\n"[..])
        .unwrap();
    let bytes = tar.into_inner().unwrap();
    let (blob, size) = store.write_blob(&bytes[..], None).unwrap();
    let layer = hangar_image::pack::PackedLayer {
        diff_id: blob.clone(),
        blob,
        size,
    };
    let crafted = hangar_image::pack::derive_image(
        store,
        base,
        &layer,
        "crafted",
        labels.into_iter().collect(),
    )
    .unwrap();
    hangar_image::push_manifest(
        store,
        &crafted,
        reference,
        &RegistryOptions { insecure: true },
        &quiet,
    )
    .await
    .unwrap();
}
