//! The `hangar` command line. Thin: parses arguments, calls the libraries, prints.
//!
//! Exit codes: 0 success; 1 a hangar command failed (the message says what); 2 bad usage;
//! 3 `hangar exec`: the task ended in error or was cancelled (its id is still printed).
//! `hangar run` exits with the command's own code, or 125 when hangar could not run it,
//! 126 when the command cannot be executed, 127 when it is not found, 128+N when a signal
//! N ended it (137 for the memory limit's OOM kill, with a message naming the limit).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hangar_api::client::{segment, Client};
use hangar_api::wire::{
    BuildImage, ImageList, ImageRemoved, ImageStored, ImportImage, PullImage, PushImage,
};
use hangar_sandbox::{ExecSpec, HostConfig, Resources, RuntimeKind, Sandbox, SandboxSpec, Stdio};
use hangar_spec::{format_bytes, parse_bytes};
use hangar_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod daemon;
mod progress;
mod secrets;
mod tasks;
mod tokens;

#[derive(Parser)]
#[command(
    name = "hangar",
    version,
    about = "Cloud environments for coding agents, on your own Linux machines"
)]
struct Cli {
    /// Where hangar keeps images, layers and sandboxes.
    #[arg(
        long,
        global = true,
        env = "HANGAR_HOME",
        default_value = "/var/lib/hangar"
    )]
    data_dir: PathBuf,
    /// The key that encrypts secrets (default: secret.key in the data dir; created 0600).
    #[arg(long, global = true, env = "HANGAR_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    /// The daemon's socket (default: hangar.sock in the data dir).
    #[arg(long, global = true, env = "HANGAR_SOCKET")]
    socket: Option<PathBuf>,
    /// A daemon's TCP listener (`HOST:PORT`), instead of the local socket.
    #[arg(long, global = true, env = "HANGAR_URL")]
    url: Option<String>,
    /// A bearer token (`hangar token create`): act in its workspace.
    #[arg(long, global = true, env = "HANGAR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command in a fresh sandbox made from an image, then remove the sandbox.
    Run(RunArgs),
    #[command(flatten)]
    Api(ApiCommand),
    /// Run the daemon that runs tasks and serves the API (task commands start one in
    /// the background when none answers).
    Serve(daemon::ServeArgs),
    /// Stop the daemon of this data dir; its running tasks are cancelled.
    Shutdown,
}

/// The commands that go through the daemon's API.
#[derive(Subcommand)]
enum ApiCommand {
    /// Build, pull, push, import, list and remove images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// List, reset and collect environment snapshots.
    #[command(subcommand)]
    Cache(tasks::CacheCommand),
    /// Create, list, show, update, delete and resolve environments.
    #[command(subcommand)]
    Env(tasks::EnvCommand),
    /// Set, list and remove an environment's secrets.
    #[command(subcommand)]
    Secret(secrets::SecretCommand),
    /// Create, list and remove API tokens (each grants one workspace).
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Run a task: a prompt against an environment; prints the task id last.
    Exec(tasks::ExecArgs),
    /// List tasks, newest first.
    List(tasks::ListArgs),
    /// Print a task's status; exits 0 only when it is ready (3: error or cancelled,
    /// 4: still pending or running).
    Status {
        /// A task id, or a unique prefix of one.
        task: String,
        #[arg(long)]
        json: bool,
    },
    /// Wait until a task has finished; exits as `status` does.
    Wait(tasks::WaitArgs),
    /// Cancel a running task, wherever it runs: its sandboxes are torn down.
    Cancel {
        /// A task id, or a unique prefix of one.
        task: String,
    },
    /// Show a task and its attempts.
    Show {
        #[command(flatten)]
        task: tasks::TaskArgs,
        #[arg(long)]
        json: bool,
    },
    /// Print a task's logs; with --events the agent's events, with --network its egress
    /// proxy's decisions.
    Logs {
        #[command(flatten)]
        task: tasks::TaskArgs,
        #[arg(long)]
        json: bool,
        /// The proxy's audit log: time, phase, method, host, port, decision, rule, bytes.
        #[arg(long, conflicts_with = "events")]
        network: bool,
        /// The agent's events: messages, commands run, files changed, errors, final message.
        #[arg(long)]
        events: bool,
        /// Stream the logs as they are written, until the task ends.
        #[arg(long, short = 'f', conflicts_with_all = ["events", "network"])]
        follow: bool,
    },
    /// Print a task's diff (binary-safe, for `git apply`).
    Diff(tasks::TaskArgs),
    /// Apply a task's diff to the git repository you are in.
    Apply(tasks::TaskArgs),
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build an image from Debian packages with mmdebstrap (names: debian-<suite>).
    Build {
        name: String,
        /// Extra Debian packages to include (repeatable).
        #[arg(long = "package", short = 'p')]
        packages: Vec<String>,
        /// A Debian mirror URL to use instead of the host's apt sources.
        #[arg(long)]
        mirror: Option<String>,
    },
    /// Pull an image from an OCI registry.
    Pull {
        reference: String,
        /// Use plain HTTP for this registry.
        #[arg(long)]
        insecure: bool,
        /// Local name (default: the reference).
        #[arg(long)]
        name: Option<String>,
    },
    /// Push a local image to an OCI registry.
    Push {
        name: String,
        reference: String,
        /// Use plain HTTP for this registry.
        #[arg(long)]
        insecure: bool,
    },
    /// Import an OCI image layout directory, or an OCI or `docker save` tarball.
    Import {
        path: PathBuf,
        /// Local name (default: the name recorded in the input, else the file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove an image and the layers no other image uses.
    Rm { name: String },
}

#[derive(Args)]
struct RunArgs {
    #[arg(long)]
    image: String,
    /// Memory limit, e.g. 512MiB; the command is killed (exit 137) past it.
    #[arg(long, value_parser = parse_bytes)]
    memory: Option<u64>,
    /// Maximum number of processes.
    #[arg(long)]
    pids: Option<i64>,
    /// CPU limit in cores, e.g. 1 or 0.5.
    #[arg(long)]
    cpus: Option<f64>,
    #[arg(long, default_value = "crun")]
    runtime: RuntimeKind,
    /// Extra environment variables, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Working directory inside the sandbox (default: the image's).
    #[arg(long, short = 'w')]
    workdir: Option<String>,
    /// Pass standard input through to the command.
    #[arg(long, short = 'i')]
    interactive: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("HANGAR_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hangar: failed to start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let is_run = matches!(cli.command, Command::Run(_));
    match rt.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("hangar: {}", message(&e));
            ExitCode::from(if is_run { 125 } else { 1 })
        }
    }
}

/// An error and its causes, each cause added only when the message does not already
/// say it (library errors name their source in their own message).
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

async fn dispatch(cli: Cli) -> Result<u8> {
    let store = Store::open(&cli.data_dir)
        .with_context(|| format!("failed to open the data dir {}", cli.data_dir.display()))?;
    let key_file = cli.secret_key_file.clone();
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(|| daemon::default_socket(&cli.data_dir));
    let engine = || async {
        let mut engine = hangar_engine::Engine::open(store.clone(), init_binary()?).await?;
        if let Some(path) = key_file.clone() {
            engine.set_secret_key_file(path);
        }
        Ok::<_, anyhow::Error>(engine)
    };
    match cli.command {
        Command::Run(args) => run(&store, args).await,
        Command::Serve(args) => match daemon::serve(&socket, engine().await?, args).await {
            Err(e) if e.is::<daemon::AlreadyServing>() => {
                eprintln!("hangar: {e}");
                Ok(daemon::EXIT_ALREADY_SERVING)
            }
            served => served,
        },
        Command::Shutdown => daemon::shutdown(&socket).await,
        Command::Api(command) => {
            let client = match &cli.url {
                Some(url) => hangar_api::client::Client::tcp(daemon::tcp_address(url)?),
                None => daemon::connect(&cli.data_dir, &socket, key_file.as_deref()).await?,
            };
            through_api(&client.with_token(cli.token.clone()), command).await
        }
    }
}

/// The commands that go through the daemon's API.
async fn through_api(client: &hangar_api::client::Client, command: ApiCommand) -> Result<u8> {
    match command {
        ApiCommand::Image(cmd) => image(client, cmd).await.map(|()| 0),
        ApiCommand::Cache(cmd) => tasks::cache(client, cmd).await.map(|()| 0),
        ApiCommand::Env(cmd) => tasks::env(client, cmd).await.map(|()| 0),
        ApiCommand::Secret(cmd) => secrets::secret(client, cmd).await.map(|()| 0),
        ApiCommand::Token(cmd) => tokens::token(client, cmd).await.map(|()| 0),
        ApiCommand::Exec(args) => tasks::exec(client, args).await,
        ApiCommand::List(args) => tasks::list(client, args).await.map(|()| 0),
        ApiCommand::Status { task, json } => tasks::status(client, &task, json).await,
        ApiCommand::Wait(args) => tasks::wait(client, args).await,
        ApiCommand::Cancel { task } => tasks::cancel(client, &task).await,
        ApiCommand::Show { task, json } => tasks::show(client, task, json).await.map(|()| 0),
        ApiCommand::Logs {
            task,
            json,
            network,
            events,
            follow,
        } => {
            if network {
                tasks::network_log(client, task, json).await.map(|()| 0)
            } else if events {
                tasks::events(client, task, json).await.map(|()| 0)
            } else {
                tasks::logs(client, task, json, follow).await.map(|()| 0)
            }
        }
        ApiCommand::Diff(task) => tasks::diff(client, task).await.map(|()| 0),
        ApiCommand::Apply(task) => tasks::apply(client, task).await.map(|()| 0),
    }
}

/// Shows a long operation's progress lines, with a bar where a line counts (`layer 2/5`).
fn progress() -> impl FnMut(&str) {
    let mut status = progress::Status::new();
    move |line: &str| {
        status.line(line);
        if let Some(f) = progress::fraction(line) {
            status.step(line.to_string(), Some(f));
        }
    }
}

async fn image(client: &Client, cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Build {
            name,
            packages,
            mirror,
        } => {
            let body = BuildImage {
                name,
                packages,
                mirror,
            };
            let rec: ImageStored = client
                .operation("/v1/images/build", &body, progress())
                .await?;
            println!("{}", rec.manifest);
        }
        ImageCommand::Pull {
            reference,
            insecure,
            name,
        } => {
            let body = PullImage {
                reference,
                name,
                insecure,
            };
            let rec: ImageStored = client
                .operation("/v1/images/pull", &body, progress())
                .await?;
            println!("{}", rec.manifest);
        }
        ImageCommand::Push {
            name,
            reference,
            insecure,
        } => {
            let body = PushImage {
                name,
                reference,
                insecure,
            };
            let rec: ImageStored = client
                .operation("/v1/images/push", &body, progress())
                .await?;
            println!("{}", rec.manifest);
        }
        ImageCommand::Import { path, name } => {
            // The daemon reads the path: it runs in `/`.
            let path = std::path::absolute(&path)
                .with_context(|| format!("failed to resolve {}", path.display()))?;
            let body = ImportImage {
                path: path.display().to_string(),
                name,
            };
            let rec: ImageStored = client
                .operation("/v1/images/import", &body, progress())
                .await?;
            eprintln!("imported {}", rec.name);
            println!("{}", rec.manifest);
        }
        ImageCommand::Ls { json } => {
            let list: ImageList = client.get("/v1/images").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<32} {:<19} {:>10}  CREATED", "NAME", "DIGEST", "SIZE");
                for r in list.images {
                    println!(
                        "{:<32} {:<19} {:>10}  {}",
                        r.name,
                        r.digest.get(..19).unwrap_or(&r.digest),
                        format_bytes(r.size),
                        r.created
                    );
                }
            }
        }
        ImageCommand::Rm { name } => {
            let r: ImageRemoved = client
                .delete_json(&format!("/v1/images/{}", segment(&name)))
                .await?;
            eprintln!(
                "removed {name} ({} blobs, {} layers, {} freed)",
                r.blobs,
                r.layers,
                format_bytes(r.bytes)
            );
        }
    }
    Ok(())
}

/// Where the static hangar-init is: `HANGAR_INIT`, else beside this executable.
fn init_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("HANGAR_INIT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("failed to locate the hangar executable")?;
    Ok(exe.with_file_name("hangar-init"))
}

async fn run(store: &Store, args: RunArgs) -> Result<u8> {
    let rec = store.image(&args.image)?;
    let layers = {
        let (store, rec) = (store.clone(), rec.clone());
        tokio::task::spawn_blocking(move || hangar_image::layers(&store, &rec)).await??
    };
    let defaults = hangar_image::ImageDefaults::of(store, &rec)?;
    let mut env = defaults.env;
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("failed to read environment variable `{kv}`: expected KEY=VALUE");
        };
        hangar_image::set_var(&mut env, k, v);
    }
    let cwd = args
        .workdir
        .clone()
        .or(defaults.working_dir)
        .unwrap_or_else(|| "/".into());

    let host = HostConfig::new(store.run_dir(), init_binary()?);
    let mut spec = SandboxSpec::new(layers.iter().map(|(_, p)| p.clone()).collect());
    spec.resources = Resources {
        memory_bytes: args.memory,
        pids: args.pids,
        cpus: args.cpus,
    };
    spec.runtime = args.runtime;
    let sandbox = Sandbox::create(&host, spec).await?;
    let diff_ids: Vec<_> = layers.iter().map(|(d, _)| d.clone()).collect();
    store.lease_layers(sandbox.dir(), &diff_ids)?;

    let outcome = run_in(&sandbox, &args, env, cwd).await;
    let teardown = sandbox.destroy().await;
    let status = outcome?;
    teardown?;
    if status.oom_killed {
        let limit = args
            .memory
            .map(format_bytes)
            .unwrap_or_else(|| "the machine's".into());
        eprintln!(
            "hangar: the command was killed for running out of memory (memory limit {limit})"
        );
    }
    Ok(status.code_or_signal().clamp(0, 255) as u8)
}

async fn run_in(
    sandbox: &Sandbox,
    args: &RunArgs,
    env: Vec<(String, String)>,
    cwd: String,
) -> Result<hangar_sandbox::ExitStatus> {
    let spec = ExecSpec {
        argv: args.command.clone(),
        env,
        cwd,
        stdin: if args.interactive {
            Stdio::Piped
        } else {
            Stdio::Null
        },
        stdout: Stdio::Piped,
        stderr: Stdio::Piped,
        ..ExecSpec::default()
    };
    let mut proc = match sandbox.exec(spec).await {
        Ok(p) => p,
        Err(hangar_sandbox::SandboxError::Spawn {
            source, program, ..
        }) => {
            eprintln!("hangar: failed to run `{program}`: {source}");
            let code = if source.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return Ok(hangar_sandbox::ExitStatus {
                code: Some(code),
                signal: None,
                oom_killed: false,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let stdin_task = proc.stdin.take().map(|mut w| {
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let _ = tokio::io::copy(&mut input, &mut w).await;
            let _ = w.shutdown().await;
        })
    });
    let out = copy_out(proc.stdout.take(), false);
    let err = copy_out(proc.stderr.take(), true);
    let signals = forward_signals(&proc);
    let (status, _, _) = tokio::join!(
        async {
            let s = proc.wait().await;
            signals.abort();
            s
        },
        out,
        err
    );
    if let Some(t) = stdin_task {
        t.abort();
    }
    Ok(status?)
}

async fn copy_out(pipe: Option<tokio::net::unix::pipe::Receiver>, to_stderr: bool) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                // Unbuffered so interleaving with the other stream stays close to the source.
                let res = if to_stderr {
                    std::io::stderr().write_all(&buf[..n])
                } else {
                    std::io::stdout().write_all(&buf[..n])
                };
                if res.is_err() {
                    return;
                }
            }
        }
    }
}

/// Forwards Ctrl-C and SIGTERM to the command, as `docker run` does.
fn forward_signals(proc: &hangar_sandbox::Process) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let target = proc.signaller();
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = int.recv() => target.send(libc::SIGINT),
                _ = term.recv() => target.send(libc::SIGTERM),
            }
        }
    })
}
