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
use hangar_api::client::{segment, Client, ClientError, PlainHttp, RemoteOptions};
use hangar_api::wire::{
    BuildImage, ImageList, ImageRemoved, ImageStored, ImportImage, PullImage, PushImage,
};
use hangar_sandbox::RuntimeKind;
use hangar_spec::{format_bytes, parse_bytes};
use hangar_store::Store;
use tokio::io::AsyncReadExt;

mod daemon;
mod forge;
mod progress;
mod secrets;
mod signals;
mod tasks;
mod tokens;
mod ui;

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
    /// A daemon's TCP listener, instead of the local socket: `https://HOST:PORT`, or
    /// plain HTTP (`HOST:PORT`, `http://HOST:PORT`) to a loopback address.
    #[arg(long, global = true, env = "HANGAR_URL")]
    url: Option<String>,
    /// A CA certificate (PEM) that an https:// daemon's certificate may be signed by,
    /// besides the system's roots: a private CA's.
    #[arg(long, global = true, env = "HANGAR_CA")]
    ca: Option<PathBuf>,
    /// Send the bearer token over plain HTTP to an address that is not loopback (it
    /// crosses the network in clear).
    #[arg(long, global = true)]
    insecure_url: bool,
    /// A bearer token (`hangar token create`): act in its workspace.
    #[arg(
        long,
        global = true,
        env = "HANGAR_TOKEN",
        hide_env_values = true,
        value_parser = tokens::parse_token
    )]
    token: Option<hangar_secrets::Secret>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Run a command in a fresh sandbox made from an image, then remove the sandbox.
    Run(RunArgs),
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
    /// Push an attempt's diff as a branch of the environment's repository and open its
    /// pull request; prints its URL (the same attempt again: the same pull request).
    Pr(forge::PrArgs),
    /// Connect an environment to its forge (GitHub): pull requests, mentions, reviews
    /// and autofixes of failed workflow runs.
    #[command(subcommand)]
    Forge(forge::ForgeCommand),
    /// Print a one-time link that signs a browser in to the web UI as the local admin
    /// (valid 10 minutes, one use); on a desktop, open it.
    Ui {
        /// Print the daemon's answer (and open nothing).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build an image from Debian packages with mmdebstrap: a built-in one (debian-<suite>,
    /// hangar-default), or any name with --from debian-<suite> and -p packages.
    Build {
        name: String,
        /// The Debian suite to build NAME from, as debian-<suite> (e.g. debian-trixie).
        #[arg(long)]
        from: Option<String>,
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
    let is_run = matches!(cli.command, Command::Api(ApiCommand::Run(_)));
    match rt.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        // A reader that stopped early (`hangar diff X | head`) wanted no more: not a
        // failure of hangar's.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hangar: {}{}", message(&e), hint(&e));
            ExitCode::from(if is_run { 125 } else { 1 })
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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

/// What to try next, where the error alone does not say.
fn hint(e: &anyhow::Error) -> &'static str {
    let handshake = e
        .chain()
        .any(|c| matches!(c.downcast_ref(), Some(ClientError::Handshake { .. })));
    if handshake {
        " (a daemon's certificate signed by a private CA needs that CA in HANGAR_CA or --ca)"
    } else {
        ""
    }
}

async fn dispatch(cli: Cli) -> Result<u8> {
    let key_file = cli.secret_key_file.clone();
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(|| daemon::default_socket(&cli.data_dir));
    match cli.command {
        Command::Serve(args) => {
            let store = Store::open(&cli.data_dir).with_context(|| {
                format!("failed to open the data dir {}", cli.data_dir.display())
            })?;
            let mut config = hangar_engine::EngineConfig::new(store, init_binary()?);
            if let Some(path) = key_file {
                config.secret_key_file = path;
            }
            match daemon::serve(&socket, config, args).await {
                Err(e) if e.is::<daemon::AlreadyServing>() => {
                    eprintln!("hangar: {e}");
                    Ok(daemon::EXIT_ALREADY_SERVING)
                }
                served => served,
            }
        }
        Command::Shutdown => daemon::shutdown(&socket).await,
        Command::Api(command) => {
            let client = match &cli.url {
                Some(url) => {
                    let options = RemoteOptions {
                        ca: cli.ca.clone(),
                        plain_http: if cli.insecure_url {
                            PlainHttp::Anywhere
                        } else {
                            PlainHttp::LoopbackOnly
                        },
                    };
                    Client::remote(url.parse()?, &options)?
                }
                None => daemon::connect(&cli.data_dir, &socket, key_file.as_deref()).await?,
            };
            through_api(&client.with_token(cli.token.clone()), command).await
        }
    }
}

/// The commands that go through the daemon's API.
async fn through_api(client: &hangar_api::client::Client, command: ApiCommand) -> Result<u8> {
    match command {
        ApiCommand::Run(args) => run(client, args).await,
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
        ApiCommand::Ui { json } => ui::ui(client, json).await.map(|()| 0),
        ApiCommand::Pr(args) => forge::pr(client, args).await.map(|()| 0),
        ApiCommand::Forge(cmd) => forge::forge(client, cmd).await.map(|()| 0),
    }
}

/// Prints a `--json` answer: the API's own document, pretty.
pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
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
            from,
            packages,
            mirror,
        } => {
            let body = BuildImage {
                name,
                from,
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
                print_json(&list)?;
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

/// `hangar run`: the daemon makes the sandbox and runs the command; its streams come
/// back over the upgraded connection, and Ctrl-C and SIGTERM are passed on to it.
async fn run(client: &Client, args: RunArgs) -> Result<u8> {
    use hangar_api::attach::{
        read_frame, write_frame, RunExit, EXIT, SIGNAL, STDERR, STDIN, STDIN_END, STDOUT,
    };
    let spec = hangar_api::wire::RunSpec {
        image: args.image.clone(),
        argv: args.command.clone(),
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        memory_bytes: args.memory,
        pids: args.pids,
        cpus: args.cpus,
        runtime: Some(args.runtime.into()),
        stdin: args.interactive,
    };
    let path = format!(
        "/v1/run{}",
        hangar_api::client::query(&[("spec", Some(serde_json::to_string(&spec)?))])
    );
    // Installed before the command can print anything: a caller that signals once it has
    // seen output must reach the command, never hangar's default action (which would end
    // hangar and leave the command running).
    let stop = signals::StopSignals::new();
    let io = client.upgrade(&path, hangar_api::attach::PROTOCOL).await?;
    let (mut from_daemon, to_daemon) = tokio::io::split(io);
    let to_daemon = std::sync::Arc::new(tokio::sync::Mutex::new(to_daemon));
    let stdin_task = args.interactive.then(|| {
        let to_daemon = to_daemon.clone();
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = input.read(&mut buf).await.unwrap_or(0);
                let mut w = to_daemon.lock().await;
                if n == 0 {
                    let _ = write_frame(&mut *w, STDIN_END, &[]).await;
                    return;
                }
                if write_frame(&mut *w, STDIN, &buf[..n]).await.is_err() {
                    return;
                }
            }
        })
    });
    let signals = {
        let to_daemon = to_daemon.clone();
        tokio::spawn(async move {
            let Some(mut signals) = stop else {
                return;
            };
            loop {
                let n = signals.next().await;
                let _ = write_frame(&mut *to_daemon.lock().await, SIGNAL, &n.to_be_bytes()).await;
            }
        })
    };
    let mut exit = None;
    while let Some((kind, data)) = read_frame(&mut from_daemon)
        .await
        .context("failed to read the command's output from the daemon")?
    {
        // Unbuffered, so the two streams interleave close to how the command wrote them.
        match kind {
            STDOUT => std::io::stdout().write_all(&data)?,
            STDERR => std::io::stderr().write_all(&data)?,
            EXIT => {
                exit = Some(serde_json::from_slice::<RunExit>(&data)?);
                break;
            }
            _ => {}
        }
    }
    signals.abort();
    if let Some(t) = stdin_task {
        t.abort();
    }
    let Some(exit) = exit else {
        bail!("failed to run the command: the daemon closed the connection before it ended");
    };
    if let Some(m) = &exit.message {
        eprintln!("hangar: {m}");
    }
    if exit.oom_killed {
        let limit = args
            .memory
            .map(format_bytes)
            .unwrap_or_else(|| "the machine's".into());
        eprintln!(
            "hangar: the command was killed for running out of memory (memory limit {limit})"
        );
    }
    let code = match (exit.code, exit.signal) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 125,
    };
    Ok(code.clamp(0, 255) as u8)
}
