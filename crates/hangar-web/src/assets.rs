//! The UI's static files, embedded in the binary: the vendored front-end libraries (see
//! `scripts/vendor-web` and `assets/vendor/SHA256SUMS`), hangar's own script and style.
//! Served under a name that carries the content's hash, so they are cached for good.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hangar_api::Api;

struct Asset {
    name: &'static str,
    kind: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
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

pub(crate) fn routes() -> Router<Api> {
    Router::new().route("/ui/assets/{name}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            a.body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

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
}
