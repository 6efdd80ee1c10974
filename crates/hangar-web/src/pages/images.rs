//! The images and the cache, read-only: images belong to the installation (changed only
//! by the local admin, from the CLI), snapshots to the workspace's environments.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Router};
use hangar_api::Api;
use maud::html;

use super::{answer, bytes, time, OrPage, Page};
use crate::auth::Session;
use crate::layout::{page, Section};

pub(super) fn routes() -> Router<Api> {
    Router::new().route("/ui/images", get(show))
}

async fn show(State(api): State<Api>, Extension(s): Extension<Session>) -> Page {
    let (images, snapshots) = tokio::try_join!(api.images(&s.caller), api.snapshots(&s.caller))
        .or_page(&s, Section::Images)?;
    let body = html! {
        h2 { "Images" }
        @if images.images.is_empty() {
            p.empty { "No images." }
        } @else {
            div.scroll {
                table #images {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Digest" } th scope="col" { "Size" } th scope="col" { "Created" } } }
                    tbody {
                        @for i in &images.images {
                            tr {
                                td { (i.name) }
                                td { code title=(i.digest) { (i.digest.chars().take(19).collect::<String>()) } }
                                td { (bytes(i.size)) }
                                td { (time(&i.created)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Cache" }
        @if snapshots.snapshots.is_empty() {
            p.empty { "No snapshots." }
        } @else {
            div.scroll {
                table #snapshots {
                    thead { tr {
                        th scope="col" { "Environment" } th scope="col" { "Snapshot" } th scope="col" { "Built" }
                        th scope="col" { "Last used" } th scope="col" { "Expires" } th scope="col" { "Hits" }
                        th scope="col" { "Size" } th scope="col" { "State" }
                    } }
                    tbody {
                        @for sn in &snapshots.snapshots {
                            tr {
                                td { a href={ "/ui/environments/" (sn.environment) } { (sn.environment) } }
                                td { code { (sn.key.chars().take(12).collect::<String>()) } }
                                td { (time(&sn.built_at)) }
                                td { (time(&sn.last_used_at)) }
                                td { (time(&sn.expires_at)) }
                                td { (sn.hits) }
                                td { (bytes(sn.size)) }
                                td { @if sn.reset { "reset" } @else if sn.durable { "current" } @else { "being written" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(answer(
        StatusCode::OK,
        page("Images and cache", Section::Images, Some(&s), body),
    ))
}
