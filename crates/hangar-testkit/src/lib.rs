//! Fixtures for hangar's tests: the static init binary, a Debian image and the default
//! image built once per machine and shared by every test process, a real OCI registry (Debian's
//! `docker-registry`) on 127.0.0.1, a headless Chromium driven over WebDriver ([`browser`]),
//! and checks that a sandbox left nothing behind.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hangar_sandbox::{HostConfig, SandboxId};

pub mod browser;
pub mod gitd;
pub mod githttp;
pub mod github;
pub mod model;
pub mod projects;
pub mod upstream;
use hangar_store::{ImageRecord, Store};

/// The workspace's target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The static hangar-init: `HANGAR_INIT`, else where `scripts/build` puts it.
pub fn init_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("HANGAR_INIT") {
        return PathBuf::from(p);
    }
    for profile in ["release", "debug"] {
        let p = target_dir()
            .join("x86_64-unknown-linux-gnu")
            .join(profile)
            .join("hangar-init");
        if p.is_file() {
            return p;
        }
    }
    panic!("hangar-init is not built: run scripts/test (or scripts/build) first")
}

/// The data dir shared by all tests on this machine: images are built once into it.
pub fn shared_store() -> Store {
    Store::open(target_dir().join("hangar-test-data")).expect("open the shared test store")
}

/// A sandbox host config on the given store.
pub fn host(store: &Store) -> HostConfig {
    HostConfig::new(store.path(hangar_store::Bucket::Run), init_binary())
}

/// `debian-bookworm` with the default packages, built on first use under a file lock so
/// that concurrent test processes build it once.
pub fn debian_image(store: &Store) -> ImageRecord {
    built_image(store, "debian-bookworm", "debian.lock")
}

/// The default image ([`hangar_spec::DEFAULT_IMAGE`], the toolchains), built once per
/// machine like [`debian_image`]; its build takes minutes, so only tests of real
/// projects' toolchains use it.
pub fn default_image(store: &Store) -> ImageRecord {
    built_image(store, hangar_spec::DEFAULT_IMAGE, "default-image.lock")
}

/// The built-in image `name` from the store, built (and its layers unpacked) under the
/// lock file `lock` when it is missing.
fn built_image(store: &Store, name: &str, lock: &str) -> ImageRecord {
    let lock_path = store.root().join(lock);
    let lock = fs::File::create(&lock_path).expect("create lock file");
    lock.lock().expect("lock the shared image build");
    let rec = match store.image(name) {
        Ok(rec) => rec,
        Err(_) => {
            let opts = hangar_image::BuildOptions::new(name, None, &[]).expect("a built-in image");
            hangar_image::build_debian(store, &name.parse().expect("name"), &opts, &|l| {
                eprintln!("{l}")
            })
            .unwrap_or_else(|e| panic!("build {name} with mmdebstrap: {e}"))
        }
    };
    hangar_image::layers(store, &rec).expect("unpack layers");
    drop(lock);
    rec
}

/// The layer directories of the shared Debian image, top-most first.
pub fn debian_layers() -> (Store, Vec<PathBuf>) {
    let store = shared_store();
    let rec = debian_image(&store);
    let dirs = hangar_image::layer_dirs(&store, &rec).expect("layers");
    (store, dirs)
}

/// A `docker-registry` (the CNCF distribution registry) on a free loopback port, with its
/// storage in a temporary directory. Stopped on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry (apt-get install docker-registry)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, addr, dir }
    }

    /// The registry's storage directory (to tamper with blobs in tests).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything of a sandbox that could outlive it, as the host sees it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Traces {
    pub mounts: Vec<String>,
    pub netns: Vec<String>,
    pub cgroups: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
    pub processes: Vec<String>,
}

/// Looks for anything left of sandbox `id` (by its host name) on this machine.
pub fn traces(host: &HostConfig, id: &SandboxId) -> Traces {
    let name = id.host_name();
    let mounts = fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(id.as_str()))
        .map(str::to_string)
        .collect();
    let netns = hangar_sandbox::netns_names()
        .into_iter()
        .filter(|n| n == &name)
        .collect();
    let cgroups = host
        .cgroups
        .existing_dirs(&host.cgroups.sandbox_path(&name));
    let dirs = [host.run_dir.join(id.as_str())]
        .into_iter()
        .filter(|p| p.exists())
        .collect();
    let mut processes = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(&name) || text.contains(id.as_str()) {
                processes.push(text);
            }
        }
    }
    Traces {
        mounts,
        netns,
        cgroups,
        dirs,
        processes,
    }
}

/// Panics with what is left when a sandbox's teardown was incomplete.
pub fn assert_no_traces(host: &HostConfig, id: &SandboxId) {
    let t = traces(host, id);
    assert_eq!(t, Traces::default(), "sandbox {id} left traces behind");
}

/// Percentiles for the project's benchmarks.
pub mod bench;

/// Asserts that `script` is valid bash (`bash -n`), whatever quotes it holds.
pub fn assert_bash_parses(script: &str, what: &str) {
    let out = Command::new("bash")
        .args(["-n", "-c", script])
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{what}: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs git in `dir` (with an author set) and returns its trimmed stdout; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=hangar",
            "-c",
            "user.email=hangar@localhost",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes `dir` a repository on branch main whose one commit holds what is in it.
fn commit_all(dir: &Path, message: &str) {
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", message]);
}

/// A repository on branch main with these files committed.
pub fn repo_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, data) in files {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().expect("a file has a parent")).expect("mkdir");
        fs::write(p, data).expect("write a repository file");
    }
    commit_all(dir.path(), "initial");
    dir
}

/// A git repository (branch main, one commit) holding a copy of `examples/<name>`, whose
/// `.hangar/environment.toml` names its environment `env_name` instead of `<name>`.
pub fn example_repo(name: &str, env_name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
        .join(".");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dir.path())
        .status()
        .expect("run cp");
    assert!(copied.success(), "copy examples/{name}");
    let file = dir.path().join(".hangar/environment.toml");
    let text = fs::read_to_string(&file)
        .expect("the example's environment file")
        .replace(
            &format!("name = \"{name}\""),
            &format!("name = \"{env_name}\""),
        );
    fs::write(&file, text).expect("write the environment file");
    commit_all(dir.path(), "example");
    dir
}

/// An example's environment file, ready to create: its repository (see
/// [`example_repo`], kept while this lives), the file's text, and the directory the
/// file's relative paths are taken from.
pub struct ExampleEnv {
    pub repo: tempfile::TempDir,
    pub source: String,
    pub dir: PathBuf,
}

/// `examples/<name>` as the environment `env_name`.
pub fn example_env(name: &str, env_name: &str) -> ExampleEnv {
    let repo = example_repo(name, env_name);
    let dir = repo.path().join(".hangar");
    let source = fs::read_to_string(dir.join("environment.toml")).expect("the environment file");
    ExampleEnv { repo, source, dir }
}

/// Every entry under `dir` as one line, sorted: path, type, owner, mode, mtime (seconds),
/// content digest or link target, hard-link group (named by its first path) and the
/// xattrs a layer keeps (overlay's opaque marker included), so that two trees compare as
/// equal lists.
pub fn tree(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut entries = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read a tree") {
            let path = entry.expect("read a tree").path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let m = fs::symlink_metadata(&path).expect("inspect a tree");
            let t = m.file_type();
            let what = if t.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if t.is_symlink() {
                format!("symlink -> {}", fs::read_link(&path).unwrap().display())
            } else if t.is_char_device() {
                format!("char {}", m.rdev())
            } else if t.is_fifo() {
                "fifo".to_string()
            } else if t.is_socket() {
                "socket".to_string()
            } else {
                let bytes = fs::read(&path).expect("read a file of a tree");
                format!("file {} bytes {}", bytes.len(), sha256_hex(&bytes))
            };
            let mut attrs: Vec<String> = xattr::list(&path)
                .map(|names| names.collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|k| k.to_string_lossy().into_owned())
                .filter(|k| {
                    k.starts_with("user.")
                        || k == "security.capability"
                        || k == "trusted.overlay.opaque"
                })
                .map(|k| {
                    let v = xattr::get(&path, &k).ok().flatten().unwrap_or_default();
                    format!("{k}={}", String::from_utf8_lossy(&v))
                })
                .collect();
            attrs.sort();
            // Neither a symlink's own time nor a whiteout's is seen through an overlay,
            // and layers do not keep them.
            let mtime = if t.is_symlink() || t.is_char_device() {
                0
            } else {
                m.mtime()
            };
            let line = format!(
                "{rel} {what} {}:{} {:o} t{mtime} [{}]",
                m.uid(),
                m.gid(),
                m.mode() & 0o7777,
                attrs.join(",")
            );
            let group = (!t.is_dir() && m.nlink() > 1).then_some(m.ino());
            entries.push((rel, line, group));
        }
    }
    entries.sort();
    let mut first: std::collections::HashMap<u64, String> = Default::default();
    entries
        .into_iter()
        .map(|(rel, line, group)| match group {
            Some(ino) => {
                let name = first.entry(ino).or_insert(rel);
                format!("{line} linked-with {name}")
            }
            None => line,
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
