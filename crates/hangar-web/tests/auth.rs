//! Signing in to the web UI through the daemon's whole router (`hangar_web::app`), over a
//! real engine in a data dir of its own (nothing runs: no root needed): a token or a
//! one-time link becomes a cookie, the cookie opens the UI until sign-out, expiry or the
//! token's removal, forms need their CSRF token and this site's origin, and every
//! answer carries the security headers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use hangar_api::{Activity, Api, Listener};
use hangar_engine::runner::Runner;
use hangar_engine::{Engine, EngineConfig};
use tower::ServiceExt;

/// An engine over a data dir of its own, its clock in the test's hands.
struct Fixture {
    _dir: tempfile::TempDir,
    runner: Arc<Runner>,
    now: Arc<AtomicI64>,
    activity: Activity,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = hangar_store::Store::open(dir.path()).unwrap();
        let now = Arc::new(AtomicI64::new(1_700_000_000_000));
        let clock = now.clone();
        let engine = Engine::open(EngineConfig {
            clock: Arc::new(move || clock.load(Ordering::SeqCst)),
            ..EngineConfig::new(store, "/nonexistent/hangar-init".into())
        })
        .await
        .unwrap();
        Fixture {
            _dir: dir,
            runner: Runner::new(Arc::new(engine)),
            now,
            activity: Activity::default(),
        }
    }

    fn api(&self, listener: Listener, sites: &[&str]) -> Api {
        Api {
            runner: self.runner.clone(),
            listener,
            activity: self.activity.clone(),
            sites: sites.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The TCP listener's app, as a browser meets it.
    fn browser(&self, tls: bool) -> Router {
        hangar_web::app(self.api(Listener::Remote { tls }, &["http://hangar.test:7700"]))
    }

    /// The Unix socket's app, as `hangar ui` meets it.
    fn local(&self, sites: &[&str]) -> Router {
        hangar_web::app(self.api(Listener::Local, sites))
    }

    async fn token(&self, workspace: &str) -> (String, String) {
        let t = self.runner.engine().create_token(workspace).await.unwrap();
        (t.id, t.token.expose_str().to_string())
    }

    /// The CSRF token of the session a `hangar_session=...` cookie holds.
    async fn csrf(&self, cookie: &str) -> String {
        let secret = cookie.strip_prefix("hangar_session=").unwrap();
        self.api(Listener::Remote { tls: false }, &[])
            .session(secret)
            .await
            .unwrap()
            .expect("a live session")
            .csrf
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .map_or("", |v| v.to_str().unwrap())
    }

    fn set_cookie(&self) -> &str {
        self.headers
            .get(header::SET_COOKIE)
            .map_or("", |v| v.to_str().unwrap())
    }

    /// The `name=value` part of the cookie it sets.
    fn cookie(&self) -> String {
        self.set_cookie().split(';').next().unwrap().to_string()
    }
}

async fn send(router: &Router, req: Request<Body>) -> Answer {
    let resp = router.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::get(uri).header(header::HOST, "hangar.test:7700");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::empty()).unwrap()
}

fn post_form(uri: &str, cookie: Option<&str>, origin: Option<&str>, form: &str) -> Request<Body> {
    let mut r = Request::post(uri)
        .header(header::HOST, "hangar.test:7700")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    if let Some(o) = origin {
        r = r.header(header::ORIGIN, o);
    }
    r.body(Body::from(form.to_string())).unwrap()
}

fn sign_in_with(token: &str) -> Request<Body> {
    post_form(
        "/ui/sign-in",
        None,
        Some("http://hangar.test:7700"),
        &format!("token={token}"),
    )
}

/// Whether a cookie opens the UI: the sign-in page sends a signed-in browser on.
async fn signed_in(router: &Router, cookie: &str) -> bool {
    let a = send(router, get("/ui/sign-in", Some(cookie))).await;
    match a.status {
        StatusCode::SEE_OTHER => {
            assert_eq!(a.location(), "/ui/tasks");
            true
        }
        StatusCode::OK => {
            assert!(a.body.contains(r#"id="sign-in""#), "{}", a.body);
            false
        }
        other => panic!("GET /ui/sign-in answered {other}: {}", a.body),
    }
}

#[tokio::test]
async fn a_token_signs_in_with_a_strict_cookie_until_sign_out() {
    let f = Fixture::new().await;
    let (_, token) = f.token("team").await;
    let browser = f.browser(false);

    let page = send(&browser, get("/ui/sign-in", None)).await;
    assert_eq!(page.status, StatusCode::OK);
    for part in [
        r#"<form id="sign-in" method="post" action="/ui/sign-in">"#,
        r#"type="password" name="token""#,
        r#"<button type="submit">"#,
    ] {
        assert!(page.body.contains(part), "{part} in {}", page.body);
    }

    let a = send(&browser, sign_in_with(&token)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.location(), "/ui/tasks");
    let set = a.set_cookie();
    assert!(set.starts_with("hangar_session=hgs_"), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(set.split("; ").any(|p| p == attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    assert!(!set.contains(&token), "{set}");
    let cookie = a.cookie();
    assert!(signed_in(&browser, &cookie).await);

    // Over TLS the cookie is Secure too.
    let tls = send(
        &f.browser(true),
        post_form(
            "/ui/sign-in",
            None,
            Some("https://hangar.test:7700"),
            &format!("token={token}"),
        ),
    )
    .await;
    assert_eq!(tls.status, StatusCode::SEE_OTHER, "{}", tls.body);
    assert!(
        tls.set_cookie().split("; ").any(|p| p == "Secure"),
        "{}",
        tls.set_cookie()
    );

    // Signing out needs the session's CSRF token and this site's origin.
    let csrf = f.csrf(&cookie).await;
    let out = |cookie: &str, origin: Option<&str>, form: &str| {
        post_form("/ui/sign-out", Some(cookie), origin, form)
    };
    let refused = send(&browser, out(&cookie, None, "")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        refused.body.contains(r#"class="error""#),
        "{}",
        refused.body
    );
    let wrong = format!("csrf={}", "0".repeat(csrf.len()));
    let refused = send(&browser, out(&cookie, None, &wrong)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let refused = send(
        &browser,
        out(
            &cookie,
            Some("http://evil.test:7700"),
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(signed_in(&browser, &cookie).await, "a refused sign-out");

    let done = send(
        &browser,
        out(
            &cookie,
            Some("http://hangar.test:7700"),
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/ui/sign-in");
    assert!(
        done.set_cookie().starts_with("hangar_session=;"),
        "{}",
        done.set_cookie()
    );
    assert!(
        done.set_cookie().split("; ").any(|p| p == "Max-Age=0"),
        "{}",
        done.set_cookie()
    );
    assert!(!signed_in(&browser, &cookie).await);
    // The ended session opens nothing, not even another sign-out.
    let again = send(&browser, out(&cookie, None, &format!("csrf={csrf}"))).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(again.location(), "/ui/sign-in");
    assert_eq!(again.set_cookie(), "");
}

#[tokio::test]
async fn a_wrong_token_is_refused_without_being_shown() {
    let f = Fixture::new().await;
    let browser = f.browser(false);
    for wrong in [
        "hgr_0123456789abcdef0123456789abcdef01234567",
        "not-a-token-at-all",
        "",
    ] {
        let a = send(&browser, sign_in_with(wrong)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{wrong}: {}", a.body);
        assert!(a.body.contains(r#"<p class="error""#), "{}", a.body);
        assert!(a.body.contains(r#"id="sign-in""#), "{}", a.body);
        if !wrong.is_empty() {
            assert!(!a.body.contains(wrong), "{}", a.body);
        }
        assert_eq!(a.set_cookie(), "");
    }
    // Sent from another site, even a good token signs nobody in.
    let (_, token) = f.token("team").await;
    let a = send(
        &browser,
        post_form(
            "/ui/sign-in",
            None,
            Some("http://evil.test"),
            &format!("token={token}"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(a.set_cookie(), "");
    assert!(!a.body.contains(&token));
}

#[tokio::test]
async fn removing_a_token_ends_its_sessions() {
    let f = Fixture::new().await;
    let (id, token) = f.token("team").await;
    let (_, other) = f.token("team").await;
    let browser = f.browser(false);
    let cookie = send(&browser, sign_in_with(&token)).await.cookie();
    let kept = send(&browser, sign_in_with(&other)).await.cookie();
    assert!(signed_in(&browser, &cookie).await);

    let removed = send(
        &f.local(&[]),
        Request::delete(format!("/v1/tokens/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.body);
    assert!(!signed_in(&browser, &cookie).await);
    assert!(signed_in(&browser, &kept).await);
}

/// `hangar ui`'s link: its code, from `POST /v1/ui/links` on the socket.
async fn link(f: &Fixture) -> (String, serde_json::Value) {
    let a = send(
        &f.local(&["http://hangar.test:7700", "http://127.0.0.1:7700"]),
        Request::post("/v1/ui/links").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let links: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let urls: Vec<&str> = links["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let code = urls[0]
        .strip_prefix("http://hangar.test:7700/ui/sign-in?code=")
        .unwrap_or_else(|| panic!("{urls:?}"))
        .to_string();
    assert_eq!(
        urls,
        [
            format!("http://hangar.test:7700/ui/sign-in?code={code}"),
            format!("http://127.0.0.1:7700/ui/sign-in?code={code}")
        ]
    );
    (code, links)
}

#[tokio::test]
async fn a_one_time_link_signs_the_admin_in_once_and_not_after_ten_minutes() {
    let f = Fixture::new().await;
    let browser = f.browser(false);
    let (code, links) = link(&f).await;
    assert_eq!(links["expires_at"], "2023-11-14T22:23:20.000Z");

    let redeem = |code: &str| {
        post_form(
            "/ui/sign-in",
            None,
            Some("http://hangar.test:7700"),
            &format!("code={code}"),
        )
    };
    // Opening the link shows a button and uses up nothing (a link previewer or a
    // prefetch may fetch it first): regression test for a link redeemed by its GET.
    for _ in 0..2 {
        let page = send(&browser, get(&format!("/ui/sign-in?code={code}"), None)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(page.set_cookie(), "");
        assert!(
            page.body
                .contains(r#"<form id="sign-in-link" method="post" action="/ui/sign-in">"#),
            "{}",
            page.body
        );
    }
    // The button posts it, from this site only.
    let elsewhere = send(
        &browser,
        post_form(
            "/ui/sign-in",
            None,
            Some("http://evil.test"),
            &format!("code={code}"),
        ),
    )
    .await;
    assert_eq!(
        elsewhere.status,
        StatusCode::FORBIDDEN,
        "{}",
        elsewhere.body
    );
    let a = send(&browser, redeem(&code)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.location(), "/ui/tasks");
    let cookie = a.cookie();
    assert!(signed_in(&browser, &cookie).await);
    let session = f
        .api(Listener::Remote { tls: false }, &[])
        .session(cookie.strip_prefix("hangar_session=").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(session.caller.is_admin());
    assert_eq!(session.caller.workspace().as_str(), "default");

    let again = send(&browser, redeem(&code)).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{}", again.body);
    assert!(again.body.contains(r#"<p class="error""#), "{}", again.body);
    assert!(!again.body.contains(&code), "{}", again.body);
    assert_eq!(again.set_cookie(), "");

    let (late, _) = link(&f).await;
    f.now.fetch_add(10 * 60 * 1000, Ordering::SeqCst);
    let a = send(&browser, redeem(&late)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    assert_eq!(a.set_cookie(), "");
}

#[tokio::test]
async fn two_session_cookies_are_refused() {
    let f = Fixture::new().await;
    let browser = f.browser(false);
    let (_, mine) = f.token("default").await;
    let (_, theirs) = f.token("evil").await;
    let mine = send(&browser, sign_in_with(&mine)).await.cookie();
    let theirs = send(&browser, sign_in_with(&theirs)).await.cookie();
    assert!(signed_in(&browser, &mine).await);
    // Another site on this host planted its session with a longer path: the browser
    // sends both, the planted one first. Neither is taken.
    let both = format!("{theirs}; {mine}");
    assert!(!signed_in(&browser, &both).await);
    let both = format!("{mine}; {theirs}");
    assert!(!signed_in(&browser, &both).await);
}

#[tokio::test]
async fn only_the_local_admin_gets_a_link_and_only_with_a_tcp_listener() {
    let f = Fixture::new().await;
    let (_, token) = f.token("team").await;
    let tenant = send(
        &f.browser(false),
        Request::post("/v1/ui/links")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(tenant.status, StatusCode::FORBIDDEN, "{}", tenant.body);
    let unreachable = send(
        &f.local(&[]),
        Request::post("/v1/ui/links").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        unreachable.status,
        StatusCode::CONFLICT,
        "{}",
        unreachable.body
    );
    let v: serde_json::Value = serde_json::from_str(&unreachable.body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hangar serve --listen tcp:HOST:PORT"),
        "{v}"
    );
}

#[tokio::test]
async fn every_ui_answer_carries_the_security_headers() {
    let f = Fixture::new().await;
    let (_, token) = f.token("team").await;
    let browser = f.browser(false);
    for (what, a) in [
        ("the page", send(&browser, get("/ui/sign-in", None)).await),
        ("a refusal", send(&browser, sign_in_with("hgr_wrong")).await),
        ("a sign-in", send(&browser, sign_in_with(&token)).await),
        (
            "a bad code",
            send(&browser, get("/ui/sign-in?code=hgc_nosuchcode", None)).await,
        ),
    ] {
        let h = |name: header::HeaderName| {
            a.headers
                .get(&name)
                .map_or_else(String::new, |v| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            h(header::CONTENT_SECURITY_POLICY),
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            "{what}"
        );
        assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{what}");
        assert_eq!(h(header::REFERRER_POLICY), "same-origin", "{what}");
        assert_eq!(h(header::CACHE_CONTROL), "no-store", "{what}");
    }
}
