//! `hangar-init`: the statically linked PID 1 of every hangar sandbox.
//!
//! It reaps every process in the sandbox, forwards termination signals, and serves the
//! host's exec requests over the control socket at fd 3 (see the library's protocol). When
//! the host's end of the socket closes, the host is gone: init exits, and the kernel kills
//! everything left in the PID namespace, so a crashed host leaves no process behind. It is
//! not dumpable, so nothing in the sandbox can trace it or take its socket.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use hangar_init::{Event, ExecRequest, Request, SpawnStage, WaitStatus, CONTROL_FD, MAX_MESSAGE};

const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn main() {
    if let Err(e) = run() {
        eprintln!("hangar-init: {e}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    // The agent may be root in the sandbox, with the same capabilities as init: were
    // init dumpable, it could ptrace init, read and write its memory (/proc/1/mem) or
    // take the control socket (pidfd_getfd) and tell the host a forged story. A process
    // that is not dumpable admits only CAP_SYS_PTRACE, which no sandbox has. Forked
    // children inherit it until their exec, so none is exposed while it holds the socket.
    // SAFETY: prctl with an integer argument has no memory-safety preconditions.
    cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })?;
    // SAFETY: F_GETFD on an arbitrary fd number only queries it.
    if unsafe { libc::fcntl(CONTROL_FD, libc::F_GETFD) } < 0 {
        return Err(io::Error::other(
            "no control socket at fd 3: hangar-init is started by hangar, not by hand",
        ));
    }
    // SAFETY: fd 3 is open (checked above); marking it close-on-exec keeps it from children.
    cvt(unsafe { libc::fcntl(CONTROL_FD, libc::F_SETFD, libc::FD_CLOEXEC) })?;

    // SAFETY: an all-zero sigset_t is a valid value to initialise with sigemptyset.
    let mut set: libc::sigset_t = unsafe { zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
    }
    // SAFETY: `set` is initialised; blocking signals so they queue for the signalfd.
    cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, ptr::null_mut()) })?;
    // SAFETY: ignoring SIGPIPE so a vanished host turns into EPIPE, not death.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // SAFETY: `set` is initialised; -1 asks for a new signalfd.
    let sfd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;

    let mut init = Init {
        children: HashMap::new(),
        terminating: false,
    };
    send(&Event::Ready {
        pid: std::process::id(),
    })?;

    loop {
        let mut fds = [
            libc::pollfd {
                fd: CONTROL_FD,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if fds[1].revents != 0 {
            init.drain_signals(sfd)?;
        }
        if fds[0].revents != 0 && !init.serve_one()? {
            return Ok(());
        }
        if init.terminating && init.children.is_empty() {
            return Ok(());
        }
    }
}

struct Init {
    /// Running execs: pid (also their process group) to request id.
    children: HashMap<libc::pid_t, u64>,
    /// A termination signal arrived: exit once the forwarded signal has ended every exec.
    terminating: bool,
}

impl Init {
    fn drain_signals(&mut self, sfd: libc::c_int) -> io::Result<()> {
        loop {
            // SAFETY: an all-zero signalfd_siginfo is a valid buffer.
            let mut info: libc::signalfd_siginfo = unsafe { zeroed() };
            let want = size_of::<libc::signalfd_siginfo>();
            // SAFETY: `info` is a writable buffer of exactly `want` bytes.
            let n =
                unsafe { libc::read(sfd, (&mut info as *mut libc::signalfd_siginfo).cast(), want) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::WouldBlock {
                    return Ok(());
                }
                return Err(err);
            }
            if n as usize != want {
                return Ok(());
            }
            let signo = info.ssi_signo as libc::c_int;
            if signo == libc::SIGCHLD {
                self.reap()?;
            } else {
                for &pid in self.children.keys() {
                    signal_group(pid, signo);
                }
                if matches!(signo, libc::SIGTERM | libc::SIGINT | libc::SIGQUIT) {
                    self.terminating = true;
                }
            }
        }
    }

    /// Reaps every exited process: our execs are reported, orphans are just collected.
    fn reap(&mut self) -> io::Result<()> {
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid out pointer; WNOHANG never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return Ok(());
            }
            if let Some(id) = self.children.remove(&pid) {
                send(&Event::Exited {
                    id,
                    status: decode_status(status),
                })?;
            }
        }
    }

    /// Serves one control message. Returns false when the host has gone away or asked us
    /// to shut down.
    fn serve_one(&mut self) -> io::Result<bool> {
        let (buf, fds) = match recv() {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e),
        };
        let req = match Request::decode(&buf) {
            Ok(r) => r,
            Err(e) => {
                close_all(&fds);
                eprintln!("hangar-init: {e}");
                return Ok(true);
            }
        };
        match req {
            Request::Exec(exec) => {
                if fds.len() != 3 {
                    close_all(&fds);
                    send(&Event::SpawnFailed {
                        id: exec.id,
                        errno: libc::EBADF,
                        stage: SpawnStage::Stdio,
                    })?;
                    return Ok(true);
                }
                let id = exec.id;
                let ev = match spawn(&exec, [fds[0], fds[1], fds[2]]) {
                    Ok(pid) => {
                        self.children.insert(pid, id);
                        Event::Started {
                            id,
                            pid: pid as u32,
                        }
                    }
                    Err((stage, errno)) => Event::SpawnFailed { id, errno, stage },
                };
                close_all(&fds);
                send(&ev)?;
            }
            Request::Signal { id, signal } => {
                close_all(&fds);
                if let Some((&pid, _)) = self.children.iter().find(|(_, v)| **v == id) {
                    signal_group(pid, signal);
                }
            }
            Request::Shutdown => {
                close_all(&fds);
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn signal_group(pid: libc::pid_t, signo: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(-pid, signo) } < 0 {
        // SAFETY: as above; the process may not have become a group leader yet.
        unsafe { libc::kill(pid, signo) };
    }
}

fn decode_status(status: libc::c_int) -> WaitStatus {
    if libc::WIFSIGNALED(status) {
        WaitStatus::Signal(libc::WTERMSIG(status))
    } else {
        WaitStatus::Code(libc::WEXITSTATUS(status))
    }
}

fn cstr(bytes: &[u8]) -> Result<CString, (SpawnStage, i32)> {
    CString::new(bytes).map_err(|_| (SpawnStage::Exec, libc::EINVAL))
}

/// Forks and execs one request. Everything the child needs is allocated before the fork.
fn spawn(req: &ExecRequest, stdio: [libc::c_int; 3]) -> Result<libc::pid_t, (SpawnStage, i32)> {
    let argv: Vec<CString> = req.argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let env: Vec<CString> = req.env.iter().map(|e| cstr(e)).collect::<Result<_, _>>()?;
    let cwd = cstr(&req.cwd).map_err(|_| (SpawnStage::Chdir, libc::EINVAL))?;
    let candidates = exec_candidates(req)?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(ptr::null());

    let mut errpipe = [0; 2];
    // SAFETY: `errpipe` is a valid array of two ints.
    if unsafe { libc::pipe2(errpipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err((SpawnStage::Fork, errno()));
    }
    // SAFETY: init is single-threaded, so the child may use any function after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = errno();
        close_all(&errpipe);
        return Err((SpawnStage::Fork, e));
    }
    if pid == 0 {
        // SAFETY: in the child; every pointer used below was built before the fork and
        // stays valid until exec or _exit.
        unsafe {
            child(
                req,
                stdio,
                errpipe[1],
                &candidates,
                &argv_ptrs,
                &env_ptrs,
                &cwd,
            )
        }
    }
    // SAFETY: closing our copy of the write end so the read below sees EOF on exec.
    unsafe { libc::close(errpipe[1]) };
    let mut report = [0u8; 5];
    let mut got = 0;
    while got < report.len() {
        // SAFETY: reading into the unfilled tail of `report`.
        let n = unsafe {
            libc::read(
                errpipe[0],
                report[got..].as_mut_ptr().cast(),
                report.len() - got,
            )
        };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    // SAFETY: closing the read end we own.
    unsafe { libc::close(errpipe[0]) };
    if got == 0 {
        return Ok(pid);
    }
    let mut status = 0;
    // SAFETY: reaping the child that reported failure and is exiting.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let stage = match report[0] {
        1 => SpawnStage::Stdio,
        2 => SpawnStage::Credentials,
        3 => SpawnStage::Chdir,
        _ => SpawnStage::Exec,
    };
    Err((
        stage,
        i32::from_le_bytes([report[1], report[2], report[3], report[4]]),
    ))
}

/// The paths to try for argv[0], searched in the exec's own PATH (not init's).
fn exec_candidates(req: &ExecRequest) -> Result<Vec<CString>, (SpawnStage, i32)> {
    let prog = &req.argv[0];
    if prog.contains(&b'/') {
        return Ok(vec![cstr(prog)?]);
    }
    let path = req
        .env
        .iter()
        .find_map(|e| e.strip_prefix(b"PATH="))
        .unwrap_or(DEFAULT_PATH.as_bytes());
    path.split(|b| *b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() {
                Path::new(".")
            } else {
                Path::new(std::ffi::OsStr::from_bytes(dir))
            };
            cstr(
                dir.join(std::ffi::OsStr::from_bytes(prog))
                    .as_os_str()
                    .as_bytes(),
            )
        })
        .collect()
}

/// The child side of `spawn`. Never returns.
///
/// # Safety
/// Must run in a freshly forked child of single-threaded init, with valid pointers.
unsafe fn child(
    req: &ExecRequest,
    stdio: [libc::c_int; 3],
    errfd: libc::c_int,
    candidates: &[CString],
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
    cwd: &CString,
) -> ! {
    let fail = |stage: u8, e: i32| -> ! {
        let mut msg = [0u8; 5];
        msg[0] = stage;
        msg[1..].copy_from_slice(&e.to_le_bytes());
        // SAFETY: writing a stack buffer to our error pipe, then leaving without unwinding.
        unsafe {
            libc::write(errfd, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: plain syscalls on values owned by this process; see the function contract.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::setsid();
        for (target, fd) in stdio.iter().enumerate() {
            if libc::dup2(*fd, target as libc::c_int) < 0 {
                fail(1, errno());
            }
        }
        // Everything else the child might hold (the control socket, other execs' fds)
        // closes at exec; the error pipe stays usable until then.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if libc::setgroups(0, ptr::null()) < 0 && req.uid != 0 {
            fail(2, errno());
        }
        if libc::setgid(req.gid) < 0 || libc::setuid(req.uid) < 0 {
            fail(2, errno());
        }
        if libc::chdir(cwd.as_ptr()) < 0 {
            fail(3, errno());
        }
        let mut last = libc::ENOENT;
        for cand in candidates {
            libc::execve(cand.as_ptr(), argv.as_ptr(), env.as_ptr());
            let e = errno();
            // As execvp: keep searching past missing or inaccessible candidates.
            if e != libc::ENOENT && e != libc::ENOTDIR && e != libc::EACCES {
                fail(4, e);
            }
            if e == libc::EACCES {
                last = e;
            }
        }
        fail(4, last)
    }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn close_all(fds: &[libc::c_int]) {
    for &fd in fds {
        // SAFETY: closing fds this process received and owns.
        unsafe { libc::close(fd) };
    }
}

fn send(ev: &Event) -> io::Result<()> {
    let buf = ev.encode();
    loop {
        // SAFETY: sending a valid buffer on the control socket.
        let n = unsafe {
            libc::send(
                CONTROL_FD,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives one datagram and the fds attached to it. `None` means the host closed its end.
fn recv() -> io::Result<Option<(Vec<u8>, Vec<libc::c_int>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    // Room for a handful of fds; a sender attaching more gets them truncated (MSG_CTRUNC)
    // and the request refused.
    let mut cmsg_buf = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>();
    // SAFETY: `msg` points at live buffers of the declared sizes.
    let n = unsafe { libc::recvmsg(CONTROL_FD, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control buffer the kernel just filled, with the libc macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const libc::c_int;
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / size_of::<libc::c_int>();
                for i in 0..count {
                    fds.push(ptr::read_unaligned(data.add(i)));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        close_all(&fds);
        fds.clear();
    }
    buf.truncate(n as usize);
    Ok(Some((buf, fds)))
}
