//! Images end to end, with real tools: mmdebstrap builds, Debian's docker-registry serves
//! pulls and pushes on 127.0.0.1, skopeo writes the OCI layouts and docker archives that
//! hangar imports, and a real overlay shows that whiteouts hide lower files.

use std::fs;
use std::path::Path;
use std::process::Command;

use hangar_image::{pull, push, RegistryOptions};
use hangar_sandbox::{ExecSpec, Sandbox, SandboxSpec};
use hangar_store::{ImageRecord, Store};
use hangar_testkit::{debian_image, host, shared_store, Registry};

fn quiet(_: &str) {}

fn diff_ids(store: &Store, rec: &ImageRecord) -> Vec<String> {
    store.image_config(rec).unwrap().rootfs().diff_ids().clone()
}

/// The shared Debian image, pushed to a fresh registry as `<addr>/hangar/<repo>:1`.
struct Pushed {
    shared: Store,
    rec: ImageRecord,
    registry: Registry,
    reference: String,
}

async fn pushed(repo: &str) -> Pushed {
    let shared = shared_store();
    let rec = tokio::task::spawn_blocking({
        let s = shared.clone();
        move || debian_image(&s)
    })
    .await
    .unwrap();
    let registry = Registry::start();
    let reference = format!("{}/hangar/{repo}:1", registry.addr);
    let digest = push(
        &shared,
        "debian-bookworm",
        &reference,
        &RegistryOptions { insecure: true },
        &quiet,
    )
    .await
    .unwrap();
    assert_eq!(
        digest, rec.manifest,
        "push reports the local manifest digest"
    );
    Pushed {
        shared,
        rec,
        registry,
        reference,
    }
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_image_has_a_proper_config_and_the_default_packages() {
    let store = shared_store();
    let rec = tokio::task::spawn_blocking({
        let store = store.clone();
        move || debian_image(&store)
    })
    .await
    .unwrap();
    let config = store.image_config(&rec).unwrap();
    let c = config.config().clone().unwrap();
    assert!(c
        .env()
        .as_ref()
        .unwrap()
        .iter()
        .any(|e| e.starts_with("PATH=/usr/local/sbin")));
    assert_eq!(c.working_dir().as_deref(), Some("/"));
    assert_eq!(config.rootfs().diff_ids().len(), 1);
    let layer = hangar_image::layer_dirs(&store, &rec).unwrap().remove(0);
    for tool in [
        "usr/bin/bash",
        "usr/bin/git",
        "usr/bin/curl",
        "etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(
            layer.join(tool).exists(),
            "{tool} missing from the built image"
        );
    }
    assert!(
        !layer.join("dev/null").exists(),
        "device nodes must not be in a layer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_round_trip_keeps_digests() {
    let Pushed {
        shared,
        rec,
        registry: _registry,
        reference,
    } = pushed("base").await;
    let opts = RegistryOptions { insecure: true };

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Store::open(fresh_dir.path()).unwrap();
    let pulled = pull(&fresh, &reference, None, &opts, &quiet).await.unwrap();
    assert_eq!(
        pulled.manifest, rec.manifest,
        "manifest digest changed in the round trip"
    );
    assert_eq!(pulled.name.as_str(), reference);
    assert_eq!(diff_ids(&fresh, &pulled), diff_ids(&shared, &rec));
    let layer = hangar_image::layer_dirs(&fresh, &pulled).unwrap().remove(0);
    assert!(layer.join("usr/bin/git").is_file());

    // Without --insecure the client insists on TLS, and says so.
    let err = pull(
        &fresh,
        &reference,
        Some(&"x".parse().unwrap()),
        &RegistryOptions::default(),
        &quiet,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(&reference), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_registry_blob_is_refused_and_nothing_is_named() {
    let Pushed {
        shared,
        rec,
        registry,
        reference,
    } = pushed("tampered").await;
    let opts = RegistryOptions { insecure: true };
    // Corrupt the config blob in the registry's own storage.
    let config = hangar_store::config_digest(&shared.manifest(&rec.manifest).unwrap()).unwrap();
    let data =
        walk(&registry.storage(), config.hex()).expect("the registry stores the config blob");
    fs::write(&data, b"{\"tampered\": true}").unwrap();

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Store::open(fresh_dir.path()).unwrap();
    let err = pull(&fresh, &reference, None, &opts, &quiet)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("sha256") || err.contains("digest"), "{err}");
    assert!(
        fresh.images().unwrap().is_empty(),
        "a tampered pull left a named image"
    );
    assert!(!fresh.has_blob(&config));
}

/// Finds `<hex>/data` below `dir` (the registry's blob layout).
fn walk(dir: &Path, hex: &str) -> Option<std::path::PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == hex) && p.join("data").is_file() {
                return Some(p.join("data"));
            }
            if let Some(found) = walk(&p, hex) {
                return Some(found);
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_skopeo_layouts_and_archives() {
    let Pushed {
        shared,
        rec,
        registry: _registry,
        reference,
    } = pushed("import").await;
    let work = tempfile::tempdir().unwrap();
    let src = format!("docker://{reference}");
    let layout = work.path().join("layout");
    let oci_archive = work.path().join("image.oci.tar");
    let docker_archive = work.path().join("saved.tar");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &src,
        &format!("oci:{}:v1", layout.display()),
    ]);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &src,
        &format!("oci-archive:{}:v1", oci_archive.display()),
    ]);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &src,
        &format!("docker-archive:{}:saved/image:v1", docker_archive.display()),
    ]);

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Store::open(fresh_dir.path()).unwrap();
    let from_layout = hangar_image::import(&fresh, &layout, None, &quiet).unwrap();
    assert_eq!(
        from_layout.manifest, rec.manifest,
        "an OCI layout import keeps the manifest digest"
    );
    assert_eq!(
        from_layout.name.as_str(),
        "v1",
        "the layout's ref name names the image"
    );

    let from_archive = hangar_image::import(
        &fresh,
        &oci_archive,
        Some(&"archived".parse().unwrap()),
        &quiet,
    )
    .unwrap();
    assert_eq!(from_archive.manifest, rec.manifest);
    assert_eq!(from_archive.name.as_str(), "archived");

    // docker save stores layers uncompressed: a new manifest, the same content.
    let saved = hangar_image::import(&fresh, &docker_archive, None, &quiet).unwrap();
    assert_eq!(
        saved.name.as_str(),
        "docker.io/saved/image:v1",
        "the archive's RepoTags name the image"
    );
    assert_eq!(diff_ids(&fresh, &saved), diff_ids(&shared, &rec));
    assert_eq!(
        hangar_image::layer_dirs(&fresh, &saved).unwrap(),
        hangar_image::layer_dirs(&fresh, &from_layout).unwrap()
    );

    let listed: Vec<String> = fresh
        .images()
        .unwrap()
        .into_iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(listed, ["archived", "docker.io/saved/image:v1", "v1"]);
    let report = fresh.remove_image("archived").unwrap();
    assert_eq!(
        (report.blobs, report.layers),
        (0, 0),
        "blobs still used by v1 must stay"
    );
    fresh.remove_image("v1").unwrap();
    fresh.remove_image("docker.io/saved/image:v1").unwrap();
    assert_eq!(
        fs::read_dir(fresh.path(hangar_store::Bucket::Layers))
            .unwrap()
            .count(),
        0,
        "rm left layers behind"
    );
    assert_eq!(
        fs::read_dir(fresh.path(hangar_store::Bucket::Blobs))
            .unwrap()
            .count(),
        0,
        "rm left blobs behind"
    );
}

#[test]
fn import_refuses_bad_input_and_symlinks_out_of_the_input() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let input = tempfile::tempdir().unwrap();
    let err = hangar_image::import(&store, input.path(), None, &quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("neither an OCI layout"), "{err}");

    // A docker-save manifest whose layer is a symlink to a host file.
    fs::write(
        input.path().join("manifest.json"),
        r#"[{"Config":"config.json","RepoTags":["evil:1"],"Layers":["layer.tar"]}]"#,
    )
    .unwrap();
    fs::write(
        input.path().join("config.json"),
        r#"{"rootfs":{"type":"layers","diff_ids":[]}}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/shadow", input.path().join("layer.tar")).unwrap();
    let err = hangar_image::import(&store, input.path(), None, &quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer.tar"), "{err}");
    assert!(store.images().unwrap().is_empty());

    fs::write(input.path().join("manifest.json"), "not json").unwrap();
    let err = hangar_image::import(&store, input.path(), None, &quiet)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("manifest.json") && err.contains("not valid"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_hide_lower_files_in_a_real_overlay() {
    let (store, mut lowers) = tokio::task::spawn_blocking(hangar_testkit::debian_layers)
        .await
        .unwrap();
    // A top layer, as a registry would ship it, that deletes a file and empties a directory.
    let mut builder = tar::Builder::new(Vec::new());
    for (path, kind) in [
        ("etc/", tar::EntryType::Directory),
        ("etc/.wh.debian_version", tar::EntryType::Regular),
        ("usr/share/doc/", tar::EntryType::Directory),
        ("usr/share/doc/.wh..wh..opq", tar::EntryType::Regular),
        ("usr/share/doc/NEW", tar::EntryType::Regular),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(0);
        h.set_cksum();
        builder.append_data(&mut h, path, &[][..]).unwrap();
    }
    let top_dir = tempfile::tempdir().unwrap();
    let tar = builder.into_inner().unwrap();
    let budget = hangar_image::unpack::Budget::new(&Default::default(), "top", tar.len() as u64);
    hangar_image::unpack::unpack_layer(&tar[..], top_dir.path(), &budget).unwrap();
    lowers.insert(0, top_dir.path().to_path_buf());

    let host = host(&store);
    let sb = Sandbox::create(&host, SandboxSpec::new(lowers))
        .await
        .unwrap();
    let out = sb
        .output(ExecSpec::new(["/bin/sh", "-c", "test -e /etc/debian_version && echo present; ls /usr/share/doc; test -e /etc/os-release && echo kept"]).env("PATH", "/usr/bin:/bin"))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "NEW\nkept\n");
    sb.destroy().await.unwrap();
}
