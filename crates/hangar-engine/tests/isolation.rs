//! What an agent can reach of the phases before it and of hangar itself, attacked from the
//! agent's side in real sandboxes: a secret that maintenance leaves outside its files (in
//! /dev/shm, System V shared memory, a POSIX message queue, a process), hangar-init's
//! memory and control socket, and a check that the agent's own sandbox would answer.

use hangar_engine::{Engine, TaskRequest};
use hangar_secrets::Secret;
use hangar_spec::{AttemptStatus, TaskId};
use hangar_store::db::AttemptRecord;

mod common;

use common::engine;

/// Looks where maintenance plants its secret: files in /dev/shm, the System V segment
/// with key 0x48414e47, the message queue /hangar-token, processes with `TOKEN` in their
/// environment. Prints `shm=N sysv=N mq=N procs=N`, each how many it found.
const HUNT: &str = r#"shm=$(ls -A /dev/shm | wc -l)
procs=$(cat /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' | grep -c '^TOKEN=' || true)
ipc=$(python3 - <<'PY'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
sysv = int(libc.shmget(0x48414E47, 0, 0) >= 0)
mq = int(libc.mq_open(b"/hangar-token", ctypes.c_int(os.O_RDONLY)) >= 0)
print(f"sysv={sysv} mq={mq}")
PY
)
echo "shm=$shm $ipc procs=$procs""#;

/// Plants `$TOKEN` where the agent's sandbox would share it with maintenance's: a file in
/// /dev/shm (tmpfs), a System V segment, a message on a POSIX queue, and processes
/// holding it in their environment, one double-forked.
const PLANT: &str = r#"printf '%s' "$TOKEN" > /dev/shm/token
python3 - <<'PY'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
v = os.environ["TOKEN"].encode()
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
seg = libc.shmget(0x48414E47, 4096, 0o1000 | 0o666)  # IPC_CREAT
assert seg >= 0, ctypes.get_errno()
addr = libc.shmat(seg, None, 0)
ctypes.memmove(addr, v, len(v))
q = libc.mq_open(b"/hangar-token", ctypes.c_int(os.O_CREAT | os.O_WRONLY), ctypes.c_int(0o666), None)
assert q >= 0, ctypes.get_errno()
assert libc.mq_send(q, v, ctypes.c_size_t(len(v)), 0) == 0, ctypes.get_errno()
PY
(setsid nohup sleep 1000 </dev/null >/dev/null 2>&1 &)
(setsid sh -c '(sleep 1000 &) ; sleep 1000' </dev/null >/dev/null 2>&1 &)"#;

fn secret(v: &str) -> Secret {
    Secret::new(v.as_bytes().to_vec()).unwrap()
}

/// A value nobody else uses, so a search for it finds only this test's traces.
fn fresh_value(tag: &str) -> String {
    format!("{tag}-{}-{}", TaskId::random(), TaskId::random())
}

/// Runs `script` as the agent of a task on `env`; its attempt, log lines and diff.
async fn run(engine: &Engine, env: &str, script: &str) -> (AttemptRecord, Vec<String>, String) {
    let req = TaskRequest {
        script: Some(script.into()),
        ..common::request(env, "attack")
    };
    let (task, a) = common::run(engine, &req).await;
    let logs = common::logs(engine, &task.id).await;
    let diff = common::diff(engine, &task.id, 1).await;
    let store = hangar_testkit::shared_store();
    let id = hangar_sandbox::SandboxId::new(a.sandbox.clone().expect("sandbox recorded")).unwrap();
    hangar_testkit::assert_no_traces(&hangar_testkit::host(&store), &id);
    (a, logs, diff)
}

/// Creates an environment on a one-file repository: `extra` is the rest of its file,
/// `agent` the rest of its `[agent]` table.
async fn env(engine: &Engine, tag: &str, extra: &str, agent: &str) -> String {
    let origin = hangar_testkit::repo_with(&[("README", b"x\n")]);
    let name = format!("{tag}-{}", TaskId::random());
    let source = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n{extra}\n\
         [agent]\nscript = 'echo no agent script given'\n{agent}\n",
        origin.path().display()
    );
    engine
        .create_env("e.toml", &source, origin.path())
        .await
        .unwrap();
    // The repository outlives the environment's use in this test.
    std::mem::forget(origin);
    name
}

/// Regression: maintenance with secrets ran in the agent's sandbox, and what it left
/// outside the scanned upper directory (a tmpfs file, IPC) was the agent's to read.
#[tokio::test]
async fn a_secret_maintenance_leaves_in_shm_ipc_or_a_process_never_reaches_the_agent() {
    let engine = engine().await;
    let value = fresh_value("shm");
    let maintenance = format!(
        "{PLANT}\n{}",
        HUNT.replace("echo \"shm=", "echo \"control: shm=")
    );
    let extra = format!(
        "[maintenance]\nscript = '''\n{maintenance}\n'''\n\
         [secrets.TOKEN]\nphases = [\"maintenance\"]\n"
    );
    let name = env(&engine, "apart", &extra, "").await;
    engine
        .secret_set(&name, "TOKEN", &secret(&value))
        .await
        .unwrap();
    let (a, logs, _) = run(&engine, &name, HUNT).await;
    assert_eq!(a.error, None, "{logs:#?}");
    // The same hunt, in maintenance, finds each one.
    assert!(
        logs.iter()
            .any(|l| l.starts_with("control: shm=1 sysv=1 mq=1 procs=") && !l.ends_with("=0")),
        "{logs:#?}"
    );
    assert!(!logs.iter().any(|l| l.contains(&value)), "{logs:#?}");
    assert_eq!(
        a.final_message.as_deref(),
        Some("shm=0 sysv=0 mq=0 procs=0"),
        "{logs:#?}"
    );
    // The agent's workspace is maintenance's: checked out there, its base recorded.
    assert_eq!(a.base_commit.as_ref().map(String::len), Some(40));
}

/// Regression: init was dumpable, so an agent running as root could ptrace PID 1, read
/// and write its memory and take its control socket (pidfd_getfd) to report a forged
/// exit status to the host.
#[tokio::test]
async fn the_agent_cannot_trace_read_or_take_the_socket_of_init() {
    let engine = engine().await;
    let name = env(&engine, "pid1", "", "").await;
    let script = r#"python3 - <<'PY'
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def said(ok):
    return "ok" if ok else errno.errorcode.get(ctypes.get_errno(), "?")
out = []
attached = libc.ptrace(16, 1, None, None) == 0  # PTRACE_ATTACH
out.append("ptrace=" + said(attached))
if attached:
    libc.ptrace(17, 1, None, None)  # PTRACE_DETACH
for what, path in [("mem", "/proc/1/mem"), ("fd", "/proc/1/fd/3")]:
    try:
        os.readlink(path) if what == "fd" else open(path, "rb").close()
        out.append(what + "=ok")
    except OSError as e:
        out.append(what + "=" + errno.errorcode[e.errno])
pidfd = os.pidfd_open(1)
out.append("getfd=" + said(libc.syscall(438, pidfd, 3, 0) >= 0))  # pidfd_getfd
class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(8)
local = Iovec(ctypes.cast(buf, ctypes.c_void_p), 8)
remote = Iovec(0x400000, 8)
read = libc.syscall(310, 1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)  # process_vm_readv
out.append("vm=" + said(read >= 0))
print(" ".join(out))
PY"#;
    let (a, logs, _) = run(&engine, &name, script).await;
    assert_eq!(a.error, None, "{logs:#?}");
    assert_eq!(
        a.final_message.as_deref(),
        Some("ptrace=EPERM mem=EACCES fd=EACCES getfd=EPERM vm=EPERM"),
        "{logs:#?}"
    );
}

/// Regression: the check ran in the agent's sandbox, so an agent that put a `python3`
/// exiting 0 first on the PATH passed a check that runs python. Now it judges the diff,
/// applied to the snapshot's workspace at the base in a sandbox of its own: the agent's
/// change to a file setup left untracked, a deletion and a new file are there, its
/// `python3` is not.
#[tokio::test]
async fn the_check_judges_the_diff_not_the_agents_sandbox() {
    let engine = engine().await;
    let extra = r#"[setup]
script = "echo setup > gen.txt"
"#;
    let check = r#"check = '''
test "$(cat gen.txt)" = agent || exit 3
test ! -e README || exit 4
test "$(cat new.txt)" = new || exit 5
python3 -c 'import sys; sys.exit(7)'
'''
"#;
    let name = env(&engine, "check", extra, check).await;
    let script = r#"printf '#!/bin/sh\nexit 0\n' > /usr/local/bin/python3
chmod +x /usr/local/bin/python3
python3 -c 'import sys; sys.exit(7)'
echo agent > gen.txt
rm README
echo new > new.txt
echo faked"#;
    let (a, logs, diff) = run(&engine, &name, script).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?} {logs:#?}", a.error);
    let judged = a.check.expect("the check ran");
    assert!(!judged.passed, "{logs:#?}");
    assert_eq!(judged.exit_code, Some(7), "{diff}\n{logs:#?}");
    assert!(
        logs.contains(&"check: failed with exit code 7".to_string()),
        "{logs:#?}"
    );
}

/// A follow-up's check judges both agents' work against their common base, in a sandbox
/// over the snapshot: not over the kept layer, where the first agent left its `python3`.
#[tokio::test]
async fn a_follow_ups_check_judges_both_diffs_on_the_snapshot() {
    let engine = engine().await;
    let check = r#"check = '''
test "$(cat a.txt)" = first || exit 3
test -e b.txt || exit 4
python3 -c 'import sys; sys.exit(7)'
'''
"#;
    let name = env(&engine, "followcheck", "", check).await;
    let first = r#"printf '#!/bin/sh\nexit 0\n' > /usr/local/bin/python3
chmod +x /usr/local/bin/python3
echo first > a.txt"#;
    let req = TaskRequest {
        script: Some(first.into()),
        ..common::request(&name, "first")
    };
    let (task, a) = common::run(&engine, &req).await;
    assert_eq!(a.status, AttemptStatus::Ready, "{:?}", a.error);
    assert_eq!(a.check.map(|c| c.exit_code), Some(Some(4)));

    let second = r#"python3 -c 'import sys; sys.exit(7)'
echo second > b.txt"#;
    let req = TaskRequest {
        from: Some(task.id.to_string()),
        script: Some(second.into()),
        ..common::request("", "second")
    };
    let (_, b) = common::run(&engine, &req).await;
    assert_eq!(b.status, AttemptStatus::Ready, "{:?}", b.error);
    assert_eq!(b.check.map(|c| c.exit_code), Some(Some(7)));
}

/// Maintenance apart that fails, or leaves its secret in its files, ends the attempt
/// before the agent and leaves nothing of its sandbox (the attempt's recorded one, since
/// no agent's sandbox was made), its kept upper directory included.
#[tokio::test]
async fn maintenance_apart_that_fails_or_leaks_leaves_nothing_behind() {
    let engine = engine().await;
    for (maintenance, error) in [
        (
            "true\nfalse",
            "the maintenance script failed at line 2 (`false`) with exit code 1",
        ),
        (
            "echo \"$TOKEN\" > /tmp/token",
            "the maintenance script left secret `TOKEN` in /tmp/token, where the agent would read it",
        ),
    ] {
        let extra = format!(
            "[maintenance]\nscript = '''\n{maintenance}\n'''\n\
             [secrets.TOKEN]\nphases = [\"maintenance\"]\n"
        );
        let name = env(&engine, "apartfail", &extra, "").await;
        engine
            .secret_set(&name, "TOKEN", &secret(&fresh_value("f")))
            .await
            .unwrap();
        let (a, logs, _) = run(&engine, &name, "echo the agent ran").await;
        assert_eq!(a.error.as_deref(), Some(error), "{logs:#?}");
        assert!(a.phases.iter().all(|p| p.phase != hangar_spec::Phase::Agent));
    }
}
