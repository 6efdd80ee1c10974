//! `hangar serve` (the daemon), `hangar shutdown`, and how every task command finds the
//! daemon: at `--socket` (default `<data dir>/hangar.sock`), started in the background
//! when none answers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use hangar_api::client::Client;
use hangar_engine::runner::Runner;
use hangar_engine::{Engine, EngineConfig};

/// How long an auto-started daemon stays up with nothing to do (no request, task,
/// stream or run), unless `HANGAR_DAEMON_IDLE` says otherwise.
const AUTO_IDLE_EXIT: &str = "10m";
/// The exit code of a daemon that found another one holding its socket's lock.
pub const EXIT_ALREADY_SERVING: u8 = 75;
/// How long a command waits for the daemon it started to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct ServeArgs {
    /// Where to listen, repeatable: `unix:PATH` (instead of the --socket path, which is
    /// always served) and `tcp:HOST:PORT` (every request needs a bearer token; TLS with
    /// --tls-cert, else loopback only unless --insecure-listen).
    #[arg(long)]
    listen: Vec<String>,
    #[command(flatten)]
    tcp: TcpArgs,
    /// Attempts running at once, at most; within it each reserves memory (its
    /// environment's `[resources] memory`, else 256 MiB for an agent CLI and 64 MiB for a
    /// script) from three quarters of the machine's, and past two per core waits for
    /// the machine's load to leave room. Default: as many as the smallest reservation
    /// fits; the rest queue.
    #[arg(long, env = "HANGAR_MAX_RUNNING")]
    max_running: Option<usize>,
    /// Attempts one task may ask for, best-of-N (default 4; at most --max-running).
    #[arg(long, env = "HANGAR_MAX_ATTEMPTS")]
    max_attempts: Option<u32>,
    /// CA certificates (PEM files) that sandboxes and the proxy trust besides the
    /// image's roots, repeatable (default: the host's locally added CAs, e.g.
    /// /usr/local/share/ca-certificates): a TLS-inspecting egress's, a private registry's.
    #[arg(long, env = "HANGAR_TRUST_CA", value_delimiter = ':')]
    trust_ca: Vec<PathBuf>,
    /// Exit after this long with nothing to do: no request, task, stream or run (`10m`).
    #[arg(long, value_parser = hangar_spec::parse_duration)]
    idle_exit: Option<Duration>,
    /// An internal or host-local host (`HOST` or `HOST:PORT`) that token workspaces may
    /// use as a repository, registry, model endpoint or allow rule, repeatable (comma
    /// separated in the variable). Without it a token reaches none of the daemon host's
    /// loopback, private ranges or own addresses.
    #[arg(long, env = "HANGAR_OPEN_INTERNAL", value_delimiter = ',', value_parser = hangar_spec::HostRule::parse)]
    open_internal: Vec<hangar_spec::HostRule>,
    /// The address users reach this daemon at (`https://hangar.example:7700`), for the
    /// links to a task's page in pull requests and comments. Default: the first TCP
    /// listener's.
    #[arg(long, env = "HANGAR_PUBLIC_URL")]
    public_url: Option<String>,
}

/// How the TCP listeners speak: TLS, or plain HTTP where that is safe or asked for.
#[derive(Args)]
struct TcpArgs {
    /// The certificate chain (PEM, leaf first) the TCP listeners present over TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a TCP address that is not loopback: every bearer token then
    /// crosses the network in clear.
    #[arg(long, conflicts_with = "tls_cert")]
    insecure_listen: bool,
}

/// A bound TCP listener and how it speaks.
enum TcpListen {
    Plain(tokio::net::TcpListener),
    Tls(hangar_api::tls::TlsListener),
}

/// The base URL a browser reaches a listener at: the host as `--listen` spelled it (a
/// wildcard address replaced by this machine's name), the port it was bound to.
fn site(addr: &str, local: std::net::SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let host = match host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() => hostname(),
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => host.to_string(),
    };
    format!("{scheme}://{host}:{}", local.port())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Binds every `tcp:` address: with TLS when a certificate is given, else on loopback
/// only unless `--insecure-listen`. Checked before binding, so a refused address is
/// never listened on.
async fn bind_tcp(addrs: &[String], args: &TcpArgs) -> Result<Vec<(TcpListen, String)>> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            if addrs.is_empty() {
                bail!(
                    "failed to use --tls-cert: it is for `--listen tcp:HOST:PORT`, and none \
                     is given"
                );
            }
            Some(hangar_api::tls::server_config(cert, key)?)
        }
        _ => None,
    };
    let mut listeners = Vec::new();
    for addr in addrs {
        let resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host(addr.as_str())
            .await
            .with_context(|| format!("failed to listen on tcp:{addr}"))?
            .collect();
        let beyond = resolved.iter().find(|a| !a.ip().is_loopback());
        if let (None, Some(a)) = (&tls, beyond) {
            if !args.insecure_listen {
                bail!(
                    "failed to listen on tcp:{addr}: {} is not a loopback address, and over \
                     plain HTTP every bearer token would cross the network in clear (give \
                     --tls-cert and --tls-key, or --insecure-listen to serve it anyway)",
                    a.ip()
                );
            }
        }
        let l = tokio::net::TcpListener::bind(&resolved[..])
            .await
            .with_context(|| format!("failed to listen on tcp:{addr}"))?;
        let local = l.local_addr()?;
        let site = site(addr, local, tls.is_some());
        listeners.push((
            match &tls {
                Some(config) => {
                    eprintln!("hangar: serving on tcp:{local} (TLS; bearer tokens only)");
                    TcpListen::Tls(hangar_api::tls::TlsListener::new(l, config.clone())?)
                }
                None => {
                    eprintln!("hangar: serving on tcp:{local} (plain HTTP; bearer tokens only)");
                    if beyond.is_some() {
                        eprintln!(
                            "hangar: warning: tcp:{local} is not loopback and serves plain HTTP \
                         (--insecure-listen): bearer tokens cross the network in clear"
                        );
                    }
                    TcpListen::Plain(l)
                }
            },
            site,
        ));
    }
    Ok(listeners)
}

/// The default socket of a data dir.
pub fn default_socket(data_dir: &Path) -> PathBuf {
    hangar_store::Bucket::Socket.at(data_dir)
}

/// `<socket>.lock`: held by the daemon serving that socket, with its pid inside.
fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Another daemon holds the socket's lock.
#[derive(Debug, thiserror::Error)]
#[error("failed to start the daemon: one already serves {} (pid {pid})", socket.display())]
pub struct AlreadyServing {
    socket: PathBuf,
    pid: String,
}

/// Takes the socket's daemon lock and writes this process's pid in it.
fn take_lock(socket: &Path) -> Result<std::fs::File> {
    let path = lock_path(socket);
    let Some(mut file) = hangar_store::lock::try_lock(&path)
        .with_context(|| format!("failed to lock {}", path.display()))?
    else {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(AlreadyServing {
            socket: socket.to_path_buf(),
            pid: pid.trim().to_string(),
        }
        .into());
    };
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// Runs the daemon until SIGTERM or SIGINT (or, with `--idle-exit`, a quiet spell):
/// recovers what a dead process left, then serves the API.
/// The engine is opened from `config` with the flags' settings over it, once the socket's
/// lock is this daemon's.
pub async fn serve(socket: &Path, mut config: EngineConfig, args: ServeArgs) -> Result<u8> {
    let mut path = socket.to_path_buf();
    let mut tcp = Vec::new();
    for l in &args.listen {
        if let Some(p) = l.strip_prefix("unix:") {
            path = PathBuf::from(p);
        } else if let Some(a) = l.strip_prefix("tcp:") {
            tcp.push(a.to_string());
        } else {
            bail!("failed to read --listen `{l}`: expected unix:PATH or tcp:HOST:PORT");
        }
    }
    let _lock = take_lock(&path)?;
    let tcp_listeners = bind_tcp(&tcp, &args.tcp).await?;
    if let Some(n) = args.max_running {
        config.max_running = n;
    }
    config.max_attempts = args.max_attempts;
    if !args.trust_ca.is_empty() {
        config.trusted_cas = Some(hangar_engine::read_cas(&args.trust_ca)?);
    }
    config.open_internal = args.open_internal.clone();
    config.public_url = args
        .public_url
        .clone()
        .or_else(|| tcp_listeners.first().map(|(_, site)| site.clone()));
    let engine = Arc::new(Engine::open(config).await?);
    let recovered = engine
        .recover()
        .await
        .context("failed to recover after the previous daemon")?;
    if recovered.sandboxes > 0 || !recovered.tasks.is_empty() {
        eprintln!(
            "hangar: recovered: removed {} sandboxes; {} unfinished tasks marked error",
            recovered.sandboxes,
            recovered.tasks.len()
        );
    }
    let runner = Runner::new(engine.clone());
    let activity = hangar_api::Activity::default();
    let sites: Arc<[String]> = tcp_listeners.iter().map(|(_, s)| s.clone()).collect();
    let router = |listener| {
        hangar_web::app(hangar_api::Api {
            runner: runner.clone(),
            listener,
            activity: activity.clone(),
            sites: sites.clone(),
        })
    };

    // The lock is ours, so a socket file left there is a dead daemon's.
    let _ = std::fs::remove_file(&path);
    let unix = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("failed to listen on {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("failed to restrict {}", path.display()))?;
    }
    eprintln!(
        "hangar: serving on unix:{} (up to {} attempts at once, as memory and load allow)",
        path.display(),
        engine.max_running()
    );
    let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
    let stop = {
        let (runner, path, activity) = (runner.clone(), path.clone(), activity.clone());
        async move {
            match stop_signal(&runner, &activity, args.idle_exit).await {
                Stop::Signal => {
                    eprintln!("hangar: stopping; cancelling running tasks");
                    runner.shutdown().await;
                }
                Stop::Idle => {
                    // New clients start a new daemon from now on; a task accepted in
                    // the meantime runs to its end first.
                    let _ = std::fs::remove_file(&path);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    runner.drain().await;
                }
            }
            let _ = stopped_tx.send(true);
        }
    };
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut servers = tokio::task::JoinSet::new();
    for (l, _) in tcp_listeners {
        let (app, until) = (
            router(hangar_api::Listener::Remote {
                tls: matches!(l, TcpListen::Tls(_)),
            }),
            until_stopped(stopped.clone()),
        );
        match l {
            TcpListen::Plain(l) => {
                let serving = axum::serve(l, app).with_graceful_shutdown(until);
                servers.spawn(async move { serving.await });
            }
            TcpListen::Tls(l) => {
                let serving = axum::serve(l, app).with_graceful_shutdown(until);
                servers.spawn(async move { serving.await });
            }
        }
    }
    let local = axum::serve(unix, router(hangar_api::Listener::Local))
        .with_graceful_shutdown(until_stopped(stopped.clone()));
    servers.spawn(async move { local.await });
    tokio::spawn(stop);
    while let Some(done) = servers.join_next().await {
        done?.context("failed to serve the API")?;
    }
    let _ = std::fs::remove_file(&path);
    Ok(0)
}

enum Stop {
    Signal,
    Idle,
}

/// Resolves on SIGTERM or SIGINT, or after `idle` with no request, no task and no long
/// work (a stream, an image build, a `run`).
async fn stop_signal(
    runner: &Runner,
    activity: &hangar_api::Activity,
    idle: Option<Duration>,
) -> Stop {
    let Some(mut signals) = crate::signals::StopSignals::new() else {
        return Stop::Signal;
    };
    let idle_ms = idle.map(|d| d.as_millis() as i64);
    loop {
        tokio::select! {
            _ = signals.next() => return Stop::Signal,
            () = tokio::time::sleep(Duration::from_millis(250)) => {
                let quiet = activity.quiet_ms();
                if idle_ms.is_some_and(|limit| quiet.is_some_and(|q| q > limit) && runner.active() == 0) {
                    return Stop::Idle;
                }
            }
        }
    }
}

/// The daemon at `socket`, started in the background (with `--idle-exit`) over
/// `data_dir` when none answers, so nobody has to start it by hand.
pub async fn connect(
    data_dir: &Path,
    socket: &Path,
    secret_key_file: Option<&Path>,
) -> Result<Client> {
    let client = Client::unix(socket);
    if client.ping().await {
        return Ok(client);
    }
    // The daemon runs in `/`: relative paths are made absolute first.
    let data_dir = &std::path::absolute(data_dir)?;
    let socket = &std::path::absolute(socket)?;
    let secret_key_file = secret_key_file.map(std::path::absolute).transpose()?;
    let client = Client::unix(socket);
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create the data dir {}", data_dir.display()))?;
    let log_path = hangar_store::Bucket::DaemonLog.at(data_dir);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("failed to open {}", log_path.display()))?;
    let log_len = log.metadata().map(|m| m.len()).unwrap_or(0);
    let idle = std::env::var("HANGAR_DAEMON_IDLE").unwrap_or_else(|_| AUTO_IDLE_EXIT.into());
    let spawn = || -> Result<std::process::Child> {
        let exe = std::env::current_exe().context("failed to locate the hangar executable")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("--data-dir")
            .arg(data_dir)
            .arg("--socket")
            .arg(socket);
        if let Some(key) = &secret_key_file {
            cmd.arg("--secret-key-file").arg(key);
        }
        // Not the caller's directory, which may be removed while the daemon lives.
        cmd.args(["serve", "--idle-exit", &idle])
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?);
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of this process.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        cmd.spawn().context("failed to start the hangar daemon")
    };
    let mut child = spawn()?;
    let started = std::time::Instant::now();
    loop {
        if client.ping().await {
            // Reaped by whoever outlives it: the daemon runs in its own session.
            std::thread::spawn(move || child.wait());
            return Ok(client);
        }
        match child.try_wait().ok().flatten() {
            // Another daemon holds the socket (starting, or leaving after an idle
            // spell): ask again, and start one once it has gone.
            Some(status) if status.code() == Some(EXIT_ALREADY_SERVING.into()) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                child = spawn()?;
            }
            Some(status) if !status.success() => {
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                let said = said.get(log_len as usize..).unwrap_or("").trim();
                bail!("failed to start the hangar daemon ({status}): {said}");
            }
            _ => {}
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "failed to reach the hangar daemon at {} within {}s (see {})",
                socket.display(),
                START_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `hangar shutdown`: stops the daemon at `socket` (running tasks are cancelled and torn
/// down) and waits until it has exited.
pub async fn shutdown(socket: &Path) -> Result<u8> {
    let path = lock_path(socket);
    let Ok(file) = std::fs::File::open(&path) else {
        eprintln!("no hangar daemon serves {}", socket.display());
        return Ok(0);
    };
    if file.try_lock_shared().is_ok() {
        eprintln!("no hangar daemon serves {}", socket.display());
        return Ok(0);
    }
    let pid: i32 = std::fs::read_to_string(&path)?
        .trim()
        .parse()
        .with_context(|| format!("failed to read the daemon's pid from {}", path.display()))?;
    // SAFETY: kill(2) with a pid the daemon wrote under its lock; no memory is shared.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    // The lock is free once the daemon has exited.
    tokio::task::spawn_blocking(move || file.lock_shared())
        .await?
        .with_context(|| format!("failed to wait for the daemon (pid {pid})"))?;
    eprintln!("stopped the hangar daemon (pid {pid})");
    Ok(0)
}
