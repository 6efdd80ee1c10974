//! The leak scan: which secret values a directory tree holds, in file contents and symlink
//! targets, and optionally replacing them with placeholders. The tree is untrusted (what a
//! setup script wrote): nothing is followed, only regular files are opened (`O_NOFOLLOW`,
//! non-blocking, so a fifo cannot stall the scan), and it must not be in use while scanned.

use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{io_err, Redactor, Result};

/// A secret value found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub secret: String,
    /// The path inside the tree, from its root (`/root/.npmrc`).
    pub path: PathBuf,
}

/// What the scan does with what it finds.
#[derive(Debug, Clone, Copy)]
pub enum ScanMode<'a> {
    /// Report only.
    Report,
    /// Replace each value with the matching placeholder (in the order the redactor's
    /// secrets were given), keeping the file's inode, owner and mode.
    Scrub(&'a [String]),
}

const CHUNK: usize = 1 << 20;

/// Scans `root` for the secrets of `redactor`; returns every (secret, file) found, sorted.
pub fn scan(root: &Path, redactor: &Redactor, mode: ScanMode<'_>) -> Result<Vec<Leak>> {
    let mut leaks = Vec::new();
    if redactor.is_empty() {
        return Ok(leaks);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let entry = entry.map_err(io_err("read", &dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io_err("inspect", &path))?;
            let inside = Path::new("/").join(path.strip_prefix(root).unwrap_or(&path));
            let found: Vec<String> = if kind.is_dir() {
                stack.push(path);
                continue;
            } else if kind.is_symlink() {
                scan_link(&path, redactor, mode)?
            } else if kind.is_file() {
                scan_file(&path, redactor, mode)?
            } else {
                continue;
            };
            leaks.extend(found.into_iter().map(|secret| Leak {
                secret,
                path: inside.clone(),
            }));
        }
    }
    leaks.sort_by(|a, b| (&a.path, &a.secret).cmp(&(&b.path, &b.secret)));
    Ok(leaks)
}

fn scan_link(path: &Path, redactor: &Redactor, mode: ScanMode<'_>) -> Result<Vec<String>> {
    use std::os::unix::ffi::OsStrExt;
    let target = fs::read_link(path).map_err(io_err("read the link", path))?;
    let bytes = target.as_os_str().as_bytes();
    let found: Vec<String> = redactor
        .found(bytes)
        .into_iter()
        .map(String::from)
        .collect();
    if let (false, ScanMode::Scrub(with)) = (found.is_empty(), mode) {
        let scrubbed = redactor.replace_bytes(bytes, with);
        fs::remove_file(path).map_err(io_err("replace", path))?;
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&scrubbed), path)
            .map_err(io_err("replace", path))?;
    }
    Ok(found)
}

fn scan_file(path: &Path, redactor: &Redactor, mode: ScanMode<'_>) -> Result<Vec<String>> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(matches!(mode, ScanMode::Scrub(_)))
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err("open", path))?;
    // Windows overlap by one byte less than the longest value, so that a value across a
    // chunk boundary is still whole in one of them.
    let overlap = redactor.longest().saturating_sub(1);
    let mut found: Vec<String> = Vec::new();
    let mut window: Vec<u8> = Vec::with_capacity(CHUNK + overlap);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        window.extend_from_slice(&buf[..n]);
        for name in redactor.found(&window) {
            if !found.iter().any(|f| f == name) {
                found.push(name.to_string());
            }
        }
        let keep = window.len().min(overlap);
        window.drain(..window.len() - keep);
    }
    if let (false, ScanMode::Scrub(with)) = (found.is_empty(), mode) {
        let mut all = Vec::new();
        file.rewind().map_err(io_err("read", path))?;
        file.read_to_end(&mut all).map_err(io_err("read", path))?;
        let scrubbed = redactor.replace_bytes(&all, with).into_owned();
        file.rewind().map_err(io_err("scrub", path))?;
        file.set_len(0).map_err(io_err("scrub", path))?;
        file.write_all(&scrubbed).map_err(io_err("scrub", path))?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NamedSecret, Secret};

    fn secrets() -> Vec<NamedSecret> {
        vec![
            NamedSecret {
                name: "NPM_TOKEN".into(),
                value: Secret::new(b"npm_abcdef123456".to_vec()).unwrap(),
            },
            NamedSecret {
                name: "PG".into(),
                value: Secret::new(b"pg-pass-9".to_vec()).unwrap(),
            },
        ]
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("root")).unwrap();
        fs::write(
            root.join("root/.npmrc"),
            "//registry/:_authToken=npm_abcdef123456\n",
        )
        .unwrap();
        fs::write(root.join("clean"), "nothing here\n").unwrap();
        // A value across the boundary of two read chunks.
        let mut big = vec![b'x'; CHUNK - 4];
        big.extend_from_slice(b"pg-pass-9 tail");
        fs::write(root.join("big"), big).unwrap();
        std::os::unix::fs::symlink("/tmp/npm_abcdef123456", root.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", root.join("innocent-link")).unwrap();
        nix_mkfifo(&root.join("fifo"));
        dir
    }

    fn nix_mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    fn leaks(v: &[(&str, &str)]) -> Vec<Leak> {
        v.iter()
            .map(|(s, p)| Leak {
                secret: s.to_string(),
                path: PathBuf::from(p),
            })
            .collect()
    }

    #[test]
    fn finds_values_in_files_and_link_targets_across_chunks() {
        let dir = tree();
        let r = Redactor::new(&secrets());
        let found = scan(dir.path(), &r, ScanMode::Report).unwrap();
        assert_eq!(
            found,
            leaks(&[
                ("PG", "/big"),
                ("NPM_TOKEN", "/link"),
                ("NPM_TOKEN", "/root/.npmrc")
            ])
        );
        assert!(scan(dir.path(), &Redactor::none(), ScanMode::Report)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn scrubbing_replaces_values_in_place() {
        let dir = tree();
        let r = Redactor::new(&secrets());
        let npmrc = dir.path().join("root/.npmrc");
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&npmrc).unwrap());
        let with = ["PH-NPM".to_string(), "PH-PG".to_string()];
        let found = scan(dir.path(), &r, ScanMode::Scrub(&with)).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(
            fs::read_to_string(&npmrc).unwrap(),
            "//registry/:_authToken=PH-NPM\n"
        );
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&npmrc).unwrap()),
            inode
        );
        assert_eq!(
            fs::read_link(dir.path().join("link")).unwrap(),
            Path::new("/tmp/PH-NPM")
        );
        assert!(fs::read(dir.path().join("big"))
            .unwrap()
            .ends_with(b"PH-PG tail"));
        assert!(scan(dir.path(), &r, ScanMode::Report).unwrap().is_empty());
    }
}
