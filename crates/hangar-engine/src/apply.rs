//! Applying a task's diff to the user's own checkout (run by the user's CLI, in their
//! repository): paths are checked first, then `git apply --check`; a clean patch is
//! applied to the work tree, one that does not apply cleanly goes through
//! `git apply --3way` and the conflicting files are named.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::diff::patch_paths;
use crate::error::{EngineError, Result};

/// What applying did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The repository's top-level directory.
    pub repo: PathBuf,
    /// Paths the patch touched.
    pub files: Vec<String>,
    /// Whether a three-way merge was needed (its result is staged in the index).
    pub merged: bool,
}

fn git_in(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<(bool, String, String)> {
    let mut child = Command::new("git")
        .current_dir(dir)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| EngineError::Apply(format!("cannot start git: {e}")))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // git may exit before reading everything (a malformed patch); its own message
        // says why, so a broken pipe here is not the error to report.
        let _ = pipe.write_all(data);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| EngineError::Apply(format!("git did not finish: {e}")))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Applies `patch` to the git repository containing `dir`.
pub fn apply_patch(dir: &Path, patch: &[u8]) -> Result<ApplyReport> {
    let files = patch_paths(patch)?;
    let (ok, top, err) = git_in(dir, &["rev-parse", "--show-toplevel"], None)?;
    if !ok {
        return Err(EngineError::Apply(format!(
            "{} is not in a git repository: {}",
            dir.display(),
            err.trim()
        )));
    }
    let repo = PathBuf::from(top.trim());
    if files.is_empty() {
        return Ok(ApplyReport {
            repo,
            files,
            merged: false,
        });
    }
    let (clean, _, check_err) = git_in(&repo, &["apply", "--check", "-"], Some(patch))?;
    if clean {
        let (ok, _, err) = git_in(&repo, &["apply", "-"], Some(patch))?;
        if !ok {
            return Err(EngineError::Apply(err.trim().to_string()));
        }
        return Ok(ApplyReport {
            repo,
            files,
            merged: false,
        });
    }
    let (ok, _, err) = git_in(&repo, &["apply", "--3way", "-"], Some(patch))?;
    let (_, unmerged, _) = git_in(&repo, &["diff", "--name-only", "--diff-filter=U"], None)?;
    let conflicts: Vec<String> = unmerged.lines().map(str::to_string).collect();
    if !conflicts.is_empty() {
        return Err(EngineError::Conflicts { files: conflicts });
    }
    if !ok {
        let why = if err.trim().is_empty() {
            check_err
        } else {
            err
        };
        if let Some(line) = why.lines().find(|l| l.ends_with(": does not match index")) {
            let file = line
                .trim_start_matches("error: ")
                .trim_end_matches(": does not match index");
            return Err(EngineError::Apply(format!(
                "{file} has uncommitted changes where the diff applies; commit or stash them, then apply again"
            )));
        }
        return Err(EngineError::Apply(why.trim().to_string()));
    }
    Ok(ApplyReport {
        repo,
        files,
        merged: true,
    })
}
