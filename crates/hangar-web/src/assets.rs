//! The UI's static files, embedded in the binary: the vendored front-end libraries (see
//! `scripts/vendor-web` and `assets/vendor/SHA256SUMS`), hangar's own script and style.
//! Pages link them with their content's hash in the URL, so a browser may keep them for
//! good and still gets a new build's files at once.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hangar_api::Api;
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    kind: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "hangar.css",
        kind: "text/css",
        body: include_bytes!("../assets/hangar.css"),
    },
    Asset {
        name: "diff.css",
        kind: "text/css",
        body: include_bytes!("../assets/diff.css"),
    },
    Asset {
        name: "hangar.js",
        kind: "text/javascript",
        body: include_bytes!("../assets/hangar.js"),
    },
    Asset {
        name: "htmx.js",
        kind: "text/javascript",
        body: include_bytes!("../assets/vendor/htmx-2.0.11.min.js"),
    },
    Asset {
        name: "htmx-sse.js",
        kind: "text/javascript",
        body: include_bytes!("../assets/vendor/htmx-ext-sse-2.2.4.min.js"),
    },
];

/// Each asset's URL, with the first 16 hex digits of its SHA-256.
static URLS: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let hash = hex::encode(&Sha256::digest(a.body)[..8]);
            (a.name, format!("/ui/assets/{}?v={hash}", a.name))
        })
        .collect()
});

/// The URL a page links asset `name` by.
pub(crate) fn url(name: &str) -> &'static str {
    URLS.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, u)| u.as_str())
        .unwrap_or_else(|| panic!("no asset is named {name}"))
}

pub(crate) fn routes() -> Router<Api> {
    Router::new().route("/ui/assets/{name}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.kind),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            a.body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded libraries are the ones `SHA256SUMS` pins (what `scripts/vendor-web`
    /// fetched), byte for byte.
    #[test]
    fn vendored_files_match_their_pins() {
        let sums = include_str!("../assets/vendor/SHA256SUMS");
        let files: &[(&str, &[u8])] = &[
            (
                "htmx-2.0.11.min.js",
                include_bytes!("../assets/vendor/htmx-2.0.11.min.js"),
            ),
            (
                "htmx-ext-sse-2.2.4.min.js",
                include_bytes!("../assets/vendor/htmx-ext-sse-2.2.4.min.js"),
            ),
        ];
        assert_eq!(sums.lines().count(), files.len());
        for (name, body) in files {
            let want = sums
                .lines()
                .filter_map(|l| l.split_once("  "))
                .find(|(_, n)| n == name)
                .map(|(sum, _)| sum)
                .unwrap_or_else(|| panic!("{name} is not pinned in SHA256SUMS"));
            assert_eq!(hex::encode(Sha256::digest(body)), want, "{name}");
        }
    }

    #[test]
    fn every_asset_has_a_url_that_changes_with_its_content() {
        for a in ASSETS {
            let u = url(a.name);
            let hash = hex::encode(&Sha256::digest(a.body)[..8]);
            assert_eq!(u, format!("/ui/assets/{}?v={hash}", a.name));
        }
    }
}
