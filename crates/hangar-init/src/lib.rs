//! Wire protocol between the host and `hangar-init`, the PID 1 of every sandbox.
//!
//! The host hands init one end of a `SOCK_SEQPACKET` socket pair as fd 3 (the OCI runtime's
//! `--preserve-fds 1`). Every datagram is one message; an `Exec` request carries the child's
//! stdin, stdout and stderr as `SCM_RIGHTS` file descriptors, so output flows from the
//! sandboxed process straight into the host's pipes with no copy through init.
//!
//! The encoding is hand-rolled (tag byte, little-endian integers, length-prefixed byte
//! strings) so that init links nothing but `std` and `libc`. This module does no I/O.

use std::fmt;

/// The fd number at which init finds its control socket.
pub const CONTROL_FD: i32 = 3;

/// Largest datagram either side sends; a request larger than this is refused on the host
/// before it is sent, with an error naming the size.
pub const MAX_MESSAGE: usize = 192 * 1024;

/// A request from the host to init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Start a process. Exactly three fds (stdin, stdout, stderr) travel with it.
    Exec(ExecRequest),
    /// Send a signal to the process group of a running exec.
    Signal { id: u64, signal: i32 },
    /// Kill everything and exit; the runtime then deletes the container.
    Shutdown,
}

/// What init needs to start one process. The environment is complete: nothing is
/// inherited from init, whose own environment is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub id: u64,
    pub argv: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
}

/// A message from init to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Init is up and serving requests.
    Ready { pid: u32 },
    /// The exec's process is running.
    Started { id: u64, pid: u32 },
    /// The exec could not start; `errno` says why, `stage` names the step that failed.
    SpawnFailed {
        id: u64,
        errno: i32,
        stage: SpawnStage,
    },
    /// The exec's process ended.
    Exited { id: u64, status: WaitStatus },
}

/// The step of starting a process that failed, so the host can say "failed to change
/// directory to /x" instead of a bare errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnStage {
    Fork,
    Stdio,
    Credentials,
    Chdir,
    Exec,
}

impl fmt::Display for SpawnStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpawnStage::Fork => "fork",
            SpawnStage::Stdio => "set up stdio",
            SpawnStage::Credentials => "switch user",
            SpawnStage::Chdir => "change directory",
            SpawnStage::Exec => "execute",
        })
    }
}

/// How a process ended, as `waitpid` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Code(i32),
    Signal(i32),
}

/// A message that does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed init message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

const T_EXEC: u8 = 1;
const T_SIGNAL: u8 = 2;
const T_SHUTDOWN: u8 = 3;
const T_READY: u8 = 10;
const T_STARTED: u8 = 11;
const T_SPAWN_FAILED: u8 = 12;
const T_EXITED: u8 = 13;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn list(&mut self, v: &[Vec<u8>]) {
        self.u32(v.len() as u32);
        for item in v {
            self.bytes(item);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn list(&mut self) -> Result<Vec<Vec<u8>>, DecodeError> {
        let n = self.u32()? as usize;
        // Each item costs at least its 4-byte length, which bounds `n` by the input.
        if n > self.0.len() / 4 {
            return Err(DecodeError("list longer than message"));
        }
        (0..n).map(|_| self.bytes()).collect()
    }
    fn end(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes"))
        }
    }
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        match self {
            Request::Exec(e) => {
                w.u8(T_EXEC);
                w.u64(e.id);
                w.list(&e.argv);
                w.list(&e.env);
                w.bytes(&e.cwd);
                w.u32(e.uid);
                w.u32(e.gid);
            }
            Request::Signal { id, signal } => {
                w.u8(T_SIGNAL);
                w.u64(*id);
                w.i32(*signal);
            }
            Request::Shutdown => w.u8(T_SHUTDOWN),
        }
        w.0
    }

    pub fn decode(buf: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader(buf);
        let req = match r.u8()? {
            T_EXEC => {
                let id = r.u64()?;
                let argv = r.list()?;
                if argv.is_empty() {
                    return Err(DecodeError("empty argv"));
                }
                Request::Exec(ExecRequest {
                    id,
                    argv,
                    env: r.list()?,
                    cwd: r.bytes()?,
                    uid: r.u32()?,
                    gid: r.u32()?,
                })
            }
            T_SIGNAL => Request::Signal {
                id: r.u64()?,
                signal: r.i32()?,
            },
            T_SHUTDOWN => Request::Shutdown,
            _ => return Err(DecodeError("unknown request tag")),
        };
        r.end()?;
        Ok(req)
    }
}

impl SpawnStage {
    fn to_u8(self) -> u8 {
        self as u8
    }
    fn from_u8(v: u8) -> Result<SpawnStage, DecodeError> {
        Ok(match v {
            0 => SpawnStage::Fork,
            1 => SpawnStage::Stdio,
            2 => SpawnStage::Credentials,
            3 => SpawnStage::Chdir,
            4 => SpawnStage::Exec,
            _ => return Err(DecodeError("unknown spawn stage")),
        })
    }
}

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        match self {
            Event::Ready { pid } => {
                w.u8(T_READY);
                w.u32(*pid);
            }
            Event::Started { id, pid } => {
                w.u8(T_STARTED);
                w.u64(*id);
                w.u32(*pid);
            }
            Event::SpawnFailed { id, errno, stage } => {
                w.u8(T_SPAWN_FAILED);
                w.u64(*id);
                w.i32(*errno);
                w.u8(stage.to_u8());
            }
            Event::Exited { id, status } => {
                w.u8(T_EXITED);
                w.u64(*id);
                match status {
                    WaitStatus::Code(c) => {
                        w.u8(0);
                        w.i32(*c);
                    }
                    WaitStatus::Signal(s) => {
                        w.u8(1);
                        w.i32(*s);
                    }
                }
            }
        }
        w.0
    }

    pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
        let mut r = Reader(buf);
        let ev = match r.u8()? {
            T_READY => Event::Ready { pid: r.u32()? },
            T_STARTED => Event::Started {
                id: r.u64()?,
                pid: r.u32()?,
            },
            T_SPAWN_FAILED => Event::SpawnFailed {
                id: r.u64()?,
                errno: r.i32()?,
                stage: SpawnStage::from_u8(r.u8()?)?,
            },
            T_EXITED => {
                let id = r.u64()?;
                let status = match r.u8()? {
                    0 => WaitStatus::Code(r.i32()?),
                    1 => WaitStatus::Signal(r.i32()?),
                    _ => return Err(DecodeError("unknown wait status")),
                };
                Event::Exited { id, status }
            }
            _ => return Err(DecodeError("unknown event tag")),
        };
        r.end()?;
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_request(req: Request) {
        assert_eq!(Request::decode(&req.encode()), Ok(req));
    }

    fn check_event(ev: Event) {
        assert_eq!(Event::decode(&ev.encode()), Ok(ev));
    }

    #[test]
    fn requests_round_trip() {
        check_request(Request::Exec(ExecRequest {
            id: 7,
            argv: vec![b"/bin/sh".to_vec(), b"-c".to_vec(), b"echo \xff".to_vec()],
            env: vec![b"PATH=/bin".to_vec()],
            cwd: b"/workspace".to_vec(),
            uid: 1000,
            gid: 1000,
        }));
        check_request(Request::Signal { id: 1, signal: 15 });
        check_request(Request::Shutdown);
    }

    #[test]
    fn events_round_trip() {
        check_event(Event::Ready { pid: 1 });
        check_event(Event::Started { id: 3, pid: 42 });
        check_event(Event::SpawnFailed {
            id: 3,
            errno: 2,
            stage: SpawnStage::Exec,
        });
        check_event(Event::Exited {
            id: 3,
            status: WaitStatus::Code(137),
        });
        check_event(Event::Exited {
            id: 3,
            status: WaitStatus::Signal(9),
        });
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "truncated"),
            (b"\x63", "unknown request tag"),
            (b"\x02\x01", "truncated"),
            (b"\x03\x00", "trailing bytes"),
            (
                b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff",
                "list longer than message",
            ),
            (
                b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
                "empty argv",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                Request::decode(input),
                Err(DecodeError(expected)),
                "input {input:?}"
            );
        }
    }
}
