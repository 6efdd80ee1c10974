//! Reading an image's files from its unpacked layers on the host, as overlay would merge
//! them, without a mount and without anything a sandbox wrote: a path is found in the
//! top-most layer that has it, whiteouts and opaque directories (as [`crate::unpack`]
//! writes them) hide the layers below, and symlinks are resolved within the stack, never
//! on the host.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::error::{io_err, ImageError, Result};

/// How many symlinks one lookup follows before it gives up, as Linux does.
const MAX_LINKS: usize = 40;

/// What is wrong with a path of a layer stack.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StackProblem {
    #[error("it is not a regular file")]
    NotAFile,
    #[error("it is not a directory")]
    NotADirectory,
    #[error("more than {MAX_LINKS} symlinks are on its way")]
    TooManyLinks,
}

/// An image's unpacked layer directories, top-most first (overlay's lowerdir order, as
/// [`crate::layers`] gives them).
pub struct LayerStack {
    layers: Vec<PathBuf>,
}

/// Where a lookup ended: one layer's entry (not a directory), or a directory merged from
/// the layers that have it.
enum Found {
    Entry {
        layer: usize,
        rel: PathBuf,
        is_file: bool,
    },
    Dir {
        rel: PathBuf,
        layers: Vec<usize>,
    },
}

/// What the top-most layer holding a name has there.
enum Lookup {
    Hidden,
    Entry { layer: usize, meta: fs::Metadata },
    Dir(Vec<usize>),
}

impl LayerStack {
    pub fn new(layers: Vec<PathBuf>) -> LayerStack {
        LayerStack { layers }
    }

    /// The content of the regular file at `path` (absolute in the image); `None` when the
    /// image has nothing there. Only a regular file is opened, never through a host symlink.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let (layer, rel) = match self.resolve(path)? {
            None => return Ok(None),
            Some(Found::Entry {
                layer,
                rel,
                is_file: true,
            }) => (layer, rel),
            Some(_) => return Err(problem(path, StackProblem::NotAFile)),
        };
        let root = &self.layers[layer];
        let dir = fs::File::open(root).map_err(io_err("open", root))?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
            .mode(Mode::empty())
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        let host = root.join(&rel);
        let fd = openat2(&dir, &rel, how).map_err(|e| io_err("open", &host)(e.into()))?;
        let mut file = fs::File::from(fd);
        // Checked on the open file too: a fifo there must not block the host.
        let meta = file.metadata().map_err(io_err("inspect", &host))?;
        if !meta.is_file() {
            return Err(problem(path, StackProblem::NotAFile));
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut data).map_err(io_err("read", &host))?;
        Ok(Some(data))
    }

    /// The entry names of the directory at `path`, merged over the layers, sorted; `None`
    /// when the image has nothing there.
    pub fn list(&self, path: &str) -> Result<Option<Vec<String>>> {
        let (rel, layers) = match self.resolve(path)? {
            None => return Ok(None),
            Some(Found::Entry { .. }) => return Err(problem(path, StackProblem::NotADirectory)),
            Some(Found::Dir { rel, layers }) => (rel, layers),
        };
        let mut seen: Vec<(OsString, bool)> = Vec::new();
        for i in layers {
            let dir = self.layers[i].join(&rel);
            for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
                let entry = entry.map_err(io_err("list", &dir))?;
                let name = entry.file_name();
                if seen.iter().any(|(n, _)| *n == name) {
                    continue;
                }
                let meta = entry.metadata().map_err(io_err("inspect", entry.path()))?;
                seen.push((name, is_whiteout(&meta)));
            }
        }
        let mut names: Vec<String> = seen
            .into_iter()
            .filter(|(_, hidden)| !hidden)
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(Some(names))
    }

    /// Walks `path` one name at a time through the merged directories, following symlinks
    /// within the stack: an absolute target from its root, a relative one from the link's
    /// directory, and `..` never above the root.
    fn resolve(&self, path: &str) -> Result<Option<Found>> {
        let mut pending: Vec<OsString> = Vec::new();
        push_front(&mut pending, Path::new(path));
        // The directories walked so far, each with the layers that merge into it.
        let mut at: Vec<OsString> = Vec::new();
        let mut dirs: Vec<Vec<usize>> = vec![self.root_layers()?];
        let mut links = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                if at.pop().is_some() {
                    dirs.pop();
                }
                continue;
            }
            let rel: PathBuf = at.iter().chain([&name]).collect();
            let below = dirs.last().expect("the root is always there");
            match self.lookup(below, &rel)? {
                Lookup::Hidden => return Ok(None),
                Lookup::Dir(layers) => {
                    at.push(name);
                    dirs.push(layers);
                }
                Lookup::Entry { layer, meta } if meta.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(problem(path, StackProblem::TooManyLinks));
                    }
                    let link = self.layers[layer].join(&rel);
                    let target = fs::read_link(&link).map_err(io_err("read the symlink", &link))?;
                    if target.is_absolute() {
                        at.clear();
                        dirs.truncate(1);
                    }
                    push_front(&mut pending, &target);
                }
                Lookup::Entry { layer, meta } if pending.is_empty() => {
                    return Ok(Some(Found::Entry {
                        layer,
                        rel,
                        is_file: meta.is_file(),
                    }));
                }
                Lookup::Entry { .. } => return Err(problem(path, StackProblem::NotADirectory)),
            }
        }
        Ok(Some(Found::Dir {
            rel: at.iter().collect(),
            layers: dirs.pop().expect("the root is always there"),
        }))
    }

    /// The layers whose root merges into the stack's root: down to the first opaque one.
    fn root_layers(&self) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        for (i, root) in self.layers.iter().enumerate() {
            out.push(i);
            if is_opaque(root)? {
                break;
            }
        }
        Ok(out)
    }

    /// `rel` in the merged directory made of the layers `below`: the top-most layer with
    /// an entry there decides. A whiteout hides the name; a directory merges with the
    /// same directory of the layers under it, down to an opaque one or to a layer where
    /// the name is not a directory.
    fn lookup(&self, below: &[usize], rel: &Path) -> Result<Lookup> {
        let mut dirs = Vec::new();
        for &i in below {
            let host = self.layers[i].join(rel);
            let meta = match fs::symlink_metadata(&host) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("inspect", &host)(e)),
            };
            if !meta.is_dir() {
                if dirs.is_empty() {
                    return Ok(if is_whiteout(&meta) {
                        Lookup::Hidden
                    } else {
                        Lookup::Entry { layer: i, meta }
                    });
                }
                break;
            }
            dirs.push(i);
            if is_opaque(&host)? {
                break;
            }
        }
        Ok(if dirs.is_empty() {
            Lookup::Hidden
        } else {
            Lookup::Dir(dirs)
        })
    }
}

fn problem(path: &str, problem: StackProblem) -> ImageError {
    ImageError::Stack {
        path: path.to_string(),
        problem,
    }
}

/// Puts `path`'s names before those still pending (which are kept last-first).
fn push_front(pending: &mut Vec<OsString>, path: &Path) {
    let names = path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    });
    let names: Vec<OsString> = names.collect();
    pending.extend(names.into_iter().rev());
}

/// Overlay's whiteout: a character device 0/0.
fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether a directory hides the same directory of the layers below it.
fn is_opaque(dir: &Path) -> Result<bool> {
    match xattr::get(dir, "trusted.overlay.opaque") {
        Ok(v) => Ok(v.as_deref().map(OsStr::from_bytes) == Some(OsStr::new("y"))),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(false),
        Err(e) => Err(io_err("read the extended attributes of", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::{mknod, SFlag};

    /// One entry of a test layer.
    enum N<'a> {
        File(&'a str),
        Dir,
        Opaque,
        Whiteout,
        Link(&'a str),
        Fifo,
    }

    /// Layers made on disk as the unpacker makes them, top-most first.
    fn stack(layers: &[&[(&str, N<'_>)]]) -> (tempfile::TempDir, LayerStack) {
        let tmp = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for (i, entries) in layers.iter().enumerate() {
            let root = tmp.path().join(format!("layer{i}"));
            fs::create_dir(&root).unwrap();
            for (path, node) in entries.iter() {
                let p = root.join(path);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                match node {
                    N::File(text) => fs::write(&p, text).unwrap(),
                    N::Dir => fs::create_dir_all(&p).unwrap(),
                    N::Opaque => {
                        fs::create_dir_all(&p).unwrap();
                        xattr::set(&p, "trusted.overlay.opaque", b"y").unwrap();
                    }
                    N::Whiteout => mknod(&p, SFlag::S_IFCHR, Mode::empty(), 0).unwrap(),
                    N::Link(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
                    N::Fifo => {
                        mknod(&p, SFlag::S_IFIFO, Mode::from_bits_truncate(0o644), 0).unwrap()
                    }
                }
            }
            dirs.push(root);
        }
        (tmp, LayerStack::new(dirs))
    }

    /// `path` read from the stack: its text, `missing`, or the error's problem.
    fn check(stack: &LayerStack, path: &str, expected: &str) {
        let got = match stack.read(path) {
            Ok(Some(data)) => String::from_utf8(data).unwrap(),
            Ok(None) => "missing".to_string(),
            Err(ImageError::Stack { problem, .. }) => format!("error: {problem}"),
            Err(e) => format!("other error: {e}"),
        };
        assert_eq!(got, expected, "{path}");
    }

    fn check_list(stack: &LayerStack, path: &str, expected: Option<&[&str]>) {
        let got = stack.list(path).unwrap();
        let expected = expected.map(|names| names.iter().map(|n| n.to_string()).collect());
        assert_eq!(got, expected, "{path}");
    }

    #[test]
    fn the_top_most_layer_wins_and_whiteouts_hide_what_is_below() {
        let (_tmp, s) = stack(&[
            &[
                ("etc/npmrc", N::File("top")),
                ("etc/pip.conf", N::Whiteout),
                ("usr/lib/gone", N::Whiteout),
            ],
            &[
                ("etc/npmrc", N::File("bottom")),
                ("etc/pip.conf", N::File("hidden")),
                ("etc/apt/sources.list", N::File("deb")),
                ("usr/lib/gone/x", N::File("hidden")),
            ],
        ]);
        check(&s, "/etc/npmrc", "top");
        check(&s, "etc/npmrc", "top");
        check(&s, "/etc/./apt/../npmrc", "top");
        check(&s, "/etc/apt/sources.list", "deb");
        check(&s, "/etc/pip.conf", "missing");
        check(&s, "/usr/lib/gone/x", "missing");
        check(&s, "/etc/nothing", "missing");
        check(&s, "/etc/npmrc/x", "error: it is not a directory");
        check(&s, "/etc", "error: it is not a regular file");
        check_list(&s, "/etc", Some(&["apt", "npmrc"]));
        check_list(&s, "/usr/lib", Some(&[]));
        check_list(&s, "/usr/lib/gone", None);
    }

    #[test]
    fn an_opaque_directory_hides_the_same_directory_below() {
        let (_tmp, s) = stack(&[
            &[("etc/apt/sources.list.d", N::Opaque)],
            &[("etc/apt/sources.list.d/new.list", N::File("mid"))],
            &[
                ("etc/apt/sources.list.d/old.list", N::File("old")),
                ("etc/apt/sources.list", N::File("kept")),
            ],
        ]);
        check(&s, "/etc/apt/sources.list.d/old.list", "missing");
        check(&s, "/etc/apt/sources.list.d/new.list", "missing");
        check(&s, "/etc/apt/sources.list", "kept");
        check_list(&s, "/etc/apt/sources.list.d", Some(&[]));
        // A file above a directory hides it too; a directory above a file is not merged
        // with what is under that file.
        let (_tmp, s) = stack(&[
            &[
                ("opt/tool", N::File("a file")),
                ("srv/data/new", N::File("n")),
            ],
            &[
                ("opt/tool/bin", N::File("hidden")),
                ("srv/data", N::File("f")),
            ],
            &[("srv/data/old", N::File("hidden"))],
        ]);
        check(&s, "/opt/tool", "a file");
        check(&s, "/opt/tool/bin", "error: it is not a directory");
        check(&s, "/srv/data/old", "missing");
        check_list(&s, "/srv/data", Some(&["new"]));
    }

    #[test]
    fn symlinks_resolve_within_the_stack() {
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("secret"), "the host's").unwrap();
        let outside = host.path().join("secret").display().to_string();
        let climbing = format!("../../../../../../../..{outside}");
        let (_tmp, s) = stack(&[
            &[
                // Across layers: the link is in the top one, its target in the bottom one.
                ("usr/bin/cargo", N::Link("../lib/cargo/bin/cargo")),
                ("etc/npmrc", N::Link("/usr/share/npmrc")),
                ("bin", N::Link("usr/bin")),
                ("etc/host", N::Link(&outside)),
                ("etc/climb", N::Link(&climbing)),
                ("etc/loop", N::Link("loop")),
                ("etc/dangling", N::Link("/nowhere")),
            ],
            &[
                ("usr/lib/cargo/bin/cargo", N::File("cargo")),
                ("usr/share/npmrc", N::File("npmrc")),
            ],
        ]);
        check(&s, "/usr/bin/cargo", "cargo");
        check(&s, "/bin/cargo", "cargo");
        check(&s, "/etc/npmrc", "npmrc");
        // `..` after a link leaves its target, not the link.
        check(&s, "/bin/../share/npmrc", "npmrc");
        check(&s, "/bin/../usr/share/npmrc", "missing");
        check(&s, "/../../etc/npmrc", "npmrc");
        // Links that point at the host's files name the stack's own, which are not there.
        check(&s, "/etc/host", "missing");
        check(&s, "/etc/climb", "missing");
        check(&s, "/etc/dangling", "missing");
        check(
            &s,
            "/etc/loop",
            "error: more than 40 symlinks are on its way",
        );
        check_list(&s, "/bin", Some(&["cargo"]));
    }

    #[test]
    fn only_regular_files_are_read() {
        let (_tmp, s) = stack(&[&[
            ("etc/fifo", N::Fifo),
            ("etc/dir", N::Dir),
            ("etc/fifo-link", N::Link("fifo")),
        ]]);
        check(&s, "/etc/fifo", "error: it is not a regular file");
        check(&s, "/etc/fifo-link", "error: it is not a regular file");
        check(&s, "/etc/dir", "error: it is not a regular file");
        check_list(&s, "/etc", Some(&["dir", "fifo", "fifo-link"]));
    }
}
