//! The leak scan: which secret values (in any of their forms, see [`crate::forms`]) a
//! directory tree holds, and optionally replacing them with placeholders. It reads every
//! entry's name and extended attributes (every namespace: the scan runs as root), symlink
//! targets, file contents, and what those contents hold compressed: a zlib stream (a
//! loose git object) inflated, a git pack's objects with deltas resolved, wherever in the
//! tree and under whatever name they are, reachable or not. The tree is untrusted (what a
//! setup script wrote): nothing is followed, only regular files are opened (`O_NOFOLLOW`,
//! non-blocking, so a fifo cannot stall the scan), and it must not be in use while scanned.
//! Paths and attribute names in what it reports are redacted, since a name can be the leak.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::git::{self, PackedId};
use crate::{io_err, Redactor, Result, SecretError};

/// A secret value found in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub secret: String,
    /// The path inside the tree, from its root (`/root/.npmrc`), redacted.
    pub path: PathBuf,
    pub place: Place,
}

/// Where at a path a value was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    Contents,
    LinkTarget,
    /// The entry's own name.
    Name,
    /// An extended attribute's name or value; the attribute's name, redacted.
    Xattr(String),
    /// The file's contents inflated (it is a zlib stream, as a loose git object is).
    Inflated,
    /// An object of the git pack the file is.
    Packed(PackedId),
}

impl Place {
    /// Whether [`ScanMode::Scrub`] replaces the value here. Compressed and packed objects
    /// are not rewritten: a git object's name is its contents' hash, so a scrubbed object
    /// is another object and the repository is broken either way.
    pub fn scrubbable(&self) -> bool {
        matches!(
            self,
            Place::Contents | Place::LinkTarget | Place::Name | Place::Xattr(_)
        )
    }
}

impl Leak {
    /// Where the value is, for a message: `/root/.npmrc`, `the name of /tmp/x`.
    pub fn location(&self) -> String {
        let path = self.path.display();
        match &self.place {
            Place::Contents => path.to_string(),
            Place::LinkTarget => format!("the target of link {path}"),
            Place::Name => format!("the name of {path}"),
            Place::Xattr(name) => format!("extended attribute `{name}` of {path}"),
            Place::Inflated => format!("the inflated contents of {path}"),
            Place::Packed(id) => format!("{id} in git pack {path}"),
        }
    }
}

/// What the scan does with what it finds.
#[derive(Debug, Clone, Copy)]
pub enum ScanMode<'a> {
    /// Report only.
    Report,
    /// Replace each value with the matching placeholder (in the order the redactor's
    /// secrets were given) where [`Place::scrubbable`]: in contents (keeping the file's
    /// inode, owner and mode), link targets, names (the entry is renamed; an existing
    /// entry of the new name fails the scan) and extended attributes (the value is
    /// rewritten; an attribute whose name holds the value is set under the new name and
    /// the old one removed). Every form of a value is replaced by the placeholder itself.
    Scrub(&'a [String]),
}

const CHUNK: usize = 1 << 20;

/// Scans `root` for the secrets of `redactor`; returns every (secret, path, place) found,
/// sorted.
pub fn scan(root: &Path, redactor: &Redactor, mode: ScanMode<'_>) -> Result<Vec<Leak>> {
    let mut s = Scanner {
        root,
        redactor,
        mode,
        leaks: Vec::new(),
    };
    if redactor.is_empty() {
        return Ok(s.leaks);
    }
    // The root's own name is hangar's, its attributes are setup's.
    s.scan_xattrs(root, Path::new("/"))?;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let shown = s.shown(&dir);
        for entry in fs::read_dir(&dir).map_err(io_err("read", &shown))? {
            let entry = entry.map_err(io_err("read", &shown))?;
            let mut path = entry.path();
            let kind = entry
                .file_type()
                .map_err(io_err("inspect", s.shown(&path)))?;
            let inside = s.inside(&path);
            let name = entry.file_name();
            let found = s.found(name.as_bytes());
            if !found.is_empty() {
                s.record(found, &inside, Place::Name);
                if let ScanMode::Scrub(with) = mode {
                    path = s.rename(&path, &name, with)?;
                }
            }
            s.scan_xattrs(&path, &inside)?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_symlink() {
                s.scan_link(&path, &inside)?;
            } else if kind.is_file() {
                s.scan_file(&path, &inside)?;
            }
        }
    }
    let mut leaks = s.leaks;
    leaks.sort_by(|a, b| (&a.path, &a.place, &a.secret).cmp(&(&b.path, &b.place, &b.secret)));
    leaks.dedup();
    Ok(leaks)
}

struct Scanner<'a> {
    root: &'a Path,
    redactor: &'a Redactor,
    mode: ScanMode<'a>,
    leaks: Vec<Leak>,
}

impl Scanner<'_> {
    fn found(&self, bytes: &[u8]) -> Vec<String> {
        self.redactor
            .found(bytes)
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn redacted(&self, path: &Path) -> PathBuf {
        let bytes = self.redactor.redact_bytes(path.as_os_str().as_bytes());
        PathBuf::from(OsStr::from_bytes(&bytes))
    }

    /// `path` as errors show it: redacted.
    fn shown(&self, path: &Path) -> PathBuf {
        self.redacted(path)
    }

    /// `path` inside the tree, from its root, redacted.
    fn inside(&self, path: &Path) -> PathBuf {
        self.redacted(&Path::new("/").join(path.strip_prefix(self.root).unwrap_or(path)))
    }

    fn record(&mut self, found: Vec<String>, inside: &Path, place: Place) {
        self.leaks.extend(found.into_iter().map(|secret| Leak {
            secret,
            path: inside.to_path_buf(),
            place: place.clone(),
        }));
    }

    fn scrub<'b>(&self, bytes: &'b [u8], with: &[String]) -> std::borrow::Cow<'b, [u8]> {
        self.redactor.replace_bytes(bytes, with)
    }

    /// Renames `path` (named `name`) to its name scrubbed; returns the new path.
    fn rename(&self, path: &Path, name: &OsStr, with: &[String]) -> Result<PathBuf> {
        let new = path.with_file_name(OsStr::from_bytes(&self.scrub(name.as_bytes(), with)));
        let shown = self.shown(&new);
        if fs::symlink_metadata(&new).is_ok() {
            return Err(SecretError::ScrubExists { path: shown });
        }
        fs::rename(path, &new).map_err(io_err("rename to", shown))?;
        Ok(new)
    }

    fn scan_xattrs(&mut self, path: &Path, inside: &Path) -> Result<()> {
        let names = match xattr::list(path) {
            Ok(names) => names,
            // A filesystem without extended attributes has none to leak.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
            Err(e) => {
                return Err(SecretError::Io {
                    action: "list the extended attributes of",
                    path: self.shown(path),
                    source: e,
                })
            }
        };
        for name in names {
            let Some(value) = xattr::get(path, &name)
                .map_err(io_err("read the extended attributes of", self.shown(path)))?
            else {
                continue;
            };
            let mut found = self.found(name.as_bytes());
            for f in self.found(&value) {
                if !found.contains(&f) {
                    found.push(f);
                }
            }
            if found.is_empty() {
                continue;
            }
            let shown_name =
                String::from_utf8_lossy(&self.redactor.redact_bytes(name.as_bytes())).into_owned();
            self.record(found, inside, Place::Xattr(shown_name));
            if let ScanMode::Scrub(with) = self.mode {
                let new_name = OsString::from_vec(self.scrub(name.as_bytes(), with).into_owned());
                let action = "scrub the extended attributes of";
                xattr::set(path, &new_name, &self.scrub(&value, with))
                    .map_err(io_err(action, self.shown(path)))?;
                if new_name != name {
                    xattr::remove(path, &name).map_err(io_err(action, self.shown(path)))?;
                }
            }
        }
        Ok(())
    }

    fn scan_link(&mut self, path: &Path, inside: &Path) -> Result<()> {
        let target = fs::read_link(path).map_err(io_err("read the link", self.shown(path)))?;
        let bytes = target.as_os_str().as_bytes();
        let found = self.found(bytes);
        if found.is_empty() {
            return Ok(());
        }
        self.record(found, inside, Place::LinkTarget);
        if let ScanMode::Scrub(with) = self.mode {
            let scrubbed = self.scrub(bytes, with);
            let shown = self.shown(path);
            fs::remove_file(path).map_err(io_err("replace", &shown))?;
            std::os::unix::fs::symlink(OsStr::from_bytes(&scrubbed), path)
                .map_err(io_err("replace", shown))?;
        }
        Ok(())
    }

    fn scan_file(&mut self, path: &Path, inside: &Path) -> Result<()> {
        let shown = self.shown(path);
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(matches!(self.mode, ScanMode::Scrub(_)))
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(io_err("open", &shown))?;
        let mut head = [0u8; 12];
        let n = read_full(&mut file, &mut head).map_err(io_err("read", &shown))?;
        let head = &head[..n];
        file.rewind().map_err(io_err("read", &shown))?;
        if git::is_pack(head) {
            let mut packed: Vec<(PackedId, Vec<String>)> = Vec::new();
            git::pack_objects(&mut file, |id, data| {
                let found = self.found(data);
                if !found.is_empty() {
                    packed.push((id.clone(), found));
                }
            })
            .map_err(|source| SecretError::Pack {
                path: shown.clone(),
                source,
            })?;
            for (id, found) in packed {
                self.record(found, inside, Place::Packed(id));
            }
            file.rewind().map_err(io_err("read", &shown))?;
        } else if git::is_zlib(head) {
            // A stream that stops inflating is not one (or is cut short): what came out
            // before is all a reader gets from it too.
            let found = self.stream(flate2::read::ZlibDecoder::new(&mut file), &shown, true)?;
            self.record(found, inside, Place::Inflated);
            file.rewind().map_err(io_err("read", &shown))?;
        }
        let found = self.stream(&mut file, &shown, false)?;
        if found.is_empty() {
            return Ok(());
        }
        self.record(found, inside, Place::Contents);
        if let ScanMode::Scrub(with) = self.mode {
            let mut all = Vec::new();
            file.rewind().map_err(io_err("read", &shown))?;
            file.read_to_end(&mut all).map_err(io_err("read", &shown))?;
            let scrubbed = self.scrub(&all, with).into_owned();
            file.rewind().map_err(io_err("scrub", &shown))?;
            file.set_len(0).map_err(io_err("scrub", &shown))?;
            file.write_all(&scrubbed).map_err(io_err("scrub", &shown))?;
        }
        Ok(())
    }

    /// The secrets whose forms `r` holds, read in chunks; `lenient`: a read error ends
    /// the stream instead of failing the scan.
    fn stream(&self, mut r: impl Read, shown: &Path, lenient: bool) -> Result<Vec<String>> {
        // Windows overlap by one byte less than the longest form, so that a value across
        // a chunk boundary is still whole in one of them.
        let overlap = self.redactor.longest().saturating_sub(1);
        let mut found: Vec<String> = Vec::new();
        let mut window: Vec<u8> = Vec::with_capacity(CHUNK + overlap);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) if lenient => break,
                Err(e) => return Err(io_err("read", shown)(e)),
            };
            window.extend_from_slice(&buf[..n]);
            for name in self.redactor.found(&window) {
                if !found.iter().any(|f| f == name) {
                    found.push(name.to_string());
                }
            }
            let keep = window.len().min(overlap);
            window.drain(..window.len() - keep);
        }
        Ok(found)
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NamedSecret, Secret};
    use std::process::Command;

    const NPM: &str = "npm_abcdef123456";

    fn secrets() -> Vec<NamedSecret> {
        vec![
            NamedSecret {
                name: "NPM_TOKEN".into(),
                value: Secret::new(NPM.as_bytes().to_vec()).unwrap(),
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
            format!("//registry/:_authToken={NPM}\n"),
        )
        .unwrap();
        fs::write(root.join("clean"), "nothing here\n").unwrap();
        // A value across the boundary of two read chunks.
        let mut big = vec![b'x'; CHUNK - 4];
        big.extend_from_slice(b"pg-pass-9 tail");
        fs::write(root.join("big"), big).unwrap();
        std::os::unix::fs::symlink(format!("/tmp/{NPM}"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", root.join("innocent-link")).unwrap();
        nix_mkfifo(&root.join("fifo"));
        dir
    }

    /// [`tree`] plus the places a hostile setup hides a value in.
    fn hostile_tree() -> tempfile::TempDir {
        let dir = tree();
        let root = dir.path();
        fs::create_dir_all(root.join(format!("d-{NPM}/inner"))).unwrap();
        fs::write(root.join(format!("d-{NPM}/inner/f")), "clean").unwrap();
        nix_mkfifo(&root.join(format!("fifo-{NPM}")));
        fs::write(root.join("attrs"), "clean").unwrap();
        xattr::set(
            root.join("attrs"),
            "user.note",
            format!("v={NPM}").as_bytes(),
        )
        .unwrap();
        xattr::set(root.join("attrs"), "trusted.ok", b"clean").unwrap();
        xattr::set(root.join("attrs"), format!("trusted.{NPM}"), b"x").unwrap();
        fs::write(root.join("b64"), "YXV0aDpucG1fYWJjZGVmMTIzNDU2\n").unwrap();
        fs::write(root.join("rev"), NPM.chars().rev().collect::<String>()).unwrap();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(format!("blob 20\0tok={NPM}\n").as_bytes())
            .unwrap();
        fs::write(root.join("loose"), z.finish().unwrap()).unwrap();
        dir
    }

    fn nix_mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    fn check(root: &Path, mode: ScanMode<'_>, expected: &[(&str, &str)]) {
        let got: Vec<(String, String)> = scan(root, &Redactor::new(&secrets()), mode)
            .unwrap()
            .into_iter()
            .map(|l| (l.secret.clone(), l.location()))
            .collect();
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(s, l)| (s.to_string(), l.to_string()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn finds_values_in_files_and_link_targets_across_chunks() {
        let dir = tree();
        check(
            dir.path(),
            ScanMode::Report,
            &[
                ("PG", "/big"),
                ("NPM_TOKEN", "the target of link /link"),
                ("NPM_TOKEN", "/root/.npmrc"),
            ],
        );
        assert!(scan(dir.path(), &Redactor::none(), ScanMode::Report)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_value_in_a_name_an_attribute_an_encoding_or_a_zlib_stream_is_found() {
        let dir = hostile_tree();
        check(
            dir.path(),
            ScanMode::Report,
            &[
                (
                    "NPM_TOKEN",
                    "extended attribute `trusted.[secret:NPM_TOKEN]` of /attrs",
                ),
                ("NPM_TOKEN", "extended attribute `user.note` of /attrs"),
                ("NPM_TOKEN", "/b64"),
                ("PG", "/big"),
                ("NPM_TOKEN", "the name of /d-[secret:NPM_TOKEN]"),
                ("NPM_TOKEN", "the name of /fifo-[secret:NPM_TOKEN]"),
                ("NPM_TOKEN", "the target of link /link"),
                ("NPM_TOKEN", "the inflated contents of /loose"),
                ("NPM_TOKEN", "/rev"),
                ("NPM_TOKEN", "/root/.npmrc"),
            ],
        );
    }

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    #[test]
    fn a_value_in_a_commit_reset_away_is_found_packed_or_loose() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("elsewhere");
        fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "base"]);
        fs::write(repo.join("packed"), format!("{NPM}\n")).unwrap();
        git(&repo, &["add", "packed"]);
        git(&repo, &["commit", "-q", "-m", "packed"]);
        git(&repo, &["repack", "-q", "-a", "-d"]);
        fs::write(repo.join("loose"), "pg-pass-9\n").unwrap();
        git(&repo, &["add", "loose"]);
        git(&repo, &["commit", "-q", "-m", "loose"]);
        git(&repo, &["reset", "-q", "--hard", "HEAD~2"]);
        let leaks = scan(dir.path(), &Redactor::new(&secrets()), ScanMode::Report).unwrap();
        let places: Vec<(&str, bool, bool)> = leaks
            .iter()
            .map(|l| {
                let p = l.path.to_string_lossy();
                (
                    l.secret.as_str(),
                    p.starts_with("/elsewhere/.git/objects/"),
                    match &l.place {
                        Place::Packed(PackedId::Object(_)) => p.ends_with(".pack"),
                        Place::Inflated => true,
                        _ => false,
                    },
                )
            })
            .collect();
        assert_eq!(
            places,
            [("PG", true, true), ("NPM_TOKEN", true, true)],
            "{leaks:?}"
        );
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

    #[test]
    fn scrubbing_renames_entries_and_rewrites_attributes_but_not_compressed_objects() {
        let dir = hostile_tree();
        let root = dir.path();
        let r = Redactor::new(&secrets());
        let with = ["PH-NPM".to_string(), "PH-PG".to_string()];
        scan(root, &r, ScanMode::Scrub(&with)).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("d-PH-NPM/inner/f")).unwrap(),
            "clean"
        );
        assert!(fs::symlink_metadata(root.join("fifo-PH-NPM")).is_ok());
        assert_eq!(
            xattr::get(root.join("attrs"), "user.note")
                .unwrap()
                .unwrap(),
            b"v=PH-NPM"
        );
        assert_eq!(
            xattr::get(root.join("attrs"), "trusted.PH-NPM")
                .unwrap()
                .unwrap(),
            b"x"
        );
        assert_eq!(fs::read_to_string(root.join("rev")).unwrap(), "PH-NPM");
        // The base64 of `auth:VALUE`: its stable middle becomes the placeholder.
        assert_eq!(
            fs::read_to_string(root.join("b64")).unwrap(),
            "YXV0aDpPH-NPM\n"
        );
        let left: Vec<String> = scan(root, &r, ScanMode::Report)
            .unwrap()
            .iter()
            .map(Leak::location)
            .collect();
        assert_eq!(left, ["the inflated contents of /loose"]);
    }

    #[test]
    fn a_scrubbed_name_that_exists_fails_the_scan_naming_it_redacted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("t-{NPM}")), "").unwrap();
        fs::write(dir.path().join("t-PH-NPM"), "").unwrap();
        let with = ["PH-NPM".to_string(), "PH-PG".to_string()];
        let err = scan(
            dir.path(),
            &Redactor::new(&secrets()),
            ScanMode::Scrub(&with),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "failed to scrub a secret from a name: {}/t-PH-NPM exists",
                dir.path().display()
            )
        );
    }
}
