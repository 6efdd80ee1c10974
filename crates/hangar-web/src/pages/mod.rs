//! The UI's pages: each handler makes the API calls its page needs, as the signed-in
//! caller, and renders their wire documents. Errors become a page that says what failed
//! with the API's own status and message.

mod envs;
mod images;
mod tasks;

use axum::response::{IntoResponse, Response};
use axum::Router;
use hangar_api::{Api, ApiError};
use maud::{html, Markup};

use crate::auth::Session;
pub(crate) use crate::layout::{answer, see_other};
use crate::layout::{failure, Section};

/// Every page and fragment behind the sign-in.
pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .merge(tasks::routes())
        .merge(envs::routes())
        .merge(images::routes())
        .route("/ui/{*rest}", axum::routing::any(no_such_page))
}

async fn no_such_page(
    axum::Extension(s): axum::Extension<Session>,
    uri: axum::http::Uri,
) -> Response {
    let e = ApiError::not_found(format!("failed to find the page {}", uri.path()));
    error_page(&s, Section::Tasks, &e)
}

/// What a page handler answers: the page, or the page saying what failed.
pub(crate) type Page = Result<Response, Failed>;

/// The page that says what failed (boxed: a response is large, and most answers are not
/// failures).
pub(crate) struct Failed(Box<Response>);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// Turns an API error into the page that shows it.
pub(crate) trait OrPage<T> {
    fn or_page(self, s: &Session, section: Section) -> Result<T, Failed>;
}

impl<T> OrPage<T> for Result<T, ApiError> {
    fn or_page(self, s: &Session, section: Section) -> Result<T, Failed> {
        self.map_err(|e| Failed(Box::new(error_page(s, section, &e))))
    }
}

pub(crate) fn error_page(s: &Session, section: Section, e: &ApiError) -> Response {
    failure(e.status(), section, Some(s), e.message())
}

/// A time as its UTC text, marked for the viewer's zone (the page's script rewrites it).
pub(crate) fn time(rfc3339: &str) -> Markup {
    let shown = chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| rfc3339.to_string());
    html! { time datetime=(rfc3339) { (shown) } }
}

/// A time as how long ago it was (the script keeps it current, in the viewer's zone).
pub(crate) fn age(rfc3339: &str) -> Markup {
    let ago = chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            hangar_spec::format_ago(
                chrono::Utc::now()
                    .signed_duration_since(t)
                    .num_milliseconds(),
            )
        })
        .unwrap_or_default();
    html! { time.age datetime=(rfc3339) title=(rfc3339) { (ago) } }
}

/// A size in bytes, as the CLI shows it too.
pub(crate) fn bytes(n: impl TryInto<u64>) -> String {
    hangar_spec::format_bytes(n.try_into().unwrap_or(0))
}

/// A status word, styled by what it means.
pub(crate) fn status(word: &str) -> Markup {
    html! { span class={ "badge status-" (word) } { (word) } }
}

/// An optional form value: empty means absent.
pub(crate) fn given(v: &str) -> Option<String> {
    Some(v.trim()).filter(|v| !v.is_empty()).map(str::to_string)
}

/// A form's choice of one of hangar's words (a status, a harness): none when empty, a
/// 400 naming the field and the words it may be otherwise.
pub(crate) fn word<T: std::str::FromStr<Err = String>>(
    field: &str,
    v: &str,
) -> Result<Option<T>, ApiError> {
    given(v)
        .map(|v| {
            v.parse()
                .map_err(|e| ApiError::bad_request(format!("failed to read {field}: {e}")))
        })
        .transpose()
}

/// A textarea's text as a program reads it: browsers send its line breaks as CRLF, and
/// a script with `\r` in it fails in bash.
pub(crate) fn unix_lines(text: &str) -> String {
    text.replace("\r\n", "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_show_utc_and_carry_their_instant() {
        let t = time("2026-12-02T06:07:08.000Z").into_string();
        assert_eq!(
            t,
            r#"<time datetime="2026-12-02T06:07:08.000Z">2026-12-02 06:07:08 UTC</time>"#
        );
        // Text that is not a time is shown as it is, escaped.
        assert!(time("<b>").into_string().contains("&lt;b&gt;"));
    }
}

/// What the pages' tests feed them: text a hostile agent or repository could put in a
/// prompt, a log, a file name or a message, and the check that it stayed text.
#[cfg(test)]
pub(crate) mod hostile {
    pub(crate) const SCRIPT: &str = "<script>window.__x=1</script>";
    pub(crate) const ATTRIBUTE: &str = r#""><img src=x onerror="window.__x=2">"#;
    pub(crate) const URL: &str = "javascript:alert(1)";

    /// All three, one after another.
    pub(crate) fn all() -> String {
        format!("{SCRIPT} {ATTRIBUTE} {URL}")
    }

    /// `html` holds the hostile text only as text: no element or attribute came of it,
    /// no link or source is a `javascript:` URL, and the text itself is there, escaped.
    pub(crate) fn assert_inert(html: &str) {
        assert!(!html.contains("<script"), "a script element in {html}");
        assert!(!html.contains("<img"), "an img element in {html}");
        assert!(
            !html.contains("onerror=\"window"),
            "an attribute broke out in {html}"
        );
        for attr in ["href=\"", "src=\"", "action=\"", "hx-get=\""] {
            for (i, _) in html.match_indices(attr) {
                let value = &html[i + attr.len()..];
                assert!(
                    !value
                        .trim_start()
                        .to_ascii_lowercase()
                        .starts_with("javascript:"),
                    "a javascript: URL in {attr} of {html}"
                );
            }
        }
        assert!(
            html.contains("&lt;script&gt;window.__x=1&lt;/script&gt;"),
            "the text is not shown in {html}"
        );
    }
}
