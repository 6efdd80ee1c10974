//! An attempt's diff made a commit on the host's bare mirror and pushed to a branch, by
//! plumbing only: the patch is applied to a temporary index (never a work tree, so no
//! attribute's filter, no symlink and no hook of the repository comes into play), the
//! commit is written as loose objects with no ref, and the push carries its token in
//! that one command's environment. Everything goes through the hardened git of `git.rs`.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use hangar_secrets::{NamedSecret, Redactor, Secret};

use crate::error::{io_err, EngineError, Result};
use crate::git::{run, Mirrors, Reach};

/// Who a commit says wrote and committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

impl Identity {
    /// A checked identity (see [`Identity::check`]).
    pub fn new(name: impl Into<String>, email: impl Into<String>) -> Result<Identity> {
        let id = Identity {
            name: name.into(),
            email: email.into(),
        };
        id.check()?;
        Ok(id)
    }

    /// git writes `name <email>` into the commit's header line: an angle bracket or a
    /// line break in either would forge another header or identity, and git would drop
    /// an empty one silently.
    pub fn check(&self) -> Result<()> {
        for (what, value) in [("name", &self.name), ("email", &self.email)] {
            let reason = if value.trim().is_empty() {
                format!("the {what} is empty")
            } else if value.contains(['<', '>']) {
                format!("the {what} `{}` holds `<` or `>`", value.escape_debug())
            } else if value.chars().any(char::is_control) {
                format!(
                    "the {what} `{}` holds a line break or a control character",
                    value.escape_debug()
                )
            } else {
                continue;
            };
            return Err(EngineError::BadIdentity { reason });
        }
        Ok(())
    }
}

/// What to commit: an attempt's diff over its base.
#[derive(Debug, Clone, Copy)]
pub struct CommitRequest<'a> {
    /// A full commit id present in the mirror (the attempt's base).
    pub base: &'a str,
    /// The attempt's diff: `git diff --cached --binary --full-index -M` output.
    pub patch: &'a [u8],
    pub message: &'a str,
    /// Used as author and committer.
    pub author: &'a Identity,
}

/// A commit written into the mirror (reachable from no ref).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub commit: String,
    pub tree: String,
}

/// Where to push a commit.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    pub url: &'a str,
    pub commit: &'a str,
    /// The branch's name, without `refs/heads/`.
    pub branch: &'a str,
    /// Sent as `Authorization: Basic base64(x-access-token:TOKEN)` to the URL's origin
    /// only (http(s) URLs only).
    pub token: Option<&'a Secret>,
    pub reach: &'a Reach,
}

/// What a push did to the branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The branch did not exist; it does now, at the commit.
    Created,
    /// The branch already pointed at this commit: nothing was sent.
    AlreadyThere,
    /// The branch pointed at an ancestor of the commit and was fast-forwarded to it.
    Updated,
}

/// What a git command said, run to the end.
struct Said {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with `input` on its stdin. The input is written from a thread of its own,
/// so a git that talks while it reads never waits on a full pipe.
fn run_with(mut cmd: Command, input: &[u8], what: &str) -> Result<Said> {
    let start_err = |e: std::io::Error| EngineError::Git {
        what: what.to_string(),
        message: format!("cannot start git: {e}"),
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(start_err)?;
    let mut pipe = child.stdin.take();
    let out: Output = std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(p) = pipe.as_mut() {
                // git may stop reading early (a malformed patch); its own message says
                // why, so a broken pipe is not the error to report.
                let _ = p.write_all(input);
            }
            drop(pipe.take());
        });
        child.wait_with_output()
    })
    .map_err(start_err)?;
    Ok(Said {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// git's error lines, `error: `/`fatal: ` dropped, as one sentence.
fn complaint(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches("error: ")
                .trim_start_matches("fatal: ")
        })
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        "git gave no reason".to_string()
    } else {
        lines.join("; ")
    }
}

/// A full commit id (SHA-1 or SHA-256), lowercased.
fn full_id(repo: &str, id: &str) -> Result<String> {
    if matches!(id.len(), 40 | 64) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(EngineError::NoSuchCommit {
            repo: repo.to_string(),
            commit: id.to_string(),
            reason: "it is not a full commit id".to_string(),
        })
    }
}

/// `scheme://host[:port]` of an http(s) URL, its user name and password left out: the
/// one origin a token is sent to.
fn http_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// `url` without a user name or password, to name it in an error.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{}", &rest[end..]),
        None => url.to_string(),
    }
}

/// The header value a token is sent as: what GitHub and most forges take from git.
fn basic_auth(token: &Secret) -> String {
    let mut raw = b"x-access-token:".to_vec();
    raw.extend_from_slice(token.expose());
    let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
    raw.fill(0);
    format!("Basic {encoded}")
}

/// The token's forms taken out of what git said: the header as sent, then the value in
/// each of its encodings, then a password in the URL.
struct Scrub {
    header: Option<String>,
    redactor: Redactor,
    url: String,
    shown: String,
}

impl Scrub {
    fn new(token: Option<&Secret>, url: &str) -> Scrub {
        let secrets: Vec<NamedSecret> = token
            .map(|t| NamedSecret {
                name: "push token".to_string(),
                value: t.clone(),
            })
            .into_iter()
            .collect();
        Scrub {
            header: token.map(basic_auth),
            redactor: Redactor::new(&secrets),
            url: url.to_string(),
            shown: without_credentials(url),
        }
    }

    fn clean(&self, text: &str) -> String {
        let mut text = text.to_string();
        if let Some(h) = &self.header {
            let encoded = h.trim_start_matches("Basic ");
            text = text.replace(encoded, "[secret:push token]");
        }
        let mut text = self.redactor.redact(&text).into_owned();
        if self.url != self.shown {
            text = text.replace(&self.url, &self.shown);
        }
        text
    }
}

/// The status git's `--porcelain` gave the pushed ref, with its summary: `*` created,
/// `=` up to date, ` ` fast-forwarded, `!` rejected (`[rejected] (non-fast-forward)`).
fn porcelain_status<'a>(stdout: &'a str, refname: &str) -> Option<(char, &'a str)> {
    stdout.lines().find_map(|line| {
        let mut fields = line.splitn(3, '\t');
        let flag = fields.next()?;
        let refs = fields.next()?;
        let summary = fields.next().unwrap_or("");
        let flag = flag.chars().next().filter(|_| flag.chars().count() == 1)?;
        refs.strip_suffix(refname)
            .filter(|r| r.ends_with(':'))
            .map(|_| (flag, summary))
    })
}

/// Why the remote refused the ref: the summary's reason in words, and what the remote's
/// hooks printed (`remote: ...` lines).
fn refusal(summary: &str, stderr: &str) -> String {
    let raw = summary
        .rsplit_once('(')
        .map_or(summary, |(_, r)| r.trim_end_matches(')'))
        .trim();
    let mut reason = match raw {
        "non-fast-forward" | "fetch first" => {
            format!("the branch exists with other commits ({raw})")
        }
        "" => summary.trim().to_string(),
        _ => raw.to_string(),
    };
    let said: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("remote:"))
        .map(|l| l.replace("\u{1b}[K", "").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if !said.is_empty() {
        reason.push_str(": ");
        reason.push_str(&said.join("; "));
    }
    reason
}

impl Mirrors {
    /// Applies `req.patch` to `req.base` in a temporary index (in a private directory
    /// beside the mirrors) and writes the tree and commit into the mirror; no ref is
    /// created or moved. A patch that changes nothing is refused ([`EngineError::NothingToCommit`]).
    pub fn commit_patch(&self, repo: &str, req: &CommitRequest) -> Result<Committed> {
        req.author.check()?;
        let base = full_id(repo, req.base)?;
        let mirror = self.path(repo);
        let mut cmd = self.git();
        cmd.arg("-C")
            .arg(&mirror)
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("{base}^{{tree}}"));
        let base_tree = run(cmd, &format!("read commit {base} of {repo}")).map_err(|_| {
            EngineError::NoSuchCommit {
                repo: repo.to_string(),
                commit: base.clone(),
                reason: "the mirror has no such commit".to_string(),
            }
        })?;
        let base_tree = String::from_utf8_lossy(&base_tree).trim().to_string();
        let nothing = || EngineError::NothingToCommit {
            repo: repo.to_string(),
            base: base.clone(),
        };
        if req.patch.iter().all(u8::is_ascii_whitespace) {
            return Err(nothing());
        }
        // The paths first, for a refusal that says which path and why; git's own
        // checks below refuse them again.
        crate::diff::patch_paths(req.patch).map_err(|e| EngineError::PatchDoesNotApply {
            base: base.clone(),
            reason: match e {
                EngineError::BadPatch(reason) => reason,
                other => other.to_string(),
            },
        })?;

        let home = self.home();
        std::fs::create_dir_all(&home).map_err(io_err("create", &home))?;
        let scratch = tempfile::Builder::new()
            .prefix(".commit-")
            .tempdir_in(self.dir())
            .map_err(io_err("create a directory in", self.dir()))?;
        let tree = apply_in_index(
            self,
            &mirror,
            &scratch.path().join("index"),
            &base,
            req.patch,
        )?;
        if tree == base_tree {
            return Err(nothing());
        }

        let mut cmd = self.git();
        let who = req.author;
        cmd.env("GIT_AUTHOR_NAME", &who.name)
            .env("GIT_AUTHOR_EMAIL", &who.email)
            .env("GIT_COMMITTER_NAME", &who.name)
            .env("GIT_COMMITTER_EMAIL", &who.email)
            .arg("-C")
            .arg(&mirror)
            .args([
                "commit-tree",
                "--no-gpg-sign",
                "-F",
                "-",
                "-p",
                &base,
                &tree,
            ]);
        let mut message = req.message.to_string();
        if !message.ends_with('\n') {
            message.push('\n');
        }
        let said = run_with(cmd, message.as_bytes(), "write the commit")?;
        if !said.ok {
            return Err(EngineError::Git {
                what: format!("write the commit on {repo}"),
                message: complaint(&said.stderr),
            });
        }
        Ok(Committed {
            commit: said.stdout.trim().to_string(),
            tree,
        })
    }

    /// Pushes `push.commit` to `refs/heads/<push.branch>` of `push.url`, not forced: a
    /// branch that exists with other commits is refused by the remote
    /// ([`EngineError::PushRejected`]). The token reaches git only in this command's
    /// environment (`GIT_CONFIG_*`: an `http.<origin>/.extraHeader`), and is taken out of
    /// everything git says before it goes into an error.
    pub fn push(&self, repo: &str, push: &Push) -> Result<Pushed> {
        hangar_spec::check_branch(push.branch)
            .map_err(|_| EngineError::BadBranch(push.branch.to_string()))?;
        let shown = without_credentials(push.url);
        let bad_url = |reason: &str| EngineError::BadPushUrl {
            url: shown.clone(),
            reason: reason.to_string(),
        };
        if push.url.is_empty() || push.url.starts_with('-') {
            return Err(bad_url("it is empty or starts with `-`"));
        }
        if push.url.contains("::") {
            return Err(bad_url("`TRANSPORT::` URLs are refused"));
        }
        let commit = full_id(repo, push.commit)?;
        let mirror = self.path(repo);
        let mut cmd = self.git();
        cmd.arg("-C")
            .arg(&mirror)
            .args(["cat-file", "-e"])
            .arg(format!("{commit}^{{commit}}"));
        run(cmd, "read the commit").map_err(|_| EngineError::NoSuchCommit {
            repo: repo.to_string(),
            commit: commit.clone(),
            reason: "the mirror has no such commit".to_string(),
        })?;

        let cmd = push_command(self, &mirror, push, &commit)?;
        let said = run_with(cmd, b"", "push")?;
        let scrub = Scrub::new(push.token, push.url);
        let refname = format!("refs/heads/{}", push.branch);
        let rejected = |reason: String| EngineError::PushRejected {
            branch: push.branch.to_string(),
            url: shown.clone(),
            reason,
        };
        match porcelain_status(&said.stdout, &refname) {
            Some(('*', _)) if said.ok => Ok(Pushed::Created),
            Some(('=', _)) if said.ok => Ok(Pushed::AlreadyThere),
            Some((' ', _)) if said.ok => Ok(Pushed::Updated),
            Some(('!', summary)) => Err(rejected(scrub.clean(&refusal(summary, &said.stderr)))),
            _ => Err(EngineError::PushFailed {
                branch: push.branch.to_string(),
                url: shown.clone(),
                reason: scrub.clean(&complaint(&said.stderr)),
            }),
        }
    }
}

/// The `git push` of one commit to one branch, with the token in its environment.
fn push_command(
    mirrors: &Mirrors,
    mirror: &std::path::Path,
    push: &Push,
    commit: &str,
) -> Result<Command> {
    let mut cmd = mirrors.git();
    for setting in push.reach.git_config() {
        cmd.arg("-c").arg(setting);
    }
    if let Some(token) = push.token {
        let origin = http_origin(push.url).ok_or_else(|| EngineError::BadPushUrl {
            url: without_credentials(push.url),
            reason: "a token is sent only over http or https".to_string(),
        })?;
        // A redirect would take the header to a host nobody checked.
        cmd.args(["-c", "http.followRedirects=false"])
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", format!("http.{origin}/.extraHeader"))
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: {}", basic_auth(token)),
            );
    }
    cmd.arg("-C")
        .arg(mirror)
        .args([
            "push",
            "--porcelain",
            "--no-verify",
            "--no-recurse-submodules",
            "--",
            push.url,
        ])
        .arg(format!("{commit}:refs/heads/{}", push.branch));
    Ok(cmd)
}

/// `read-tree` the base into the index at `index`, `apply --cached` the patch, and
/// `write-tree`: the new tree's id. git refuses paths in `.git`, outside the tree and
/// beyond a symbolic link.
fn apply_in_index(
    mirrors: &Mirrors,
    mirror: &std::path::Path,
    index: &std::path::Path,
    base: &str,
    patch: &[u8],
) -> Result<String> {
    let git = || {
        let mut cmd = mirrors.git();
        cmd.env("GIT_INDEX_FILE", index).arg("-C").arg(mirror);
        cmd
    };
    let mut cmd = git();
    cmd.args(["read-tree", base]);
    run(cmd, &format!("read commit {base} into an index"))?;
    let mut cmd = git();
    cmd.args(["apply", "--cached", "--whitespace=nowarn", "-"]);
    let said = run_with(cmd, patch, "apply the diff")?;
    if !said.ok {
        return Err(EngineError::PatchDoesNotApply {
            base: base.to_string(),
            reason: complaint(&said.stderr),
        });
    }
    let mut cmd = git();
    cmd.arg("write-tree");
    let tree = run(cmd, "write the tree")?;
    Ok(String::from_utf8_lossy(&tree).trim().to_string())
}
