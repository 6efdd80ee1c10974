//! A sandbox's life: create (overlay root, network namespace, bundle, runtime), exec,
//! file access, and a teardown that leaves no mount, namespace, cgroup, process or directory.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio as StdStdio;
use std::sync::Arc;
use std::time::Duration;

use hangar_init::{ExecRequest, WaitStatus, MAX_MESSAGE};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::stat::Mode;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::cgroup::CgroupLayout;
use crate::control::{Control, ExecFailure};
use crate::disk::{DiskExceeded, DiskWatch};
use crate::error::{io_err, sys_err, Result, SandboxError};
use crate::netns::NetNs;
use crate::overlay::{self, OverlayDirs};
use crate::runtime::{runtime, runtime_command, OciRuntime, RuntimeKind};
use crate::spec::{self, BindMount, BundleSpec, Resources};

/// How long a runtime may take to bring PID 1 up, or to exit after PID 1 has.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(30);

/// A sandbox's name: lowercase letters, digits and '-', at most 48 characters, so it fits
/// container ids, netns names and cgroup paths unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SandboxId(String);

impl SandboxId {
    pub fn new(s: impl Into<String>) -> Result<SandboxId> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 48
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(SandboxId(s))
        } else {
            Err(SandboxError::InvalidId(s))
        }
    }

    pub fn random() -> SandboxId {
        SandboxId(format!("sb-{:016x}", rand::random::<u64>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name used for the container, the network namespace and the cgroup leaf.
    pub fn host_name(&self) -> String {
        format!("hangar-{}", self.0)
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Settings of this machine shared by every sandbox.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Parent of every sandbox's directory (upper, work, rootfs, and the bundle's
    /// `config.json`).
    pub run_dir: PathBuf,
    /// Parent of the runtimes' state directories; a tmpfs, so a reboot clears it.
    pub state_dir: PathBuf,
    /// The static hangar-init binary on the host.
    pub init_binary: PathBuf,
    pub cgroups: CgroupLayout,
}

impl HostConfig {
    pub fn new(run_dir: PathBuf, init_binary: PathBuf) -> HostConfig {
        HostConfig {
            run_dir,
            state_dir: PathBuf::from("/run/hangar"),
            init_binary,
            cgroups: CgroupLayout::detect(),
        }
    }
}

/// What to build one sandbox from.
#[derive(Debug)]
pub struct SandboxSpec {
    pub id: SandboxId,
    /// Read-only layer directories, top-most first.
    pub lowers: Vec<PathBuf>,
    /// Another sandbox's writes to start from (it stood on the same lowers), moved in as
    /// this sandbox's upper directory by a rename; `None`: an empty one.
    pub upper: Option<Upper>,
    pub resources: Resources,
    pub runtime: RuntimeKind,
    pub mounts: Vec<BindMount>,
    pub hostname: String,
}

impl SandboxSpec {
    pub fn new(lowers: Vec<PathBuf>) -> SandboxSpec {
        SandboxSpec {
            id: SandboxId::random(),
            lowers,
            upper: None,
            resources: Resources::default(),
            runtime: RuntimeKind::default(),
            mounts: Vec::new(),
            hostname: "hangar".into(),
        }
    }
}

/// Where a process's standard stream goes.
#[derive(Debug, Default)]
pub enum Stdio {
    #[default]
    Null,
    /// A pipe whose host end is returned in [`Process`].
    Piped,
    /// An fd the caller already holds (a file, a pipe end).
    Fd(OwnedFd),
}

/// One command to run in a sandbox. The environment is complete: nothing is inherited.
#[derive(Debug, Default)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl ExecSpec {
    pub fn new<I, S>(argv: I) -> ExecSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: "/".into(),
            ..ExecSpec::default()
        }
    }

    pub fn env<K: Into<String>, V: Into<String>>(mut self, key: K, value: V) -> ExecSpec {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it (the sandbox hit its memory limit).
    pub oom_killed: bool,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The shell's convention: the exit code, or 128 + the signal.
    pub fn code_or_signal(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

/// A running process in a sandbox.
pub struct Process {
    signaller: Signaller,
    pid: u32,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    exit: oneshot::Receiver<WaitStatus>,
    sandbox: SandboxId,
    oom: OomProbe,
}

#[derive(Clone)]
struct OomProbe {
    layout: CgroupLayout,
    cgroup: String,
    before: u64,
}

impl Process {
    /// The process's pid inside the sandbox's PID namespace.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends a signal to the process's group (it leads its own session).
    pub fn signal(&self, signal: i32) {
        self.signaller.send(signal);
    }

    /// A handle that can signal the process from another task.
    pub fn signaller(&self) -> Signaller {
        self.signaller.clone()
    }

    pub async fn wait(&mut self) -> Result<ExitStatus> {
        let status = (&mut self.exit).await.map_err(|_| SandboxError::Control {
            id: self.sandbox.to_string(),
            reason: "the sandbox's init exited while the process was running".into(),
        })?;
        Ok(match status {
            WaitStatus::Code(c) => ExitStatus {
                code: Some(c),
                signal: None,
                oom_killed: false,
            },
            WaitStatus::Signal(s) => ExitStatus {
                code: None,
                signal: Some(s),
                oom_killed: s == libc::SIGKILL
                    && self.oom.layout.oom_kills(&self.oom.cgroup) > self.oom.before,
            },
        })
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("sandbox", &self.sandbox)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Signals one process; see [`Process::signaller`].
#[derive(Clone)]
pub struct Signaller {
    id: u64,
    control: Control,
}

impl Signaller {
    pub fn send(&self, signal: i32) {
        self.control.signal(self.id, signal);
    }
}

/// Collected result of [`Sandbox::output`].
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Paths of one sandbox on the host.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    pub(crate) base: PathBuf,
    rootfs: PathBuf,
    /// The OCI bundle: the sandbox's directory itself, holding `config.json` (its rootfs
    /// is named by an absolute path). No directory of its own: every directory made is
    /// one more to remove at teardown, and removing directories is the slowest step of
    /// a teardown on a busy ext4 (each frees a block under the journal).
    bundle: PathBuf,
    log: PathBuf,
}

impl Dirs {
    pub(crate) fn new(run_dir: &Path, id: &SandboxId) -> Dirs {
        let base = run_dir.join(id.as_str());
        Dirs {
            rootfs: base.join("rootfs"),
            bundle: base.clone(),
            log: base.join("runtime.log"),
            base,
        }
    }
}

/// What has been set up so far, so that a failure at any step undoes exactly that much.
pub(crate) struct Parts {
    pub(crate) id: SandboxId,
    pub(crate) dirs: Dirs,
    pub(crate) mounted: bool,
    pub(crate) netns: Option<NetNs>,
    pub(crate) runtime: Arc<dyn OciRuntime>,
    pub(crate) cgroups: CgroupLayout,
    pub(crate) cgroup: String,
    /// The runtime exited by itself after PID 1 did, so it already deleted the container.
    pub(crate) runtime_done: bool,
    /// `run/<id>.lock`, held (flock) for as long as this process owns the sandbox, so
    /// [`crate::reap`] can tell a live sandbox from one whose owner died.
    pub(crate) lock: Option<fs::File>,
}

impl Parts {
    /// Removes everything of the sandbox, runtime state included; reports what stayed.
    /// With `keep`, the upper directory is renamed there.
    pub(crate) fn teardown(&mut self, keep: Option<&Path>) -> Result<()> {
        let leftovers = self.stop();
        self.remove_dirs(keep, leftovers)
    }

    /// Deletes the container, unmounts the root, removes the network namespace and the
    /// cgroups; what could not be removed.
    fn stop(&mut self) -> Vec<String> {
        let mut leftovers = Vec::new();
        if !self.runtime_done {
            let _ = runtime_command(
                &*self.runtime,
                &self.cgroups,
                &self.runtime.delete_args(&self.id.host_name()),
                None,
            )
            .stdout(StdStdio::null())
            .stderr(StdStdio::null())
            .status();
        }
        if self.mounted {
            match overlay::unmount(&self.dirs.rootfs) {
                Ok(()) => self.mounted = false,
                Err(e) => leftovers.push(e.to_string()),
            }
        }
        if let Some(ns) = self.netns.take() {
            if let Err(e) = ns.remove() {
                leftovers.push(e.to_string());
                self.netns = Some(ns);
            }
        }
        for dir in self.cgroups.existing_dirs(&self.cgroup) {
            if let Err(e) = fs::remove_dir(&dir) {
                leftovers.push(format!("cgroup {} remains: {e}", dir.display()));
            }
        }
        leftovers
    }

    /// Ends the sandbox like [`Parts::teardown`] but leaves its directory, with the upper
    /// directory and whatever the caller leased there, under its lock: see [`Upper`].
    /// On an error nothing is left.
    fn stop_keeping_upper(&mut self) -> Result<()> {
        let mut leftovers = self.stop();
        if self.mounted {
            leftovers.push("the upper directory cannot be kept while mounted".into());
        } else {
            let d = &self.dirs;
            for dir in [&d.rootfs, &d.base.join("work")] {
                if let Err(e) = fs::remove_dir_all(dir) {
                    leftovers.push(format!("{} remains: {e}", dir.display()));
                }
            }
            let config = d.bundle.join(CONFIG_FILE);
            if let Err(e) = fs::remove_file(&config) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    leftovers.push(format!("{} remains: {e}", config.display()));
                }
            }
        }
        if leftovers.is_empty() {
            return Ok(());
        }
        let _ = self.teardown(None);
        Err(SandboxError::Teardown {
            id: self.id.to_string(),
            leftover: leftovers.join("; "),
        })
    }

    fn remove_dirs(&mut self, keep: Option<&Path>, mut leftovers: Vec<String>) -> Result<()> {
        if let Some(dest) = keep {
            if self.mounted {
                leftovers.push("the upper directory cannot be kept while mounted".into());
            } else if let Err(e) = keep_upper(&self.dirs.base.join("upper"), dest) {
                leftovers.push(format!("the upper directory was not kept: {e}"));
            }
        }
        if !self.mounted {
            if let Err(e) = remove_sandbox_dir(&self.dirs.base) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    leftovers.push(format!("{} remains: {e}", self.dirs.base.display()));
                }
            }
        }
        if leftovers.is_empty() {
            if self.lock.take().is_some() {
                let _ = fs::remove_file(lock_path(&self.dirs));
            }
            Ok(())
        } else {
            Err(SandboxError::Teardown {
                id: self.id.to_string(),
                leftover: leftovers.join("; "),
            })
        }
    }
}

/// Everything a stopped sandbox wrote (its upper directory), left in the sandbox's own
/// directory under its lock until another sandbox takes it over ([`SandboxSpec::upper`]),
/// so that what ran there (its processes, its tmpfs mounts, its IPC) is gone while its
/// files go on. Dropping it removes it; after a crash, [`crate::reap`] removes it as it
/// does any dead owner's sandbox.
pub struct Upper {
    parts: Parts,
}

impl Upper {
    /// The directory, in overlay's format; nothing runs over it.
    pub fn path(&self) -> PathBuf {
        self.parts.dirs.base.join("upper")
    }

    /// The stopped sandbox's own directory (where a caller's leases stay until the drop).
    pub fn dir(&self) -> &Path {
        &self.parts.dirs.base
    }
}

impl fmt::Debug for Upper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upper")
            .field("sandbox", &self.parts.id)
            .finish_non_exhaustive()
    }
}

impl Drop for Upper {
    fn drop(&mut self) {
        let _ = self.parts.teardown(None);
    }
}

/// A running sandbox. Call [`Sandbox::destroy`]; dropping it tears down in the background.
pub struct Sandbox {
    parts: Option<Parts>,
    child: Option<tokio::process::Child>,
    control: Control,
    /// `Resources::disk_bytes`'s watchdog; stopped when the sandbox ends.
    disk: Option<DiskWatch>,
}

impl Sandbox {
    /// Builds and starts a sandbox; returns once its init is serving requests.
    pub async fn create(host: &HostConfig, mut spec: SandboxSpec) -> Result<Sandbox> {
        // Taken out first: whatever fails below, the upper is dropped (removed) with it.
        let upper = spec.upper.take();
        if !host.init_binary.is_file() {
            return Err(SandboxError::InitNotFound {
                path: host.init_binary.clone(),
            });
        }
        let runtime = runtime(spec.runtime, &host.state_dir)?;
        let dirs = Dirs::new(&host.run_dir, &spec.id);
        fs::create_dir_all(&host.run_dir).map_err(io_err("create", &host.run_dir))?;
        // The lock comes before the directory, so a reaper never sees an unlocked
        // directory of a live sandbox.
        let lock = claim(&lock_path(&dirs))?.ok_or_else(|| SandboxError::AlreadyExists {
            id: spec.id.to_string(),
        })?;
        match fs::create_dir(&dirs.base) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SandboxError::AlreadyExists {
                    id: spec.id.to_string(),
                })
            }
            Err(e) => return Err(io_err("create", &dirs.base)(e)),
        }
        let mut parts = Parts {
            cgroup: host.cgroups.sandbox_path(&spec.id.host_name()),
            id: spec.id.clone(),
            dirs,
            mounted: false,
            netns: None,
            runtime,
            cgroups: host.cgroups.clone(),
            runtime_done: false,
            lock: Some(lock),
        };
        if let Err(e) = fs::write(parts.dirs.base.join(RUNTIME_FILE), spec.runtime.name()) {
            let _ = parts.teardown(None);
            return Err(io_err("write the runtime name of", &parts.dirs.base)(e));
        }
        match start(host, &spec, upper, &mut parts).await {
            Ok((child, control)) => {
                let disk = spec.resources.disk_bytes.map(|limit| {
                    DiskWatch::start(
                        parts.dirs.base.join("upper"),
                        limit,
                        parts.cgroups.clone(),
                        parts.cgroup.clone(),
                    )
                });
                Ok(Sandbox {
                    parts: Some(parts),
                    child: Some(child),
                    control,
                    disk,
                })
            }
            Err(e) => {
                let _ = parts.teardown(None);
                Err(e)
            }
        }
    }

    pub fn id(&self) -> &SandboxId {
        &self.parts().id
    }

    fn parts(&self) -> &Parts {
        self.parts
            .as_ref()
            .expect("sandbox parts live until destroy")
    }

    /// The host path of the sandbox's merged root filesystem.
    pub fn rootfs(&self) -> &Path {
        &self.parts().dirs.rootfs
    }

    /// The network namespace the sandbox runs in.
    pub fn netns_path(&self) -> &Path {
        self.parts()
            .netns
            .as_ref()
            .expect("netns lives until destroy")
            .path()
    }

    /// The sandbox's cgroup path (relative to each hierarchy's root).
    pub fn cgroup_path(&self) -> &str {
        &self.parts().cgroup
    }

    /// The sandbox's own directory on the host; removed by teardown, so whatever a
    /// caller leaves there (such as a layer lease) lives exactly as long as the sandbox.
    pub fn dir(&self) -> &Path {
        &self.parts().dirs.base
    }

    /// The disk limit's watchdog found the upper dir over it, and has killed every
    /// process since (and goes on killing new ones while it stays over).
    pub fn disk_exceeded(&self) -> Option<DiskExceeded> {
        self.disk.as_ref().and_then(DiskWatch::exceeded)
    }

    /// Starts one process.
    pub async fn exec(&self, spec: ExecSpec) -> Result<Process> {
        let parts = self.parts();
        let program = spec.argv.first().cloned().unwrap_or_default();
        let req = ExecRequest {
            id: 0,
            argv: spec.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}").into_bytes())
                .collect(),
            cwd: spec.cwd.into_bytes(),
            uid: spec.uid,
            gid: spec.gid,
        };
        if req.argv.is_empty() {
            return Err(SandboxError::Spawn {
                id: parts.id.to_string(),
                program,
                stage: hangar_init::SpawnStage::Exec,
                source: std::io::Error::other("empty command"),
            });
        }
        let size = hangar_init::Request::Exec(req.clone()).encode().len();
        if size > MAX_MESSAGE {
            return Err(SandboxError::RequestTooLarge {
                id: parts.id.to_string(),
                program,
                size,
                max: MAX_MESSAGE,
            });
        }
        let (stdin_child, stdin) = writer_end(spec.stdin)?;
        let (stdout_child, stdout) = reader_end(spec.stdout)?;
        let (stderr_child, stderr) = reader_end(spec.stderr)?;
        let oom = OomProbe {
            layout: parts.cgroups.clone(),
            cgroup: parts.cgroup.clone(),
            before: parts.cgroups.oom_kills(&parts.cgroup),
        };
        let started = self
            .control
            .exec(req, [stdin_child, stdout_child, stderr_child])
            .await
            .map_err(|f| match f {
                ExecFailure::Spawn { stage, errno } => SandboxError::Spawn {
                    id: parts.id.to_string(),
                    program: program.clone(),
                    stage,
                    source: std::io::Error::from_raw_os_error(errno),
                },
                ExecFailure::Gone => SandboxError::Control {
                    id: parts.id.to_string(),
                    reason: "its init is not running".into(),
                },
                ExecFailure::Send(e) => SandboxError::Control {
                    id: parts.id.to_string(),
                    reason: e.to_string(),
                },
            })?;
        Ok(Process {
            signaller: Signaller {
                id: started.id,
                control: self.control.clone(),
            },
            pid: started.pid,
            stdin,
            stdout,
            stderr,
            exit: started.exit,
            sandbox: parts.id.clone(),
            oom,
        })
    }

    /// Runs a command to completion and collects its output.
    pub async fn output(&self, mut spec: ExecSpec) -> Result<Output> {
        spec.stdout = Stdio::Piped;
        spec.stderr = Stdio::Piped;
        let mut proc = self.exec(spec).await?;
        let mut out_pipe = proc.stdout.take().expect("piped");
        let mut err_pipe = proc.stderr.take().expect("piped");
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let (a, b) = tokio::join!(
            out_pipe.read_to_end(&mut stdout),
            err_pipe.read_to_end(&mut stderr)
        );
        a.and(b).map_err(|e| SandboxError::Control {
            id: self.id().to_string(),
            reason: format!("reading output: {e}"),
        })?;
        let status = proc.wait().await?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Reads a file of the sandbox's root filesystem. Paths resolve inside the root, as
    /// the sandbox would see them: a symlink to `/etc/shadow` reads the sandbox's own.
    /// Only a regular file is read: a fifo or device planted there cannot block the host.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let fd = self.open_in_root(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())?;
        let mut file = fs::File::from(fd);
        let meta = file
            .metadata()
            .map_err(|source| self.file_err(path, source))?;
        if !meta.is_file() {
            return Err(self.file_err(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|source| self.file_err(path, source))?;
        Ok(data)
    }

    /// The entry names of a directory of the sandbox's root filesystem, resolved inside the
    /// root as [`Sandbox::read_file`] does.
    pub fn list_dir(&self, path: &str) -> Result<Vec<String>> {
        let fd = self.open_in_root(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
        let dir = nix::dir::Dir::from_fd(fd).map_err(|e| self.file_err(path, e.into()))?;
        Ok(dir
            .into_iter()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "." && n != "..")
            .collect())
    }

    /// A TCP listener bound at `addr` inside the sandbox's network namespace, to be
    /// served by the host (the egress proxy).
    pub fn listen(&self, addr: std::net::SocketAddr) -> Result<std::net::TcpListener> {
        crate::netns::listen_in(self.netns_path(), addr)
    }

    /// Mounts a directory of the sandbox (absolute, no symlink on the way) read-only over
    /// itself until [`crate::ReadOnly::undo`] or teardown. Nothing in the sandbox can undo
    /// it: its processes lack the capability to unmount.
    pub fn read_only(&self, path: &str) -> Result<crate::ReadOnly> {
        let parts = self.parts();
        let pid = crate::mounts::init_pid(&parts.cgroups, &parts.cgroup)?;
        crate::ReadOnly::mount(pid, path)
    }

    /// Creates a directory of the sandbox's root filesystem and its missing parents (mode
    /// 0755), each step resolved inside the root as [`Sandbox::read_file`] does: no exec.
    pub fn create_dir_all(&self, path: &str) -> Result<()> {
        let mut parent =
            self.open_in_root(".", OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
        let mut walked = String::new();
        for name in path.split('/').filter(|c| !c.is_empty()) {
            walked.push('/');
            walked.push_str(name);
            match nix::sys::stat::mkdirat(&parent, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => return Err(self.file_err(&walked, e.into())),
            }
            parent =
                self.open_in_root(&walked, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
        }
        Ok(())
    }

    /// Writes (creating or truncating) a file of the sandbox's root filesystem, resolved
    /// inside the root as [`Sandbox::read_file`] does. The parent directory must exist.
    pub fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let fd = self.open_in_root(
            path,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC,
            Mode::from_bits_truncate(mode),
        )?;
        fs::File::from(fd)
            .write_all(data)
            .map_err(|source| self.file_err(path, source))
    }

    fn open_in_root(&self, path: &str, flags: OFlag, mode: Mode) -> Result<OwnedFd> {
        let root = fs::File::open(self.rootfs()).map_err(|source| self.file_err("/", source))?;
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
            .mode(mode)
            .resolve(
                ResolveFlag::RESOLVE_IN_ROOT
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        openat2(&root, path.trim_start_matches('/'), how).map_err(|e| self.file_err(path, e.into()))
    }

    fn file_err(&self, path: &str, source: std::io::Error) -> SandboxError {
        SandboxError::File {
            id: self.id().to_string(),
            path: path.to_string(),
            source,
        }
    }

    /// Stops every process and removes the sandbox: mount, network namespace, cgroup,
    /// runtime state and directories. An error lists whatever remains.
    pub async fn destroy(self) -> Result<()> {
        self.finish(None).await
    }

    /// Like [`Sandbox::destroy`], but renames the upper directory (everything the sandbox
    /// wrote, in overlay's format) to `dest`, which must not exist and must be on the same
    /// filesystem: O(1) in its size. Processes do not survive; files do. The overlay was
    /// mounted `volatile`, so the data may still be only in the page cache: a caller that
    /// needs it to survive a machine crash calls [`make_durable`] on `dest` (it costs
    /// O(dirty data), which is why it is not done here).
    pub async fn destroy_keeping_upper(self, dest: PathBuf) -> Result<()> {
        self.finish(Some(dest)).await
    }

    /// Like [`Sandbox::destroy`], but leaves the upper directory where it is for another
    /// sandbox to take over (see [`Upper`]): O(1) in its size. Processes do not survive,
    /// nor does anything of the sandbox that is not in the upper directory: its tmpfs
    /// mounts (`/dev/shm`, `/dev`, `/run`), System V and POSIX IPC.
    pub async fn stop_keeping_upper(self) -> Result<Upper> {
        let (mut parts, id) = self.end().await;
        tokio::task::spawn_blocking(move || parts.stop_keeping_upper().map(|()| Upper { parts }))
            .await
            .map_err(|e| SandboxError::Teardown {
                id,
                leftover: format!("the teardown task failed: {e}"),
            })?
    }

    async fn finish(self, keep: Option<PathBuf>) -> Result<()> {
        let (mut parts, id) = self.end().await;
        tokio::task::spawn_blocking(move || parts.teardown(keep.as_deref()))
            .await
            .map_err(|e| SandboxError::Teardown {
                id,
                leftover: format!("the teardown task failed: {e}"),
            })?
    }

    /// Shuts init down and waits for the runtime to exit (killing it if it does not).
    async fn end(mut self) -> (Parts, String) {
        // The watchdog must not walk the upper while teardown renames or removes it.
        self.disk.take();
        self.control.shutdown();
        let mut parts = self.parts.take().expect("destroy runs once");
        let id = parts.id.to_string();
        if let Some(mut child) = self.child.take() {
            match tokio::time::timeout(RUNTIME_TIMEOUT, child.wait()).await {
                Ok(Ok(status)) => parts.runtime_done = status.success(),
                _ => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
        }
        (parts, id)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let Some(mut parts) = self.parts.take() else {
            return;
        };
        self.control.shutdown();
        let child = self.child.take();
        std::thread::spawn(move || {
            if let Some(pid) = child.as_ref().and_then(|c| c.id()) {
                let deadline = std::time::Instant::now() + RUNTIME_TIMEOUT;
                while process_alive(pid) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            drop(child);
            let _ = parts.teardown(None);
        });
    }
}

/// The bundle's runtime spec, in [`Dirs::bundle`].
const CONFIG_FILE: &str = "config.json";

/// Where a sandbox records which runtime runs it, for [`crate::reap`].
pub(crate) const RUNTIME_FILE: &str = "runtime";

pub(crate) fn lock_path(dirs: &Dirs) -> PathBuf {
    let mut name = dirs.base.clone().into_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Opens and locks `path` without waiting: `None` when another process holds it.
pub(crate) fn claim(path: &Path) -> Result<Option<fs::File>> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("open", path))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(io_err("lock", path)(e)),
    }
}

/// Removes a sandbox's directory. Its two trees the overlay wrote (the upper and work
/// directories: the runtime's mountpoints, overlay's `work/work` and `incompat/volatile`)
/// are removed on threads of their own beside the rest: on a busy ext4 each removed
/// directory can wait on the journal, and the waits of independent trees overlap.
fn remove_sandbox_dir(base: &Path) -> std::io::Result<()> {
    let tree = |name: &str| {
        let dir = base.join(name);
        move || match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    };
    let removed = std::thread::scope(|s| {
        let upper = s.spawn(tree("upper"));
        let work = s.spawn(tree("work"));
        let lower = tree("lower")();
        let rootfs = tree("rootfs")();
        let panicked = || Err(std::io::Error::other("a removal thread panicked"));
        [
            upper.join().unwrap_or_else(|_| panicked()),
            work.join().unwrap_or_else(|_| panicked()),
            lower,
            rootfs,
        ]
    });
    for r in removed {
        r?;
    }
    fs::remove_dir_all(base)
}

fn keep_upper(upper: &Path, dest: &Path) -> std::io::Result<()> {
    fs::rename(upper, dest)
}

/// Writes the filesystem holding `dir` to disk (syncfs): what a kept upper needs before
/// it may be trusted after a machine crash, since sandboxes' overlays are `volatile`.
pub fn make_durable(dir: &Path) -> Result<()> {
    let sync = || -> std::io::Result<()> {
        let f = fs::File::open(dir)?;
        nix::unistd::syncfs(&f).map_err(std::io::Error::from)
    };
    sync().map_err(io_err("sync", dir))
}

fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Sets up the overlay, network namespace and bundle, then starts the runtime.
async fn start(
    host: &HostConfig,
    spec: &SandboxSpec,
    upper: Option<Upper>,
    parts: &mut Parts,
) -> Result<(tokio::process::Child, Control)> {
    // The namespace is made on a helper thread while the root and bundle are prepared.
    let pending = NetNs::start(&spec.id.host_name())?;
    let prepared = prepare_root(spec, upper, parts);
    parts.netns = Some(pending.finish()?);
    prepared?;
    let netns_path = parts
        .netns
        .as_ref()
        .expect("set above")
        .path()
        .to_path_buf();

    let config = spec::build(&BundleSpec {
        rootfs: &parts.dirs.rootfs,
        hostname: &spec.hostname,
        netns: &netns_path,
        cgroups_path: &parts.cgroup,
        resources: &spec.resources,
        init_binary: &host.init_binary,
        mounts: &spec.mounts,
    })
    .map_err(|e| SandboxError::Spec {
        id: spec.id.to_string(),
        reason: e.to_string(),
    })?;
    let config_path = parts.dirs.bundle.join(CONFIG_FILE);
    let json = serde_json::to_vec(&config).map_err(|e| SandboxError::Spec {
        id: spec.id.to_string(),
        reason: e.to_string(),
    })?;
    fs::write(&config_path, json).map_err(io_err("write", &config_path))?;
    fs::create_dir_all(parts.runtime.state_root())
        .map_err(io_err("create", parts.runtime.state_root()))?;

    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(sys_err("create the control socket"))?;
    // Init's end must block: it is a plain poll loop.
    set_nonblocking(&theirs, false)?;
    let log = fs::File::create(&parts.dirs.log).map_err(io_err("create", &parts.dirs.log))?;
    let log_err = log.try_clone().map_err(io_err("open", &parts.dirs.log))?;
    let args = parts
        .runtime
        .run_args(&parts.dirs.bundle, &spec.id.host_name(), 1);
    let std_cmd = runtime_command(&*parts.runtime, &parts.cgroups, &args, Some(&theirs));
    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.stdin(StdStdio::null()).stdout(log).stderr(log_err);
    let mut child = cmd
        .spawn()
        .map_err(io_err("start the OCI runtime", parts.runtime.binary()))?;
    // From here init's end lives only in the runtime and the container, so EOF on ours
    // means they are gone.
    drop(cmd);
    drop(theirs);
    let (control, ready) =
        Control::spawn(ours).map_err(io_err("watch the control socket", &parts.dirs.base))?;
    match tokio::time::timeout(RUNTIME_TIMEOUT, ready).await {
        Ok(Ok(_init_pid)) => Ok((child, control)),
        outcome => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let log = fs::read_to_string(&parts.dirs.log).unwrap_or_default();
            let mut tail: Vec<&str> = log.lines().rev().take(10).collect();
            tail.reverse();
            let mut log = tail.join("\n");
            if outcome.is_err() {
                log = format!(
                    "init did not come up within {}s. {log}",
                    RUNTIME_TIMEOUT.as_secs()
                );
            }
            if log.is_empty() {
                log = "the runtime exited without a message".into();
            }
            Err(SandboxError::RuntimeFailed {
                id: spec.id.to_string(),
                runtime: parts.runtime.kind().to_string(),
                log,
            })
        }
    }
}

/// Makes the sandbox's directories (the upper one taken over from `given`, if any) and
/// mounts its overlay root.
fn prepare_root(spec: &SandboxSpec, given: Option<Upper>, parts: &mut Parts) -> Result<()> {
    let base = &parts.dirs.base;
    let upper = base.join("upper");
    let work = base.join("work");
    match given {
        // Both live in the run directory: one filesystem, so this is O(1).
        Some(given) => fs::rename(given.path(), &upper).map_err(io_err("move in", given.path()))?,
        None => fs::create_dir(&upper).map_err(io_err("create", &upper))?,
    }
    for d in [&work, &parts.dirs.rootfs] {
        fs::create_dir(d).map_err(io_err("create", d))?;
    }
    let mut lowers = spec.lowers.clone();
    if lowers.is_empty() {
        // Overlay needs at least one lower; an image with no layers gets an empty one.
        let empty = base.join("empty");
        fs::create_dir(&empty).map_err(io_err("create", &empty))?;
        lowers.push(empty);
    }
    overlay::mount_overlay(
        spec.id.as_str(),
        base,
        &OverlayDirs {
            lowers,
            upper,
            work,
            target: parts.dirs.rootfs.clone(),
        },
    )?;
    parts.mounted = true;
    Ok(())
}

fn set_nonblocking(fd: &OwnedFd, on: bool) -> Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(sys_err("read socket flags"))?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(sys_err("set socket flags"))?;
    Ok(())
}

fn dev_null(write: bool) -> Result<OwnedFd> {
    let f = fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map_err(io_err("open", "/dev/null"))?;
    Ok(f.into())
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("create a pipe"))
}

/// The child's stdin end, and the host's writer if piped.
fn writer_end(s: Stdio) -> Result<(OwnedFd, Option<pipe::Sender>)> {
    Ok(match s {
        Stdio::Null => (dev_null(false)?, None),
        Stdio::Fd(fd) => (fd, None),
        Stdio::Piped => {
            let (r, w) = pipe_pair()?;
            set_nonblocking(&w, true)?;
            let sender = pipe::Sender::from_owned_fd(w).map_err(io_err("watch a pipe", "stdin"))?;
            (r, Some(sender))
        }
    })
}

/// The child's stdout/stderr end, and the host's reader if piped.
fn reader_end(s: Stdio) -> Result<(OwnedFd, Option<pipe::Receiver>)> {
    Ok(match s {
        Stdio::Null => (dev_null(true)?, None),
        Stdio::Fd(fd) => (fd, None),
        Stdio::Piped => {
            let (r, w) = pipe_pair()?;
            set_nonblocking(&r, true)?;
            let receiver =
                pipe::Receiver::from_owned_fd(r).map_err(io_err("watch a pipe", "stdout"))?;
            (w, Some(receiver))
        }
    })
}
