//! The routes for images and the environment cache. Images belong to the installation
//! (every workspace's environments use them), so changing them is the local admin's;
//! snapshots belong to a workspace's environments. Long operations (build, pull, push,
//! import, export) answer with server-sent events: progress lines, then the result.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::{Extension, Json};
use futures_util::Stream;
use hangar_image::{BuildOptions, RegistryOptions};
use hangar_store::ImageName;
use serde::Serialize;

use crate::server::{admin_only, json_body, sse, Api, ApiError, ApiResult, Caller, JsonIn};
use crate::wire::{
    rfc3339, BuildImage, CacheGc, CacheGcReport, CacheReset, ExportResult, ExportSnapshot,
    ImageList, ImageRemoved, ImageStored, ImageSummary, ImportImage, ImportResult, ImportSnapshot,
    OpEvent, PullImage, PushImage, SnapshotList, SnapshotSummary,
};

use hangar_engine::images::Lines;

/// Runs `op` in the background, streaming its progress lines and then its result (or
/// its error, worded as any API error); the daemon counts as busy until it ends.
fn operation<F, Fut, T>(api: &Api, op: F) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>>
where
    F: FnOnce(Lines) -> Fut + Send + 'static,
    Fut: Future<Output = ApiResult<T>> + Send + 'static,
    T: Serialize,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<OpEvent>();
    let lines: Lines = {
        let tx = tx.clone();
        Arc::new(move |line: &str| {
            let _ = tx.send(OpEvent::Progress {
                line: line.to_string(),
            });
        })
    };
    let busy = api.activity.busy();
    tokio::spawn(async move {
        let _busy = busy;
        let last = match op(lines).await {
            Ok(result) => OpEvent::Done {
                result: serde_json::to_value(result).unwrap_or_default(),
            },
            Err(e) => OpEvent::Failed {
                error: e.into_info(),
            },
        };
        let _ = tx.send(last);
    });
    sse(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
}

fn image_name(name: &str) -> ApiResult<ImageName> {
    name.parse()
        .map_err(|e: hangar_store::StoreError| ApiError::bad_request(e.to_string()))
}

fn stored(rec: hangar_store::ImageRecord) -> ImageStored {
    ImageStored {
        name: rec.name.to_string(),
        manifest: rec.manifest.to_string(),
    }
}

/// The read-only image and cache operations (the web UI's too).
impl Api {
    /// The installation's images.
    pub async fn images(&self, caller: &Caller) -> ApiResult<ImageList> {
        let images = self.engine(caller).images()?;
        Ok(ImageList {
            images: images
                .into_iter()
                .map(|r| ImageSummary {
                    created: rfc3339(r.created_ms),
                    name: r.name.to_string(),
                    digest: r.manifest.to_string(),
                    size: r.size,
                })
                .collect(),
        })
    }

    /// The snapshots of the caller's environments.
    pub async fn snapshots(&self, caller: &Caller) -> ApiResult<SnapshotList> {
        let snaps = self.engine(caller).snapshots().await?;
        Ok(SnapshotList {
            snapshots: snaps
                .into_iter()
                .map(|s| SnapshotSummary {
                    built_at: rfc3339(s.created_ms),
                    expires_at: rfc3339(s.expires_ms),
                    last_used_at: rfc3339(s.last_used_ms),
                    environment: s.environment,
                    key: s.key,
                    size: s.size,
                    hits: s.hits,
                    reset: s.reset,
                    durable: s.durable,
                    source: s.source,
                })
                .collect(),
        })
    }

    /// Marks an environment's snapshots reset: the next task builds afresh.
    pub async fn reset_cache(&self, caller: &Caller, name: &str) -> ApiResult<CacheReset> {
        let reset = self.engine(caller).cache_reset(name).await?;
        Ok(CacheReset { reset })
    }
}

pub(crate) async fn list_images(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<ImageList>> {
    Ok(Json(api.images(&caller).await?))
}

pub(crate) async fn build_image(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: JsonIn<BuildImage>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    admin_only(&caller, "build images")?;
    let req = json_body(body, "the build request")?;
    let name = image_name(&req.name)?;
    let mut opts =
        BuildOptions::new(&req.name, req.from.as_deref(), &req.packages).map_err(ApiError::from)?;
    if let Some(m) = req.mirror {
        opts.sources = Some(format!("deb {m} {} main\n", opts.suite));
    }
    let engine = api.engine(&caller);
    Ok(operation(&api, move |lines| async move {
        Ok(stored(engine.build_image(name, opts, lines).await?))
    }))
}

pub(crate) async fn pull_image(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: JsonIn<PullImage>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    admin_only(&caller, "pull images")?;
    let req = json_body(body, "the pull request")?;
    let name = req.name.as_deref().map(image_name).transpose()?;
    let engine = api.engine(&caller);
    Ok(operation(&api, move |lines| async move {
        let opts = RegistryOptions {
            insecure: req.insecure,
        };
        let rec = engine
            .pull_image(&req.reference, name.as_ref(), &opts, &*lines)
            .await?;
        Ok(stored(rec))
    }))
}

pub(crate) async fn push_image(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: JsonIn<PushImage>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    admin_only(&caller, "push images")?;
    let req = json_body(body, "the push request")?;
    let engine = api.engine(&caller);
    Ok(operation(&api, move |lines| async move {
        let opts = RegistryOptions {
            insecure: req.insecure,
        };
        let digest = engine
            .push_image(&req.name, &req.reference, &opts, &*lines)
            .await?;
        Ok(ImageStored {
            name: req.name,
            manifest: digest.to_string(),
        })
    }))
}

pub(crate) async fn import_image(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: JsonIn<ImportImage>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    admin_only(&caller, "import images")?;
    let req = json_body(body, "the import request")?;
    let name = req.name.as_deref().map(image_name).transpose()?;
    let engine = api.engine(&caller);
    Ok(operation(&api, move |lines| async move {
        let path = std::path::PathBuf::from(req.path);
        Ok(stored(engine.import_image(path, name, lines).await?))
    }))
}

pub(crate) async fn remove_image(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<ImageRemoved>> {
    admin_only(&caller, "remove images")?;
    let r = api.engine(&caller).remove_image(name).await?;
    Ok(Json(ImageRemoved {
        blobs: r.blobs,
        layers: r.layers,
        bytes: r.bytes,
    }))
}

pub(crate) async fn list_snapshots(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<SnapshotList>> {
    Ok(Json(api.snapshots(&caller).await?))
}

pub(crate) async fn reset_cache(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<CacheReset>> {
    Ok(Json(api.reset_cache(&caller, &name).await?))
}

pub(crate) async fn collect_cache(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: JsonIn<CacheGc>,
) -> ApiResult<Json<CacheGcReport>> {
    admin_only(&caller, "collect the cache")?;
    let req = json_body(body, "the collection request")?;
    let r = api.engine(&caller).cache_gc(req.budget).await?;
    Ok(Json(CacheGcReport {
        snapshots: r.snapshots,
        bytes: r.bytes,
        orphans: r.orphans,
        kept: r.kept,
        harnesses: r.harnesses,
    }))
}

pub(crate) async fn export_snapshot(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: JsonIn<ExportSnapshot>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let req = json_body(body, "the export request")?;
    let engine = api.engine(&caller);
    Ok(operation(&api, move |lines| async move {
        let opts = RegistryOptions {
            insecure: req.insecure,
        };
        Ok(engine
            .cache_export(&name, &req.reference, &opts, &*lines)
            .await
            .map(ExportResult::from)?)
    }))
}

pub(crate) async fn import_snapshot(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    body: JsonIn<ImportSnapshot>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let req = json_body(body, "the import request")?;
    let engine = api.engine(&caller);
    Ok(operation(&api, move |lines| async move {
        let opts = RegistryOptions {
            insecure: req.insecure,
        };
        Ok(engine
            .cache_import(&req.reference, req.environment.as_deref(), &opts, &*lines)
            .await
            .map(ImportResult::from)?)
    }))
}
