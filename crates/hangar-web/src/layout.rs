//! The frame every page shares: head (style, scripts, htmx's settings), the header with
//! the workspace and the navigation, and the sign-out form.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use crate::assets;
use crate::auth::Session;

/// Which part of the UI a page belongs to, for the navigation's current link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Tasks,
    Environments,
    Images,
    SignIn,
}

/// htmx's settings: nothing evaluated from attributes, no injected style or script (the
/// Content-Security-Policy refuses both anyway).
const HTMX_CONFIG: &str = r#"{"allowEval":false,"allowScriptTags":false,"includeIndicatorStyles":false,"selfRequestsOnly":true,"historyCacheSize":0}"#;

/// A whole page: `title` in the tab and as the heading, `body` below the header.
pub(crate) fn page(
    title: &str,
    section: Section,
    session: Option<&Session>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=(HTMX_CONFIG);
                title { (title) " · hangar" }
                link rel="stylesheet" href=(assets::url("hangar.css"));
                link rel="stylesheet" href=(assets::url("diff.css"));
                script src=(assets::url("htmx.js")) defer {}
                script src=(assets::url("htmx-sse.js")) defer {}
                script src=(assets::url("hangar.js")) defer {}
            }
            body hx-headers=[session.map(|s| format!(r#"{{"X-CSRF-Token":"{}"}}"#, s.csrf))] {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/tasks" { "hangar" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            (nav_link("/ui/tasks", "Tasks", section == Section::Tasks))
                            (nav_link("/ui/environments", "Environments", section == Section::Environments))
                            (nav_link("/ui/images", "Images and cache", section == Section::Images))
                        }
                        span.workspace title="workspace" { (s.caller.workspace().to_string()) }
                        form #sign-out method="post" action="/ui/sign-out" {
                            (csrf_field(&s.csrf))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn nav_link(href: &str, text: &str, current: bool) -> Markup {
    html! {
        a href=(href) aria-current=[current.then_some("page")] { (text) }
    }
}

/// The hidden field a form carries its session's CSRF token in.
pub(crate) fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

/// A whole page, as an answer.
pub(crate) fn answer(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A redirect after a form's POST (so a reload does not post it again), or to where a
/// browser belongs. `to` is built from names the API checked; one a header cannot hold
/// lands on the task list rather than failing a request that already succeeded.
pub(crate) fn see_other(to: &str) -> Response {
    let location =
        HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/ui/tasks"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// The page that says what failed: `message` (safe to show) under a title that says
/// what kind of failure it is; without a session, with the way back to the tasks.
pub(crate) fn failure(
    status: StatusCode,
    section: Section,
    session: Option<&Session>,
    message: &str,
) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::UNAUTHORIZED => "Not signed in",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::CONFLICT => "Not now",
        StatusCode::PAYLOAD_TOO_LARGE => "Too large",
        s if s.is_server_error() => "Something went wrong",
        _ => "Not done",
    };
    let body = html! {
        p.error role="alert" { (message) }
        @if session.is_none() {
            p { a href="/ui/tasks" { "Back to the tasks" } }
        }
    };
    answer(status, page(title, section, session, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_a_header_cannot_hold_lands_on_the_task_list() {
        let r = see_other("/ui/environments/web#secrets");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/ui/environments/web#secrets");
        let r = see_other("/ui/environments/a\r\nSet-Cookie: x=1");
        assert_eq!(r.headers()["location"], "/ui/tasks");
    }
}
