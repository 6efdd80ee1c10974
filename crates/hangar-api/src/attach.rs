//! `POST /v1/run`: a one-off command in a fresh sandbox made from an image, with its
//! streams carried over the upgraded connection (`Upgrade: hangar-run`) in frames: a
//! kind byte, a big-endian u32 length, the payload. The client sends stdin, its end and
//! signals; the daemon sends stdout, stderr and, last, how the command exited.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hangar_engine::run::Started;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::server::{admin_only, Api, ApiError, ApiResult, Caller};
pub use crate::wire::RunExit;
use crate::wire::RunSpec;

/// The protocol named in the `Upgrade` header.
pub const PROTOCOL: &str = "hangar-run";

/// Client to daemon: bytes for the command's stdin.
pub const STDIN: u8 = 1;
/// Client to daemon: stdin has ended.
pub const STDIN_END: u8 = 2;
/// Client to daemon: a signal for the command (payload: the number, i32 big-endian).
pub const SIGNAL: u8 = 3;
/// Daemon to client: bytes the command wrote to stdout.
pub const STDOUT: u8 = 4;
/// Daemon to client: bytes the command wrote to stderr.
pub const STDERR: u8 = 5;
/// Daemon to client, last: a [`RunExit`] as JSON.
pub const EXIT: u8 = 6;

/// Frames larger than this are refused (a stream chunk is at most 64 KiB).
const MAX_FRAME: u32 = 1 << 20;

pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// The next frame; `None` at a clean end of the stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    Ok(Some((head[0], payload)))
}

/// The last frame: how the command ended.
async fn send_exit<W: AsyncWrite + Unpin>(w: &mut W, exit: &RunExit) -> std::io::Result<()> {
    let json = serde_json::to_vec(exit).expect("an exit serializes");
    write_frame(w, EXIT, &json).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunQuery {
    /// The [`RunSpec`] as JSON.
    spec: String,
}

pub(crate) async fn run_command(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    q: crate::server::QueryIn<RunQuery>,
    mut req: axum::extract::Request,
) -> ApiResult<Response> {
    admin_only(&caller, "run commands")?;
    let q = crate::server::query(q)?;
    let spec: RunSpec = serde_json::from_str(&q.spec)
        .map_err(|e| ApiError::bad_request(format!("failed to read the command: {e}")))?;
    let Some(upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ApiError::bad_request(format!(
            "failed to run the command: the request must ask for `Upgrade: {PROTOCOL}`"
        )));
    };
    let started = api.runner.engine().start_run(&spec.into()).await?;
    let busy = api.activity.busy();
    tokio::spawn(async move {
        let _busy = busy;
        match upgrade.await {
            Ok(upgraded) => pump(TokioIo::new(upgraded), started).await,
            Err(e) => {
                tracing::warn!("a run's connection was not upgraded: {e}");
                if let Started::Running(r) = started {
                    let _ = r.finish().await;
                }
            }
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::CONNECTION, "upgrade"), (header::UPGRADE, PROTOCOL)],
    )
        .into_response())
}

/// Carries the command's streams over the connection until it exits, tears its sandbox
/// down, then tells the exit. A client that goes away gets the command killed.
async fn pump<S: AsyncRead + AsyncWrite + Send + 'static>(io: S, started: Started) {
    let (mut from_client, mut to_client) = tokio::io::split(io);
    let mut running = match started {
        Started::Running(r) => r,
        Started::NotExecuted { code, message } => {
            let exit = RunExit {
                code: Some(code),
                message: Some(message),
                ..RunExit::default()
            };
            let _ = send_exit(&mut to_client, &exit).await;
            return;
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(16);
    let copy = |pipe: Option<tokio::net::unix::pipe::Receiver>, kind: u8| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Some(mut pipe) = pipe else { return };
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send((kind, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
    };
    let out = copy(running.process.stdout.take(), STDOUT);
    let err = copy(running.process.stderr.take(), STDERR);
    drop(tx);
    let writer = tokio::spawn(async move {
        while let Some((kind, data)) = rx.recv().await {
            if write_frame(&mut to_client, kind, &data).await.is_err() {
                return None;
            }
        }
        Some(to_client)
    });
    let mut stdin = running.process.stdin.take();
    let signaller = running.process.signaller();
    let reader = tokio::spawn(async move {
        loop {
            match read_frame(&mut from_client).await {
                Ok(Some((STDIN, data))) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Ok(Some((STDIN_END, _))) => stdin = None,
                Ok(Some((SIGNAL, n))) if n.len() == 4 => {
                    signaller.send(i32::from_be_bytes([n[0], n[1], n[2], n[3]]));
                }
                Ok(Some(_)) => {}
                // The client went away: the command has nobody to answer to.
                Ok(None) | Err(_) => {
                    signaller.send(libc::SIGKILL);
                    return;
                }
            }
        }
    });
    let status = running.process.wait().await;
    let _ = tokio::join!(out, err);
    reader.abort();
    let exit = match status {
        Ok(s) => RunExit {
            code: s.code,
            signal: s.signal,
            oom_killed: s.oom_killed,
            message: None,
        },
        Err(e) => RunExit {
            message: Some(e.to_string()),
            ..RunExit::default()
        },
    };
    // Torn down before the exit is told: a script that checks right after `hangar run`
    // returns finds nothing of the sandbox left.
    if let Err(e) = running.finish().await {
        tracing::warn!("a run's sandbox was not fully torn down: {e}");
    }
    if let Ok(Some(mut to_client)) = writer.await {
        let _ = send_exit(&mut to_client, &exit).await;
        let _ = to_client.shutdown().await;
    }
}
