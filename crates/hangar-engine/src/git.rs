//! Host-side git: one bare mirror per repository, and nothing else. These commands never
//! touch a work tree, run with hooks, fsmonitor and the user's and system's git config
//! off, and clone local sources over the pack protocol (`--no-local`), so a crafted
//! source repository cannot make the host run its code (security invariant 2).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

use crate::error::{io_err, EngineError, Result};

/// The bare mirrors under one directory.
#[derive(Debug, Clone)]
pub struct Mirrors {
    dir: PathBuf,
}

/// A git command that reads no config but hangar's own and runs no hooks.
pub(crate) fn hardened_git(home: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.env_clear();
    for var in ["PATH", "SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "LANG"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    for var in [
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ATTR_NOSYSTEM", "1")
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "protocol.ext.allow=never",
            "-c",
            "protocol.file.allow=always",
        ])
        .stdin(Stdio::null());
    cmd
}

/// Runs git; its stdout, or its last line of stderr as the error.
pub(crate) fn run(mut cmd: Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd.output().map_err(|e| EngineError::Git {
        what: what.to_string(),
        message: format!("cannot start git: {e}"),
    })?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(EngineError::Git {
            what: what.to_string(),
            message: stderr
                .trim()
                .lines()
                .last()
                .unwrap_or("no message")
                .to_string(),
        })
    }
}

/// How far a mirror's git may reach. A token tenant's repository URL is checked for
/// internal addresses before git runs; git would then resolve the name again (a
/// rebinding window) and follow an http(s) server's redirects, either of which leads
/// past that check to the daemon host's loopback. So a tenant's git connects only to the
/// addresses checked, and follows no redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The local admin's repositories: git connects as it is configured to.
    Any,
    /// A tenant's: no redirects, and the URL's host pinned to `addrs` (none when the
    /// admin opened the host, which then needs no check).
    Checked(Pin),
}

/// The addresses a tenant's repository host was checked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The URL's `scheme://authority` exactly as written (`git://host:9418`).
    pub origin: String,
    pub host: String,
    pub port: u16,
    pub addrs: Vec<std::net::IpAddr>,
}

impl Reach {
    /// The `-c` settings that hold git to this reach: curl's resolve list for http(s);
    /// for `git://`, which connects on its own, the URL rewritten to the first address.
    pub(crate) fn git_config(&self) -> Vec<String> {
        let Reach::Checked(pin) = self else {
            return Vec::new();
        };
        let mut out = vec!["http.followRedirects=false".to_string()];
        // An address literal is connected to as checked; a name would be looked up again.
        let Some(first) = pin
            .addrs
            .first()
            .filter(|_| pin.host.parse::<std::net::IpAddr>().is_err())
        else {
            return out;
        };
        let bracket = |ip: &std::net::IpAddr| match ip {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        };
        if pin.origin.starts_with("git://") {
            out.push(format!(
                "url.git://{}:{}/.insteadOf={}/",
                bracket(first),
                pin.port,
                pin.origin
            ));
        } else {
            let addrs: Vec<String> = pin.addrs.iter().map(bracket).collect();
            out.push(format!(
                "http.curloptResolve={}:{}:{}",
                pin.host,
                pin.port,
                addrs.join(",")
            ));
        }
        out
    }
}

impl Mirrors {
    pub fn new(dir: PathBuf) -> Mirrors {
        Mirrors { dir }
    }

    /// The hardened git, with an empty home of hangar's own.
    pub(crate) fn git(&self) -> Command {
        hardened_git(&self.home())
    }

    /// The directory the mirrors are in.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// git's empty home of hangar's own.
    pub(crate) fn home(&self) -> PathBuf {
        self.dir.join(".home")
    }

    /// Where the mirror of `repo` lives (whether or not it exists yet).
    pub fn path(&self, repo: &str) -> PathBuf {
        let hash = hex::encode(&Sha256::digest(repo.as_bytes())[..8]);
        self.dir
            .join(format!("{hash}-{}.git", hangar_spec::repo_name(repo)))
    }

    /// Clones or refreshes the mirror of `repo`; returns its path. Concurrent callers
    /// for the same repository take turns on a lock file.
    pub fn sync(&self, repo: &str, reach: &Reach) -> Result<PathBuf> {
        let home = self.home();
        fs::create_dir_all(&home).map_err(io_err("create", &home))?;
        let path = self.path(repo);
        let lock_path = path.with_extension("lock");
        let lock = fs::File::create(&lock_path).map_err(io_err("create", &lock_path))?;
        lock.lock().map_err(io_err("lock", &lock_path))?;

        let mut cmd = self.git();
        for setting in reach.git_config() {
            cmd.arg("-c").arg(setting);
        }
        if path.join("HEAD").is_file() {
            cmd.arg("-C")
                .arg(&path)
                .args(["fetch", "--prune", "--quiet", "origin"]);
            run(cmd, &format!("fetch {repo}"))?;
            return Ok(path);
        }
        let source = local_source(repo);
        if let Some(src) = &source {
            // The source may belong to another user; reading it over the pack protocol
            // runs none of its config, so trusting it for this one command is safe.
            cmd.arg("-c")
                .arg(format!("safe.directory={}", src.display()));
        }
        let partial = path.with_extension("partial");
        let _ = fs::remove_dir_all(&partial);
        cmd.args(["clone", "--mirror", "--no-local", "--quiet", "--"])
            .arg(source.as_deref().map_or(repo.as_ref(), Path::as_os_str))
            .arg(&partial);
        if let Err(e) = run(cmd, &format!("clone {repo}")) {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
        fs::rename(&partial, &path).map_err(io_err("rename", &partial))?;
        Ok(path)
    }

    /// The names at the top of `branch` in the mirror (what auto-install looks at).
    /// The default branch's tip and the file at `path` there (`None` when the branch has
    /// no such file), read from the mirror by plumbing.
    pub fn file_at(
        &self,
        repo: &str,
        branch: &str,
        path: &str,
    ) -> Result<(String, Option<Vec<u8>>)> {
        let mut cmd = self.git();
        cmd.arg("-C").arg(self.path(repo)).args([
            "rev-parse",
            "--verify",
            &format!("refs/heads/{branch}^{{commit}}"),
        ]);
        let tip = run(cmd, &format!("read branch `{branch}` of {repo}"))?;
        let tip = String::from_utf8_lossy(&tip).trim().to_string();
        let mut cmd = self.git();
        cmd.arg("-C")
            .arg(self.path(repo))
            .args(["cat-file", "blob", &format!("{tip}:{path}")]);
        Ok((tip, run(cmd, &format!("read {path} of {repo}")).ok()))
    }

    pub fn top_files(&self, repo: &str, branch: &str) -> Result<Vec<String>> {
        let mut cmd = self.git();
        cmd.arg("-C").arg(self.path(repo)).args([
            "ls-tree",
            "--name-only",
            "-z",
            &format!("refs/heads/{branch}"),
            "--",
        ]);
        let out = run(cmd, &format!("read branch `{branch}` of {repo}")).map_err(|e| match e {
            EngineError::Git { what, .. } => EngineError::Git {
                what,
                message: format!("the default branch `{branch}` is not in the repository"),
            },
            other => other,
        })?;
        Ok(out
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect())
    }
}

/// A repository given as a local path (absolute, or `file://`), canonicalized.
fn local_source(repo: &str) -> Option<PathBuf> {
    let p = repo.strip_prefix("file://").unwrap_or(repo);
    if p.starts_with('/') {
        fs::canonicalize(p).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(reach: Reach, expected: &[&str]) {
        assert_eq!(reach.git_config(), expected, "{reach:?}");
    }

    #[test]
    fn a_checked_reach_pins_git_to_its_addresses() {
        let pin = |origin: &str, host: &str, port, addrs: &[&str]| {
            Reach::Checked(Pin {
                origin: origin.into(),
                host: host.into(),
                port,
                addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            })
        };
        check(Reach::Any, &[]);
        check(
            pin(
                "https://h.test",
                "h.test",
                443,
                &["198.51.100.1", "2001:db8::1"],
            ),
            &[
                "http.followRedirects=false",
                "http.curloptResolve=h.test:443:198.51.100.1,[2001:db8::1]",
            ],
        );
        check(
            pin("git://h.test", "h.test", 9418, &["198.51.100.1"]),
            &[
                "http.followRedirects=false",
                "url.git://198.51.100.1:9418/.insteadOf=git://h.test/",
            ],
        );
        check(
            pin(
                "git://[2001:db8::2]:9000",
                "2001:db8::2",
                9000,
                &["2001:db8::2"],
            ),
            &["http.followRedirects=false"],
        );
        check(
            pin("https://opened.test", "opened.test", 443, &[]),
            &["http.followRedirects=false"],
        );
    }
}
