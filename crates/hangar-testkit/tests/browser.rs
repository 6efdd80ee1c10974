//! The browser harness against pages of its own, served from this test: a click that
//! changes a text, a folded section opened, a part replaced all the time read anyway, a form typed into and submitted, cookies' flags, a page over TLS with
//! a certificate no one trusts, a phone-width window, a wait that times out with what the
//! page showed; and that no browser process or scratch directory outlives a browser,
//! whether it was dropped or its test process was killed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use hangar_testkit::browser::{self, Browser, DESKTOP, PHONE};
use serde_json::json;

const PAGE: &str = r#"<!doctype html>
<html><head><title>harness page</title></head><body>
<p id="msg">not clicked</p>
<button id="go" type="button">Go</button>
<ul id="late"></ul>
<details><summary>More</summary><p id="folded">folded away</p></details>
<div id="swap"></div>
<form id="f" method="post" action="/submit">
  <input name="who" value="someone">
  <select name="color">
    <option value="red">Red</option>
    <option value="green &quot;leaf&quot;">Green</option>
  </select>
  <textarea name="note"></textarea>
  <button type="submit">Send</button>
</form>
<script>
let clicks = 0;
document.getElementById('go').addEventListener('click', () => {
  clicks += 1;
  document.getElementById('msg').textContent = 'clicked ' + clicks;
  setTimeout(() => {
    const li = document.createElement('li');
    li.textContent = 'arrived after ' + clicks;
    document.getElementById('late').append(li);
  }, 300);
});
// Replaced every few commands' time, as a page that refreshes its parts: now and then the
// element found is gone by the time it is read.
setInterval(() => {
  const span = document.createElement('span');
  span.textContent = 'swapped';
  span.title = 'fresh';
  document.getElementById('swap').replaceChildren(span);
}, 20);
</script>
</body></html>"#;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Answers one HTTP/1.1 request: `/` is [`PAGE`] (setting two cookies), a POST to
/// `/submit` shows the form's fields.
fn answer(stream: TcpStream) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (status, extra, html) = if request_line.starts_with("POST /submit ") {
        let rows: String = form_urlencoded::parse(&body)
            .map(|(k, v)| format!("<dt>{k}</dt><dd class=\"{k}\">{}</dd>", escape(&v)))
            .collect();
        (
            "200 OK",
            "",
            format!("<!doctype html><title>got</title><dl id=\"got\">{rows}</dl>"),
        )
    } else if request_line.starts_with("GET / ") {
        (
            "200 OK",
            "Set-Cookie: session=s3cret; HttpOnly; SameSite=Strict; Path=/\r\n\
             Set-Cookie: plain=1; Path=/\r\n",
            PAGE.to_string(),
        )
    } else {
        ("404 Not Found", "", "not here".to_string())
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n{extra}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{html}",
        html.len()
    );
}

/// The test's site on a loopback port, served until the test process ends.
fn site() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test site");
    let addr = listener.local_addr().expect("the test site's address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    addr
}

#[test]
fn drives_a_page_clicks_types_submits_and_reads_cookies() {
    let out = browser::output_dir("harness-drives-a-page");
    let base = format!("http://{}", site());
    let mut b = Browser::start(&out);

    b.goto(&format!("{base}/"));
    b.wait_for("#go");
    assert_eq!(b.title(), "harness page");
    assert_eq!(b.find("#msg").text(), "not clicked");
    b.find("#go").click();
    assert_eq!(b.wait_for_text("#msg", "clicked").text(), "clicked 1");
    assert_eq!(b.wait_for("#late li").text(), "arrived after 1");
    b.find("#go").click();
    b.wait_for_text("#late li", "arrived after 2");
    assert_eq!(b.find_all("#late li").len(), 2);
    assert!(b.find("#go").displayed());
    assert!(!b.find("#folded").displayed());
    b.find("details summary").click();
    assert!(b.find("#folded").displayed());

    assert_eq!(b.text_of("#msg").as_deref(), Some("clicked 2"));
    assert_eq!(b.text_of("#nothing-here"), None);
    for _ in 0..50 {
        assert_eq!(b.text_of("#swap span").as_deref(), Some("swapped"));
        assert_eq!(b.attr_of("#swap span", "title").as_deref(), Some("fresh"));
    }
    assert_eq!(b.attr_of("form#f", "action").as_deref(), Some("/submit"));
    assert_eq!(b.attr_of("form#f", "data-none"), None);
    assert_eq!(b.find("form#f").attr("action").as_deref(), Some("/submit"));
    assert_eq!(b.find("form#f").attr("data-none"), None);
    let who = b.find("input[name=who]");
    assert_eq!(who.prop("value"), json!("someone"));
    who.clear();
    who.type_text("Ada <b>&</b>");
    assert_eq!(who.prop("value"), json!("Ada <b>&</b>"));
    b.find("select[name=color]").select("green \"leaf\"");
    b.find("textarea[name=note]").type_text("two\nlines");

    let session = b.cookie("session").expect("the page's session cookie");
    assert_eq!(session.value, "s3cret");
    assert!(session.http_only, "{session:?}");
    assert!(!session.secure, "{session:?}");
    assert_eq!(session.same_site, "Strict");
    assert_eq!(session.expiry, None);
    let plain = b.cookie("plain").expect("the page's plain cookie");
    assert!(!plain.http_only, "{plain:?}");
    // The page's scripts see the plain cookie, never the HttpOnly one.
    let seen = b.execute("return document.cookie;", vec![]);
    assert_eq!(seen, json!("plain=1"));
    assert_eq!(
        b.execute(
            "return arguments[0] + arguments[1];",
            vec![json!(2), json!(3)]
        ),
        json!(5)
    );
    let source = b.source();
    assert!(source.starts_with("<html>"), "{source}");
    assert!(source.contains("<p id=\"msg\">clicked 2</p>"), "{source}");

    b.find("form#f button[type=submit]").click();
    b.wait_for_url("/submit");
    b.wait_for("#got");
    assert_eq!(b.find("#got dd.who").text(), "Ada <b>&</b>");
    assert_eq!(b.find("#got dd.color").text(), "green \"leaf\"");
    assert_eq!(
        b.find("#got dd.note")
            .prop("textContent")
            .as_str()
            .map(|s| s.replace("\r\n", "\n")),
        Some("two\nlines".to_string())
    );
    b.back();
    b.wait_for("#go");
    b.refresh();
    assert_eq!(b.wait_for("#msg").text(), "not clicked");

    b.resize(PHONE);
    assert_eq!(
        b.execute("return window.innerWidth;", vec![]),
        json!(PHONE.0)
    );
    b.screenshot("phone");
    b.resize(DESKTOP);
    assert_eq!(
        b.execute("return window.innerWidth;", vec![]),
        json!(DESKTOP.0)
    );

    // A daemon's self-signed certificate is accepted, as for a team's own CA.
    let upstream = hangar_testkit::upstream::Upstream::start([127, 0, 0, 1].into(), &[]);
    b.goto(&format!("https://{}/over-tls", upstream.https));
    b.wait_for_text("body", "/over-tls");
    assert!(upstream
        .seen()
        .iter()
        .any(|s| s.tls && s.path == "/over-tls"));

    b.set_timeout(std::time::Duration::from_secs(1));
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        b.wait_for("#never");
    }))
    .expect_err("waiting for an element that never comes fails");
    let said = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(said.contains("waited 1s for `#never`"), "{said}");
    assert!(
        said.contains(&format!("the page at https://{}/over-tls", upstream.https)),
        "{said}"
    );
    assert!(said.contains("\"path\":\"/over-tls\""), "{said}");
    let shot = said
        .rsplit_once("screenshot: ")
        .map(|(_, p)| PathBuf::from(p.trim()))
        .expect("the failure names its screenshot");
    assert!(shot.starts_with(&out), "{said}");
    assert_png(&shot);

    b.goto(&format!("{base}/"));
    assert_png(&b.screenshot("last"));

    let scratch = b.scratch().to_path_buf();
    assert!(!browser::processes_of(&scratch).is_empty());
    assert!(scratch.join("profile").is_dir());
    drop(b);
    assert_eq!(browser::processes_of(&scratch), Vec::<u32>::new());
    assert!(!scratch.exists(), "{} is left", scratch.display());
}

fn assert_png(path: &std::path::Path) {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        data.len() > 1000,
        "{} is {} bytes",
        path.display(),
        data.len()
    );
    assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
}

/// In a child process of this test, this variable names the output folder: the child
/// starts a browser, says where its scratch dir is and waits to be killed.
const ORPHAN: &str = "HANGAR_BROWSER_TEST_ORPHAN";

/// A child process of this test that holds a browser; killed on drop.
struct Orphan {
    child: Child,
    scratch: PathBuf,
}

impl Orphan {
    fn kill(&mut self) {
        self.child.kill().expect("kill the child test");
        self.child.wait().expect("reap the child test");
    }
}

impl Drop for Orphan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This test's binary, run as a child that holds a browser.
fn orphan(name: &str) -> Orphan {
    let out = browser::output_dir(name);
    let mut child = Command::new(std::env::current_exe().expect("this test's binary"))
        .args([
            "--exact",
            "a_browser_left_by_a_killed_test_process_is_ended_by_the_next_start",
            "--nocapture",
        ])
        .env(ORPHAN, &out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run this test as a child");
    let stdout = BufReader::new(child.stdout.take().expect("the child's stdout"));
    for line in stdout.lines() {
        let line = line.expect("read the child's stdout");
        if let Some(dir) = line.strip_prefix("scratch=") {
            let scratch = PathBuf::from(dir);
            return Orphan { child, scratch };
        }
    }
    let status = child.wait().expect("reap the child test");
    panic!("the child test exited ({status}) without starting a browser");
}

#[test]
fn a_browser_left_by_a_killed_test_process_is_ended_by_the_next_start() {
    if let Some(out) = std::env::var_os(ORPHAN) {
        let b = Browser::start(std::path::Path::new(&out));
        println!("scratch={}", b.scratch().display());
        std::io::stdout().flush().expect("flush stdout");
        std::thread::sleep(std::time::Duration::from_secs(600));
        panic!("the child holding a browser was not killed");
    }
    let mut killed = orphan("harness-orphan-killed");
    let mut alive = orphan("harness-orphan-alive");
    killed.kill();
    assert!(!browser::processes_of(&killed.scratch).is_empty());

    let out = browser::output_dir("harness-sweeps");
    let b = Browser::start(&out);
    assert_eq!(browser::processes_of(&killed.scratch), Vec::<u32>::new());
    assert!(
        !killed.scratch.exists(),
        "{} is left",
        killed.scratch.display()
    );
    // Another test process's browser is its own until that process ends.
    assert!(!browser::processes_of(&alive.scratch).is_empty());
    assert!(alive.scratch.exists());
    drop(b);

    alive.kill();
    let b = Browser::start(&out);
    assert_eq!(browser::processes_of(&alive.scratch), Vec::<u32>::new());
    assert!(
        !alive.scratch.exists(),
        "{} is left",
        alive.scratch.display()
    );
    b.screenshot("last");
}
