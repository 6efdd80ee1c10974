//! Real open-source projects for the tests and benchmarks, as their registries publish
//! them: a package's source (an npm tarball, a Python sdist, a crate) fetched once per
//! machine with the host's own package managers (so from the registries they are
//! configured for, whose names appear nowhere here) and made into a fresh git repository
//! per test: [`six`], [`minimist`] and [`semver`], each with its own test suite.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where fetched archives are kept between test runs.
fn cache_dir() -> PathBuf {
    let dir = crate::shared_store().root().join("projects");
    fs::create_dir_all(&dir).expect("create the projects cache");
    dir
}

/// Runs `cmd`, retrying a failure (a registry or a resolver can fail once); panics with
/// its output after the last try.
fn run(what: &str, mut make: impl FnMut() -> Command) {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_secs(2 << attempt));
        }
        let out = make().output().unwrap_or_else(|e| panic!("{what}: {e}"));
        if out.status.success() {
            return;
        }
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    panic!("{what} failed three times:\n{last}");
}

/// Fetches `archive` with `fetch` (into a partial file, under a lock) unless it is there.
fn fetch_once(archive: &Path, fetch: impl FnOnce(&Path)) {
    let lock = fs::File::create(archive.with_extension("lock")).expect("create the lock file");
    lock.lock().expect("lock the fetch");
    if !archive.exists() {
        let partial = archive.with_extension("partial");
        let _ = fs::remove_file(&partial);
        fetch(&partial);
        fs::rename(&partial, archive).expect("keep the archive");
    }
}

/// `archive` (fetched by `fetch` into that path, under a lock, unless it is there),
/// unpacked into a new repository whose top is the archive's one top directory.
fn unpack(archive: &Path, fetch: impl FnOnce(&Path)) -> tempfile::TempDir {
    fetch_once(archive, fetch);
    let dir = tempfile::tempdir().expect("tempdir");
    let unpacked = Command::new("tar")
        .args(["-xzf"])
        .arg(archive)
        .args(["--strip-components=1", "--no-same-owner", "-C"])
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(unpacked.success(), "unpack {}", archive.display());
    dir
}

/// An npm package's published tarball, from the host npm's registry (`npm pack`).
pub fn npm(name: &str, version: &str) -> tempfile::TempDir {
    let archive = npm_archive(name, version);
    unpack(&archive, |_| unreachable!("fetched above"))
}

/// The tarball's name as npm writes it: `@scope/name` packs as `scope-name-VERSION.tgz`.
fn npm_stem(name: &str) -> String {
    name.trim_start_matches('@').replace('/', "-")
}

/// An npm package's tarball in the cache, fetched once per machine.
fn npm_archive(name: &str, version: &str) -> PathBuf {
    let stem = npm_stem(name);
    let archive = cache_dir().join(format!("npm-{stem}-{version}.tgz"));
    fetch_once(&archive, |into| {
        let scratch = tempfile::tempdir().expect("tempdir");
        run(&format!("npm pack {name}@{version}"), || {
            let mut c = Command::new("npm");
            c.current_dir(scratch.path())
                .args(["pack", "--silent", &format!("{name}@{version}")]);
            c
        });
        let packed = scratch.path().join(format!("{stem}-{version}.tgz"));
        fs::copy(packed, into).expect("copy the tarball");
    });
    archive
}

/// One file of an npm package (`file` under the tarball's `package/`), extracted once
/// per machine into the cache: for data packages too large to unpack per test.
pub fn npm_file(name: &str, version: &str, file: &str) -> PathBuf {
    let archive = npm_archive(name, version);
    let dest = cache_dir()
        .join(format!("npm-{}-{version}", npm_stem(name)))
        .join(file);
    fs::create_dir_all(dest.parent().expect("a parent")).expect("create the file's dir");
    fetch_once(&dest, |into| {
        let scratch = tempfile::tempdir().expect("tempdir");
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .args(["--no-same-owner", "-C"])
            .arg(scratch.path())
            .arg(format!("package/{file}"))
            .status()
            .expect("run tar");
        assert!(
            status.success(),
            "extract {file} from {}",
            archive.display()
        );
        fs::copy(scratch.path().join("package").join(file), into).expect("keep the file");
    });
    dest
}

/// A Python package's sdist, from the index the host's pip is configured for.
pub fn pypi(name: &str, version: &str) -> tempfile::TempDir {
    let archive = cache_dir().join(format!("pypi-{name}-{version}.tar.gz"));
    unpack(&archive, |into| {
        run(&format!("fetch the sdist of {name} {version}"), || {
            let mut c = Command::new("python3");
            c.args(["-c", FETCH_SDIST, name, version]).arg(into);
            c
        });
    })
}

/// Finds the sdist on the simple index pip uses (its configuration, else its default).
const FETCH_SDIST: &str = r#"
import os, re, subprocess, sys, urllib.parse, urllib.request
name, version, dest = sys.argv[1:]
index = os.environ.get("PIP_INDEX_URL") or subprocess.run(
    [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
    capture_output=True, text=True).stdout.strip()
if not index:
    from pip._internal.models.index import PyPI
    index = PyPI.simple_url
base = index.rstrip("/") + "/" + name + "/"
page = urllib.request.urlopen(base, timeout=60).read().decode()
for href in re.findall(r'href="([^"]+)"', page):
    url = urllib.parse.urljoin(base, href.replace("&amp;", "&"))
    if urllib.parse.urlsplit(url).path.endswith("/%s-%s.tar.gz" % (name, version)):
        data = urllib.request.urlopen(urllib.parse.urldefrag(url)[0], timeout=120).read()
        open(dest, "wb").write(data)
        break
else:
    sys.exit("the index has no sdist of %s %s" % (name, version))
"#;

/// A crate's published source, from the host cargo's registry (a scratch package that
/// depends on exactly that version is fetched, and the `.crate` file taken from cargo's
/// download cache).
pub fn crate_source(name: &str, version: &str) -> tempfile::TempDir {
    let archive = cache_dir().join(format!("crate-{name}-{version}.tar.gz"));
    unpack(&archive, |into| {
        let scratch = tempfile::tempdir().expect("tempdir");
        let home = scratch.path().join("cargo-home");
        fs::create_dir_all(scratch.path().join("src")).expect("mkdir");
        fs::write(scratch.path().join("src/lib.rs"), "").expect("write");
        fs::write(
            scratch.path().join("Cargo.toml"),
            format!(
                "[package]\nname = \"scratch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
                 [dependencies]\n{name} = \"={version}\"\n"
            ),
        )
        .expect("write");
        // The host's registry configuration, in a cargo home of its own, so the download
        // cache holds this one crate.
        let config = cargo_config();
        run(&format!("cargo fetch {name} {version}"), || {
            let mut c = Command::new("cargo");
            c.current_dir(scratch.path())
                .env("CARGO_HOME", &home)
                .args(["fetch", "--quiet"]);
            if let Some(config) = &config {
                c.arg("--config").arg(config);
            }
            c
        });
        let file = format!("{name}-{version}.crate");
        // Cargo keeps each registry's downloads in a directory of its own.
        let found = fs::read_dir(home.join("registry/cache"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|registry| registry.path().join(&file))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("cargo fetched no {file}"));
        fs::copy(found, into).expect("copy the crate");
    })
}

/// The host's cargo configuration file, if it has one.
fn cargo_config() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    ["config.toml", "config"]
        .iter()
        .map(|f| home.join(f))
        .find(|p| p.is_file())
}

/// A real project in a fresh repository, and what a task on it does.
pub struct RealProject {
    pub name: &'static str,
    pub repo: tempfile::TempDir,
    /// The file a one-line change goes to, and that line.
    pub file: &'static str,
    pub line: &'static str,
    /// The project's own test suite, as `[agent] check`.
    pub check: &'static str,
    /// The install that auto-install runs in setup, as the host runs it in a copy of the
    /// repository (`$CACHES` an empty directory for its caches, so it downloads all).
    pub host_install: &'static str,
}

impl RealProject {
    /// Runs [`RealProject::host_install`] in `dir` with its caches under `caches`.
    pub fn host_install(&self, dir: &Path, caches: &Path) -> Command {
        let mut c = Command::new("bash");
        c.current_dir(dir)
            .args(["-ec", self.host_install])
            .env("CACHES", caches);
        if let Some(config) = cargo_config() {
            c.env("HOST_CARGO_CONFIG", config);
        }
        c
    }
}

fn write(dir: &Path, path: &str, text: &str) {
    fs::write(dir.join(path), text).expect("write a project file");
}

/// Runs a host tool in `dir` (it may ask its registry, so as [`run`] does).
fn tool(dir: &Path, argv: &[&str]) {
    run(&argv.join(" "), || {
        let mut c = Command::new(argv[0]);
        c.current_dir(dir).args(&argv[1..]);
        c
    });
}

/// six, its suite on pytest from `requirements.txt` (auto-install's `pip install -r`).
pub fn six() -> RealProject {
    let repo = pypi("six", "1.17.0");
    write(repo.path(), "requirements.txt", "pytest==8.3.4\n");
    crate::commit_all(repo.path(), "six 1.17.0 from its sdist");
    RealProject {
        name: "six",
        repo,
        file: "six.py",
        line: "# checked by hangar",
        check: "python3 -m pytest -q -p no:cacheprovider test_six.py",
        host_install: "python3 -m pip install -q --no-cache-dir --target \"$CACHES/site\" \
                       -r requirements.txt",
    }
}

/// minimist, its suite on tape, installed by `npm ci` from a lockfile. The package has no
/// `.gitignore`, so `node_modules` is untracked (as in the report that broke diffs).
pub fn minimist() -> RealProject {
    let repo = npm("minimist", "1.2.8");
    // The published manifest runs lint, coverage and an audit around the suite; the
    // suite itself is tape's.
    let manifest = fs::read_to_string(repo.path().join("package.json")).expect("package.json");
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest).expect("JSON");
    manifest["scripts"] = serde_json::json!({ "test": "tape 'test/**/*.js'" });
    manifest["devDependencies"] = serde_json::json!({ "tape": "5.9.0" });
    let text = serde_json::to_string_pretty(&manifest).expect("JSON");
    write(repo.path(), "package.json", &text);
    tool(
        repo.path(),
        &[
            "npm",
            "install",
            "--package-lock-only",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
        ],
    );
    crate::commit_all(repo.path(), "minimist 1.2.8 from its tarball");
    RealProject {
        name: "minimist",
        repo,
        file: "index.js",
        line: "// checked by hangar",
        check: "npm test",
        host_install: "npm ci --cache \"$CACHES/npm\" --no-audit --no-fund --loglevel=error",
    }
}

/// semver, its dependencies fetched by `cargo fetch` from the lockfile, its suite run
/// offline.
pub fn semver() -> RealProject {
    let repo = crate_source("semver", "1.0.23");
    tool(repo.path(), &["cargo", "generate-lockfile", "--quiet"]);
    write(repo.path(), ".gitignore", "/target\n");
    crate::commit_all(repo.path(), "semver 1.0.23 from its crate");
    RealProject {
        name: "semver",
        repo,
        file: "src/lib.rs",
        line: "// checked by hangar",
        check: "cargo test --offline --quiet",
        host_install: "CARGO_HOME=\"$CACHES/cargo\" cargo fetch --quiet \
                       ${HOST_CARGO_CONFIG:+--config \"$HOST_CARGO_CONFIG\"}",
    }
}
