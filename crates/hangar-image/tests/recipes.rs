//! `hangar image build`'s recipes with the real mmdebstrap: an image of one's own from
//! Debian packages, and the default image, whose toolchains must answer inside a sandbox.
//! The README's account of the default image is checked against the recipe.

use std::path::Path;

use hangar_image::{build_debian, BuildOptions, DEFAULT_RECIPE};
use hangar_sandbox::{ExecSpec, Sandbox, SandboxSpec};
use hangar_store::Store;
use hangar_testkit::{default_image, host, shared_store};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `script` with `sh -c` in a sandbox over `layers`; returns (exit code, stdout, stderr).
async fn run_in(
    store: &Store,
    layers: Vec<std::path::PathBuf>,
    script: &str,
) -> (Option<i32>, String, String) {
    let host = host(store);
    let sb = Sandbox::create(&host, SandboxSpec::new(layers))
        .await
        .unwrap();
    let out = sb
        .output(
            ExecSpec::new(["/bin/sh", "-c", script])
                .env("PATH", PATH)
                .env("HOME", "/root"),
        )
        .await
        .unwrap();
    sb.destroy().await.unwrap();
    (
        out.status.code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_of_ones_own_from_bookworm_with_jq_runs_jq() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let opts = BuildOptions::new("tools", Some("debian-bookworm"), &["jq".to_string()]).unwrap();
    let rec = tokio::task::spawn_blocking({
        let store = store.clone();
        move || {
            build_debian(&store, &"tools".parse().unwrap(), &opts, &|l| {
                eprintln!("{l}")
            })
        }
    })
    .await
    .unwrap()
    .unwrap();
    let history = store
        .image_config(&rec)
        .unwrap()
        .history()
        .clone()
        .unwrap_or_default();
    let created_by = history[0].created_by().clone().unwrap_or_default();
    assert!(
        created_by.contains("--include=bash,ca-certificates,git,curl,python3,jq "),
        "{created_by}"
    );
    let layers = hangar_image::layer_dirs(&store, &rec).unwrap();
    let (code, stdout, stderr) =
        run_in(&store, layers, r#"echo '{"a": [1, 2]}' | jq -c '.a | add'"#).await;
    assert_eq!((code, stdout.as_str()), (Some(0), "3\n"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_toolchain_of_the_default_image_answers() {
    let store = shared_store();
    let rec = tokio::task::spawn_blocking({
        let store = store.clone();
        move || default_image(&store)
    })
    .await
    .unwrap();
    let layers = hangar_image::layer_dirs(&store, &rec).unwrap();
    let mut failed = Vec::new();
    for tool in [
        "python3 --version",
        "pip --version",
        "python3 -m venv --help",
        "uv --version",
        "node --version",
        "npm --version",
        "corepack --version",
        "cargo --version",
        "rustc --version",
        "go version",
        "gcc --version",
        "git --version",
        "curl --version",
        "jq --version",
        "rg --version",
    ] {
        let (code, stdout, stderr) = run_in(&store, layers.clone(), tool).await;
        if code != Some(0) || stdout.trim().is_empty() {
            failed.push(format!("{tool}: exit {code:?}: {stdout}{stderr}"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    // The host's own CAs are hangar's to add at sandbox time, never the image's.
    let (_, bundle, _) = run_in(&store, layers, "cat /etc/ssl/certs/ca-certificates.crt").await;
    for ca in std::fs::read_dir("/usr/local/share/ca-certificates")
        .into_iter()
        .flatten()
        .flatten()
    {
        let pem = std::fs::read_to_string(ca.path()).unwrap_or_default();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(
            body.is_empty() || !bundle.replace('\n', "").contains(&body),
            "the host's {} is in the image's trust store",
            ca.path().display()
        );
    }
}

#[test]
fn the_readme_lists_the_default_images_recipe() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let opts = BuildOptions::new(DEFAULT_RECIPE.name, None, &[]).unwrap();
    let packages: Vec<&str> = opts.packages.iter().map(|p| p.as_str()).collect();
    for expected in [
        format!("`hangar image build {}`", DEFAULT_RECIPE.name),
        format!("Debian {} packages: `{}`", opts.suite, packages.join(" ")),
        format!("from the Python index: `{}`", opts.wheels.join(" ")),
        format!("then `{}`", opts.commands.join("; ")),
    ] {
        assert!(
            readme.contains(&expected),
            "README.md should say {expected}"
        );
    }
}
