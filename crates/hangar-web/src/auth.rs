//! Signing in to the web UI: a workspace token or a one-time link becomes a session
//! cookie; every page's request is checked against it, and every form against its
//! CSRF token.
//!
//! The cookie holds the session's secret (HttpOnly, SameSite=Strict, Path=/ui, Secure on
//! a TLS listener). A request that changes something must also carry the session's CSRF
//! token (form field `csrf` or header `X-CSRF-Token`), and an `Origin` it names must be
//! this site: SameSite keeps the cookie off other sites' requests in today's browsers, the
//! token and the origin keep it so in any. No token, code or secret is logged or echoed.

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use hangar_api::wire::Secret;
use hangar_api::{Api, ApiError, Caller, SignedIn};
use maud::html;
use serde::Deserialize;

use crate::layout::{answer, failure, page, see_other, Section};

/// A signed-in browser: who it is (as the API sees it) and the token its forms carry.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) caller: Caller,
    /// The value every form and every htmx request must send back (`csrf` field or
    /// `X-CSRF-Token` header).
    pub(crate) csrf: String,
    /// The cookie's secret, for asking again whether the session lives.
    cookie: Secret,
}

impl Session {
    /// Whether the session still lives (not signed out, expired, or its token removed):
    /// what a long answer, a log stream, asks as it goes on.
    pub(crate) async fn alive(&self, api: &Api) -> bool {
        matches!(api.session(self.cookie.expose_str()).await, Ok(Some(_)))
    }
}

/// The session cookie's name.
const COOKIE: &str = "hangar_session";

/// Where a browser without a session is sent, and where one lands after signing in.
const SIGN_IN: &str = "/ui/sign-in";
const LANDING: &str = "/ui/tasks";

/// The most of a form body [`require`] reads to find its CSRF token (axum's own default
/// for a form).
const FORM_LIMIT: usize = 2 << 20;

/// What every /ui answer may load and do: its own scripts, styles and requests only,
/// never framed, and no form sent elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The sign-in and sign-out routes; sign-out is behind [`require`] as every page is.
pub(crate) fn routes(api: &Api) -> Router<Api> {
    Router::new()
        .route(SIGN_IN, get(sign_in_page).post(sign_in))
        .route(
            "/ui/sign-out",
            post(sign_out).route_layer(from_fn_with_state(api.clone(), require)),
        )
}

/// Adds the security headers to every /ui answer: the Content-Security-Policy above, no
/// content sniffing, no `Referer` to another site (a one-time link's code must not leave
/// in one), and `no-store` on whatever does not set its own caching (pages, redirects,
/// errors).
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends `Origin:
    // null` with a form's POST, which the origin check must refuse. Either way nothing
    // of a URL (a one-time link's code) leaves this site in a Referer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The middleware every page but sign-in is behind: the cookie's session becomes the
/// request's [`Session`] extension, else the browser is sent to sign in (303, or for
/// htmx an `HX-Redirect`, since htmx would follow a 303 in place). A request that
/// changes something must carry the session's CSRF token and, when it names an
/// `Origin`, come from this site; else it is refused with a 403 page.
pub(crate) async fn require(State(api): State<Api>, req: Request, next: Next) -> Response {
    let Some(cookie) = session_cookie(req.headers()) else {
        return to_sign_in(req.headers());
    };
    let Ok(secret) = Secret::new(cookie.as_bytes().to_vec()) else {
        return to_sign_in(req.headers());
    };
    let session = match api.session(cookie).await {
        Ok(Some(s)) => Session {
            caller: s.caller,
            csrf: s.csrf,
            cookie: secret,
        },
        Ok(None) => return to_sign_in(req.headers()),
        Err(e) => return api_error_page(&e),
    };
    let mut req = if changes_something(req.method()) {
        if !same_origin(&api, req.headers()) {
            return forbidden(
                "failed to accept the request: it comes from another site (its Origin is not \
                 this one's)",
            );
        }
        match with_csrf(req, &session.csrf).await {
            Ok(req) => req,
            Err(resp) => return resp,
        }
    } else {
        req
    };
    req.extensions_mut().insert(session);
    next.run(req).await
}

fn changes_something(m: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(m)
}

/// The session cookie's value, if the request carries exactly one. A browser that
/// sends two holds one it did not get from here: cookies do not tell ports or sibling
/// hosts apart, so another site on this host can set one with a longer path, which the
/// browser sends first, and swap its own session in for some pages. Neither is trusted.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='));
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    Some(first).filter(|v| !v.is_empty())
}

/// Sends a browser without a session to the sign-in page.
fn to_sign_in(headers: &HeaderMap) -> Response {
    let htmx = headers
        .get("hx-request")
        .is_some_and(|v| v.as_bytes() == b"true");
    if htmx {
        (
            StatusCode::UNAUTHORIZED,
            [(header::HeaderName::from_static("hx-redirect"), SIGN_IN)],
        )
            .into_response()
    } else {
        see_other(SIGN_IN)
    }
}

/// Whether the request's `Origin`, when it has one, is this site (the scheme this
/// listener speaks, and the request's `Host`).
fn same_origin(api: &Api, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let scheme = if api.is_tls() { "https" } else { "http" };
    origin
        .to_str()
        .is_ok_and(|o| o.eq_ignore_ascii_case(&format!("{scheme}://{host}")))
}

/// The request again, once its CSRF token is found equal to `csrf`: in the
/// `X-CSRF-Token` header, else in the `csrf` field of a form body (read, then handed on
/// whole).
async fn with_csrf(req: Request, csrf: &str) -> Result<Request, Response> {
    let refused = || {
        forbidden(
            "failed to accept the form: its CSRF token is missing or wrong (reload the page \
             and try again)",
        )
    };
    if let Some(sent) = req.headers().get("x-csrf-token") {
        return if same(sent.as_bytes(), csrf.as_bytes()) {
            Ok(req)
        } else {
            Err(refused())
        };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(refused());
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return Err(failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            Section::SignIn,
            None,
            "failed to read the form: it is larger than 2 MiB",
        ));
    };
    let found = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .is_some_and(|(_, v)| same(v.as_bytes(), csrf.as_bytes()));
    if !found {
        return Err(refused());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Equal bytes, in a time that does not depend on where they first differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    a.len() == b.len() && diff == 0
}

/// The session cookie's Set-Cookie header; `None` for a value a header cannot hold
/// (never a secret the engine made).
fn cookie_header(value: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    let mut v = HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/ui; Max-Age={max_age}{secure}"
    ))
    .ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// Signed in: the cookie (the session's secret, this once), and on to the tasks.
fn signed_in(api: &Api, signed: &SignedIn) -> Response {
    let Some(cookie) = cookie_header(
        signed.cookie.expose_str(),
        signed.max_age.as_secs(),
        api.is_tls(),
    ) else {
        return failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            Section::SignIn,
            None,
            "failed to sign in: the session's cookie could not be written",
        );
    };
    let mut resp = see_other(LANDING);
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    resp
}

#[derive(Deserialize)]
struct SignInQuery {
    code: Option<String>,
}

/// `GET /ui/sign-in`: the form; with `?code=` (a link from `hangar ui`), the code is
/// redeemed into a session at once. A browser that is signed in already goes on.
async fn sign_in_page(
    State(api): State<Api>,
    headers: HeaderMap,
    query: Result<Query<SignInQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let code = query.ok().and_then(|Query(q)| q.code);
    if let Some(code) = code {
        // Not redeemed by this GET: a link previewer or a prefetch would use it up.
        return link_form(&code);
    }
    if let Some(cookie) = session_cookie(&headers) {
        if let Ok(Some(_)) = api.session(cookie).await {
            return see_other(LANDING);
        }
    }
    sign_in_form(StatusCode::OK, None)
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
    /// A one-time link's code, sent by the link's page.
    #[serde(default)]
    code: String,
}

/// `POST /ui/sign-in`: a workspace token becomes a session. The form is the only one
/// without a CSRF token (there is no session yet), so its origin is checked: another
/// site cannot sign a browser in to a workspace of its choosing.
async fn sign_in(
    State(api): State<Api>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if !same_origin(&api, &headers) {
        return forbidden(
            "failed to sign in: the form was sent from another site (its Origin is not this one's)",
        );
    }
    let Ok(Form(form)) = form else {
        return sign_in_form(
            StatusCode::BAD_REQUEST,
            Some("failed to sign in: the form could not be read (send it from the sign-in page)"),
        );
    };
    let signed = if form.code.is_empty() {
        api.sign_in(form.token.trim()).await
    } else {
        api.redeem(form.code.trim()).await
    };
    match signed {
        Ok(signed) => signed_in(&api, &signed),
        Err(e) => sign_in_form(e.status(), Some(e.message())),
    }
}

/// `POST /ui/sign-out`: the session ends, its cookie is cleared.
async fn sign_out(
    State(api): State<Api>,
    Extension(_session): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    if let Some(cookie) = session_cookie(&headers) {
        if let Err(e) = api.sign_out(cookie).await {
            return api_error_page(&e);
        }
    }
    let mut resp = see_other(SIGN_IN);
    if let Some(cleared) = cookie_header("", 0, api.is_tls()) {
        resp.headers_mut().insert(header::SET_COOKIE, cleared);
    }
    resp
}

/// The sign-in page, with `error` (a message safe to show) above the form.
fn sign_in_form(status: StatusCode, error: Option<&str>) -> Response {
    let body = html! {
        @if let Some(e) = error {
            p.error role="alert" { (e) }
        }
        form #sign-in method="post" action=(SIGN_IN) {
            label for="token" { "Workspace token" }
            input #token type="password" name="token" autocomplete="off" required autofocus;
            button type="submit" { "Sign in" }
        }
        p.hint {
            "A token comes from " code { "hangar token create" } "; on the daemon's host, "
            code { "hangar ui" } " prints a one-time link that signs you in as its admin."
        }
    };
    answer(status, page("Sign in", Section::SignIn, None, body))
}

/// A one-time link's page: one button that posts its code (from this site, so the
/// cookie it sets is this site's, and a link previewer that fetches the URL uses up
/// nothing).
fn link_form(code: &str) -> Response {
    let body = html! {
        form #sign-in-link method="post" action=(SIGN_IN) {
            input type="hidden" name="code" value=(code);
            p { "This link signs this browser in as the local admin of this hangar, once." }
            button type="submit" autofocus { "Sign in" }
        }
    };
    answer(StatusCode::OK, page("Sign in", Section::SignIn, None, body))
}

fn forbidden(message: &str) -> Response {
    failure(StatusCode::FORBIDDEN, Section::SignIn, None, message)
}

/// An API error as a page: its status and its message (a 5xx's says nothing inside).
fn api_error_page(e: &ApiError) -> Response {
    failure(e.status(), Section::SignIn, None, e.message())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::Request;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn equal_bytes_only_are_the_same() {
        assert!(same(b"abc", b"abc"));
        assert!(same(b"", b""));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"ab", b"abc"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(
            session_cookie(&headers("a=1; hangar_session=hgs_x; b=2")),
            Some("hgs_x")
        );
        assert_eq!(session_cookie(&headers("hangar_session_old=y")), None);
        assert_eq!(session_cookie(&headers("hangar_session=")), None);
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    /// An API over an empty data dir (no root needed), and a session of workspace
    /// `team` made from a token: its cookie header and CSRF token.
    async fn signed_in_api() -> (tempfile::TempDir, Api, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let store = hangar_store::Store::open(dir.path()).unwrap();
        let engine = hangar_engine::Engine::open(hangar_engine::EngineConfig::new(
            store,
            "/nonexistent/hangar-init".into(),
        ))
        .await
        .unwrap();
        let api = Api {
            runner: hangar_engine::runner::Runner::new(Arc::new(engine)),
            listener: hangar_api::Listener::Remote { tls: false },
            activity: hangar_api::Activity::default(),
            sites: Arc::from(Vec::<String>::new()),
        };
        let token = api.runner.engine().create_token("team").await.unwrap();
        let signed = api.sign_in(token.token.expose_str()).await.unwrap();
        let secret = signed.cookie.expose_str().to_string();
        let csrf = api.session(&secret).await.unwrap().unwrap().csrf;
        (dir, api, format!("{COOKIE}={secret}"), csrf)
    }

    /// A router with one page behind [`require`] that answers with what it was given:
    /// the session's workspace and the body it read.
    fn behind_require(api: &Api) -> Router {
        async fn show(Extension(s): Extension<Session>, body: String) -> Response {
            format!("{} {body}", s.caller.workspace()).into_response()
        }
        Router::new()
            .route("/ui/page", get(show).post(show))
            .route_layer(from_fn_with_state(api.clone(), require))
            .with_state(api.clone())
    }

    async fn call(router: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let resp = router.clone().oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn require_gives_the_page_its_session_or_sends_the_browser_to_sign_in() {
        let (_d, api, cookie, _csrf) = signed_in_api().await;
        let router = behind_require(&api);
        let get = |cookie: Option<&str>, htmx: bool| {
            let mut r = Request::get("/ui/page");
            if let Some(c) = cookie {
                r = r.header(header::COOKIE, c);
            }
            if htmx {
                r = r.header("hx-request", "true");
            }
            r.body(Body::empty()).unwrap()
        };

        let (status, _, body) = call(&router, get(Some(&cookie), false)).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "team "));

        for c in [None, Some("hangar_session=hgs_nosuchsession")] {
            let (status, headers, _) = call(&router, get(c, false)).await;
            assert_eq!(status, StatusCode::SEE_OTHER, "{c:?}");
            assert_eq!(headers[header::LOCATION], "/ui/sign-in");
            let (status, headers, _) = call(&router, get(c, true)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{c:?}");
            assert_eq!(headers["hx-redirect"], "/ui/sign-in");
            assert!(headers.get(header::LOCATION).is_none());
        }
    }

    #[tokio::test]
    async fn require_lets_a_change_through_only_with_the_csrf_token_from_this_site() {
        let (_d, api, cookie, csrf) = signed_in_api().await;
        let router = behind_require(&api);
        let post = |form: Option<String>, header: Option<&str>, origin: Option<&str>| {
            let mut r = Request::post("/ui/page")
                .header(header::COOKIE, &cookie)
                .header(header::HOST, "hangar.test:7700");
            if let Some(h) = header {
                r = r.header("x-csrf-token", h);
            }
            if let Some(o) = origin {
                r = r.header(header::ORIGIN, o);
            }
            match form {
                Some(f) => r
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(f)),
                None => r.body(Body::empty()),
            }
            .unwrap()
        };

        // The form's token, and the body handed on whole.
        let form = format!("name=x&csrf={csrf}&value=y");
        let (status, _, body) = call(&router, post(Some(form.clone()), None, None)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, format!("team {form}"));
        // The header's token (htmx), from this very site.
        let (status, _, body) = call(
            &router,
            post(None, Some(&csrf), Some("http://hangar.test:7700")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");

        // The last digit changed (never to itself: a fixed digit would be right one
        // time in sixteen).
        let last = if csrf.ends_with('0') { '1' } else { '0' };
        let wrong = format!("{}{last}", &csrf[..csrf.len() - 1]);
        assert_ne!(wrong, csrf);
        for (what, req) in [
            ("no token", post(Some("name=x".into()), None, None)),
            ("no body", post(None, None, None)),
            (
                "a wrong field",
                post(Some(format!("csrf={wrong}")), None, None),
            ),
            ("a wrong header", post(None, Some(&wrong), None)),
            (
                "a wrong header over a right field",
                post(Some(format!("csrf={csrf}")), Some(&wrong), None),
            ),
            (
                "another site",
                post(None, Some(&csrf), Some("http://evil.test:7700")),
            ),
            (
                "another scheme",
                post(None, Some(&csrf), Some("https://hangar.test:7700")),
            ),
            ("an opaque origin", post(None, Some(&csrf), Some("null"))),
        ] {
            let (status, _, body) = call(&router, req).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
            assert!(body.contains(r#"class="error""#), "{what}: {body}");
            assert!(!body.contains(&csrf), "{what}: {body}");
        }
    }

    #[tokio::test]
    async fn every_answer_gets_the_security_headers() {
        let router: Router = Router::new()
            .route("/ui/page", post(|| async { "ok" }))
            .route(
                "/ui/asset",
                get(|| async { ([(header::CACHE_CONTROL, "public, max-age=60")], "x") }),
            )
            .layer(axum::middleware::from_fn(security_headers));
        let (_, page, _) = call(
            &router,
            Request::post("/ui/page").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(page[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(page[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(page[header::REFERRER_POLICY], "same-origin");
        assert_eq!(page[header::CACHE_CONTROL], "no-store");
        let (_, asset, _) = call(
            &router,
            Request::get("/ui/asset").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(asset[header::CACHE_CONTROL], "public, max-age=60");
        assert_eq!(asset[header::CONTENT_SECURITY_POLICY], CSP);
    }
}
