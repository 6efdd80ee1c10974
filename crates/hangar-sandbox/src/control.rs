//! The host's end of the control socket to hangar-init: one task owns the socket, sends
//! requests (with stdio fds attached) and routes init's events to the waiting callers.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use hangar_init::{Event, ExecRequest, Request, SpawnStage, WaitStatus, MAX_MESSAGE};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

/// What a started exec hands back: init's pid for it and where its end will be reported.
pub(crate) struct Started {
    pub id: u64,
    pub pid: u32,
    pub exit: oneshot::Receiver<WaitStatus>,
}

/// Why init could not start an exec.
#[derive(Debug)]
pub(crate) enum ExecFailure {
    Spawn {
        stage: SpawnStage,
        errno: i32,
    },
    /// Init is gone (the sandbox died or was destroyed).
    Gone,
    Send(nix::Error),
}

enum Command {
    Exec {
        req: ExecRequest,
        fds: [OwnedFd; 3],
        reply: oneshot::Sender<Result<Started, ExecFailure>>,
    },
    Signal {
        id: u64,
        signal: i32,
    },
    Shutdown,
}

/// A cheap handle to the control task.
#[derive(Clone)]
pub(crate) struct Control {
    tx: mpsc::UnboundedSender<Command>,
}

impl Control {
    /// Starts the task; `ready` fires with init's pid once init says it is serving, or is
    /// dropped if the socket closes first (the runtime failed to start the container).
    pub fn spawn(sock: OwnedFd) -> std::io::Result<(Control, oneshot::Receiver<u32>)> {
        // SAFETY: an OwnedFd is a valid open fd and keeps the same one until dropped.
        let fd = unsafe { AsyncFd::register(sock) }.map_err(std::io::Error::from)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(run(fd, rx, ready_tx));
        Ok((Control { tx }, ready_rx))
    }

    pub async fn exec(&self, req: ExecRequest, fds: [OwnedFd; 3]) -> Result<Started, ExecFailure> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Exec { req, fds, reply })
            .map_err(|_| ExecFailure::Gone)?;
        rx.await.unwrap_or(Err(ExecFailure::Gone))
    }

    pub fn signal(&self, id: u64, signal: i32) {
        let _ = self.tx.send(Command::Signal { id, signal });
    }

    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

async fn run(
    fd: AsyncFd<OwnedFd>,
    mut rx: mpsc::UnboundedReceiver<Command>,
    ready: oneshot::Sender<u32>,
) {
    let mut ready = Some(ready);
    let mut pending: HashMap<u64, oneshot::Sender<Result<Started, ExecFailure>>> = HashMap::new();
    let mut running: HashMap<u64, oneshot::Sender<WaitStatus>> = HashMap::new();
    let mut next_id = 1u64;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    Command::Exec { mut req, fds, reply } => {
                        req.id = next_id;
                        next_id += 1;
                        let raw = [fds[0].as_raw_fd(), fds[1].as_raw_fd(), fds[2].as_raw_fd()];
                        match send(&fd, &Request::Exec(req.clone()).encode(), &raw).await {
                            Ok(()) => { pending.insert(req.id, reply); }
                            Err(e) => { let _ = reply.send(Err(ExecFailure::Send(e))); }
                        }
                        // Our copies of the child's stdio close here; init holds its own.
                        drop(fds);
                    }
                    Command::Signal { id, signal } => {
                        let _ = send(&fd, &Request::Signal { id, signal }.encode(), &[]).await;
                    }
                    Command::Shutdown => {
                        let _ = send(&fd, &Request::Shutdown.encode(), &[]).await;
                    }
                }
            }
            guard = fd.readable() => {
                let Ok(mut guard) = guard else { return };
                let got = guard.try_io(|inner| {
                    let mut iov = [IoSliceMut::new(&mut buf)];
                    recvmsg::<()>(inner.as_raw_fd(), &mut iov, None, MsgFlags::MSG_DONTWAIT)
                        .map(|m| m.bytes)
                        .map_err(std::io::Error::from)
                });
                let n = match got {
                    Err(_would_block) => continue,
                    Ok(Ok(n)) => n,
                    // A broken socket ends the conversation exactly like EOF.
                    Ok(Err(_)) => 0,
                };
                if n == 0 {
                    // Init is gone: every waiter learns it by its channel closing.
                    for (_, reply) in pending.drain() {
                        let _ = reply.send(Err(ExecFailure::Gone));
                    }
                    return;
                }
                let Ok(ev) = Event::decode(&buf[..n]) else { continue };
                match ev {
                    Event::Ready { pid } => {
                        if let Some(r) = ready.take() { let _ = r.send(pid); }
                    }
                    Event::Started { id, pid } => {
                        if let Some(reply) = pending.remove(&id) {
                            let (tx, exit) = oneshot::channel();
                            running.insert(id, tx);
                            let _ = reply.send(Ok(Started { id, pid, exit }));
                        }
                    }
                    Event::SpawnFailed { id, errno, stage } => {
                        if let Some(reply) = pending.remove(&id) {
                            let _ = reply.send(Err(ExecFailure::Spawn { stage, errno }));
                        }
                    }
                    Event::Exited { id, status } => {
                        if let Some(tx) = running.remove(&id) { let _ = tx.send(status); }
                    }
                }
            }
        }
    }
}

async fn send(fd: &AsyncFd<OwnedFd>, msg: &[u8], fds: &[RawFd]) -> Result<(), nix::Error> {
    loop {
        let mut guard = fd.writable().await.map_err(|_| nix::Error::EBADF)?;
        let res = guard.try_io(|inner| {
            let iov = [IoSlice::new(msg)];
            let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
                vec![]
            } else {
                vec![ControlMessage::ScmRights(fds)]
            };
            sendmsg::<()>(
                inner.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        });
        match res {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => return Err(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
            Err(_would_block) => continue,
        }
    }
}
