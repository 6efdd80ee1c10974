//! A real browser for end-to-end tests: Debian's Chromium, headless, driven over W3C
//! WebDriver by Debian's ChromeDriver on a loopback port. A test goes to pages, finds
//! elements by CSS selector, clicks, types, waits for what the page shows (a timeout fails
//! the test with the page's URL, its text and a screenshot) and reads cookies and the HTML.
//!
//! The client is a few W3C commands over hyper (one connection per command, loopback),
//! blocking on a runtime of its own because hangar's tests are synchronous: no WebDriver
//! crate's dependency tree and async API for the dozen commands the tests use.
//!
//! Nothing outlives a test: ChromeDriver runs in its own process group, which is killed on
//! drop. Every process of one browser carries the browser's scratch directory, in its
//! environment ([`MARKER`]) or as its profile in its command line ([`processes_of`]), so
//! Chromium's crash handlers, which start sessions of their own, are found too. The
//! scratch directory's name holds the owning test process's pid and start time, so
//! [`Browser::start`] first kills what a killed test process left and removes its
//! directory, never touching the browser of a test that still runs.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// The environment variable that names a browser's scratch directory in each of its
/// processes.
pub const MARKER: &str = "HANGAR_TEST_BROWSER";

/// Chromium's flags on a closed network: without the background-networking ones it keeps
/// trying Google's hosts; the profile is the scratch directory's own.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// The desktop window, as issue 17 asks the pages to be readable at.
pub const DESKTOP: (u32, u32) = (1280, 900);
/// A phone's viewport.
pub const PHONE: (u32, u32) = (390, 844);

/// How long [`Browser::wait_for`] and friends wait unless told otherwise; generous, since
/// they return as soon as the page shows what they wait for.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The W3C key of an element reference in a JSON value.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Numbers the scratch directories and failure screenshots of this process.
static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Why a WebDriver command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to chromedriver at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("talk HTTP to chromedriver: {0}")]
    Http(#[from] hyper::Error),
    #[error("build a request for chromedriver: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("read chromedriver's answer to {command} as JSON: {source}")]
    Json {
        command: String,
        source: serde_json::Error,
    },
    #[error("chromedriver did not answer {command} in time")]
    Timeout { command: String },
    #[error("{command}: {error}: {message}")]
    WebDriver {
        command: String,
        /// The W3C error code, e.g. `no such element`, `stale element reference`.
        error: String,
        message: String,
    },
}

/// A cookie as the browser holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: String,
    pub domain: String,
    pub secure: bool,
    pub http_only: bool,
    /// `Strict`, `Lax` or `None`.
    pub same_site: String,
    /// Seconds since the epoch; none for a session cookie.
    pub expiry: Option<u64>,
}

/// No single command takes longer than this unless Chromium hung (a page load has its own,
/// shorter, session timeout).
const DRIVER_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// One headless Chromium and the ChromeDriver that drives it. Dropping it ends both.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    driver: Child,
    addr: SocketAddr,
    session: String,
    out_dir: PathBuf,
    scratch: PathBuf,
    timeout: Duration,
}

/// An element of the current page, as found by `css`.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
    css: String,
}

/// Where the scratch directories of every test process's browsers live.
fn scratch_root() -> PathBuf {
    crate::target_dir().join("hangar-test-data").join("browser")
}

/// A test's output folder, `<target>/test-output/NAME`, emptied: its screenshots are kept
/// there after the run (the path is printed).
pub fn output_dir(name: &str) -> PathBuf {
    let dir = crate::target_dir().join("test-output").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("create the test output dir {}: {e}", dir.display()));
    eprintln!("{name}: screenshots in {}", dir.display());
    dir
}

/// The start time of process `pid` (clock ticks since boot, `/proc/PID/stat` field 22),
/// which tells a live owner from a new process that got a dead owner's pid.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The pids of the live processes of the browser whose scratch directory is `scratch`:
/// those with `MARKER=<scratch>` in their environment (ChromeDriver, Chromium's browser
/// process, its crash handlers) and those started with its profile (the zygote's children,
/// which reuse their environment's memory for their process title).
pub fn processes_of(scratch: &Path) -> Vec<u32> {
    let env = format!("{MARKER}={}", scratch.display());
    let profile = format!("--user-data-dir={}", profile_dir(scratch).display());
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A zombie's environment and command line read empty: it is gone but for its exit
        // status, which its parent (or init) collects.
        let has = |file: &str, wanted: &str| {
            fs::read(entry.path().join(file)).is_ok_and(|data| {
                data.split(|b| *b == 0 || *b == b' ')
                    .any(|v| v == wanted.as_bytes())
            })
        };
        if has("environ", &env) || has("cmdline", &profile) {
            pids.push(pid);
        }
    }
    pids
}

/// Chromium's profile in a browser's scratch directory.
fn profile_dir(scratch: &Path) -> PathBuf {
    scratch.join("profile")
}

/// Kills every process of the browser whose scratch directory is `scratch` until none is
/// left; a process forked meanwhile is caught by the next round.
fn kill_all_of(scratch: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = processes_of(scratch);
        if pids.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the browser processes {pids:?} of {} outlived SIGKILL",
            scratch.display()
        );
        for pid in pids {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ends what browsers of dead test processes left: their processes and scratch
/// directories. A scratch directory is `PID-STARTTIME-N` of the process that made it.
fn sweep_orphans(root: &Path) {
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut parts = name.splitn(3, '-');
        let (Some(pid), Some(start)) = (
            parts.next().and_then(|p| p.parse::<u32>().ok()),
            parts.next().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if start_time(pid) == Some(start) {
            continue;
        }
        kill_all_of(&entry.path());
        let _ = fs::remove_dir_all(entry.path());
    }
}

/// The port ChromeDriver says it listens on, once it says so.
fn driver_port(log: &Path, driver: &mut Child) -> Result<u16, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let said = fs::read_to_string(log).unwrap_or_default();
        // Whole lines only: a line being written could show part of the port's digits.
        let whole = &said[..said.rfind('\n').map_or(0, |at| at + 1)];
        if let Some(port) = whole
            .lines()
            .find_map(|l| l.strip_prefix("ChromeDriver was started successfully on port "))
            .and_then(|rest| rest.strip_suffix('.'))
            .and_then(|port| port.parse().ok())
        {
            return Ok(port);
        }
        if let Some(status) = driver.try_wait().expect("wait for chromedriver") {
            return Err(format!(
                "chromedriver exited ({status}) before it listened: {said}"
            ));
        }
        if Instant::now() >= deadline {
            let _ = killpg(Pid::from_raw(driver.id() as i32), Signal::SIGKILL);
            let _ = driver.wait();
            panic!("chromedriver did not listen within 30 s: {said}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A CSS string literal (for an attribute selector) holding `s`.
fn css_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\a "),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium with a fresh profile, the window at
    /// [`DESKTOP`]. Screenshots and ChromeDriver's log (`chromedriver.log`) go to
    /// `out_dir`, which is created.
    pub fn start(out_dir: &Path) -> Browser {
        fs::create_dir_all(out_dir).unwrap_or_else(|e| {
            panic!("create the browser's output dir {}: {e}", out_dir.display())
        });
        let root = scratch_root();
        fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("create the browsers' dir {}: {e}", root.display()));
        // Chromium cannot start with a profile path holding `..` ("Could not read in
        // devtools port number"), which the target dir has when CARGO_TARGET_DIR is unset.
        let root = fs::canonicalize(&root)
            .unwrap_or_else(|e| panic!("resolve the browsers' dir {}: {e}", root.display()));
        sweep_orphans(&root);

        let me = std::process::id();
        let scratch = root.join(format!(
            "{me}-{}-{}",
            start_time(me).expect("read this process's start time"),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let home = scratch.join("home");
        fs::create_dir_all(&home)
            .unwrap_or_else(|e| panic!("create the browser's scratch dir {}: {e}", home.display()));
        let log_path = out_dir.join("chromedriver.log");
        let mut tries = 0;
        let (driver, port) = loop {
            let log = fs::File::create(&log_path)
                .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
            let log_err = log.try_clone().expect("clone the log file's handle");
            // HOME and the XDG dirs in the scratch dir: Chromium's crash reports and
            // settings would otherwise land in root's home and outlive the test.
            let mut driver = Command::new("chromedriver")
                .arg("--port=0")
                .env(MARKER, &scratch)
                .env("HOME", &home)
                .env("XDG_CONFIG_HOME", home.join(".config"))
                .env("XDG_CACHE_HOME", home.join(".cache"))
                .env("XDG_DATA_HOME", home.join(".local/share"))
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .expect("start chromedriver (apt-get install chromium chromium-driver)");
            match driver_port(&log_path, &mut driver) {
                Ok(port) => break (driver, port),
                // With --port=0 ChromeDriver takes a free port on IPv6, then the same
                // number on IPv4, which another process may hold ("IPv4 port not
                // available"): another start takes another port.
                Err(said) if tries < 5 && said.contains("port not available") => tries += 1,
                Err(said) => panic!("{said}"),
            }
        };

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build the browser's runtime");
        let mut browser = Browser {
            rt,
            driver,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            session: String::new(),
            out_dir: out_dir.to_path_buf(),
            scratch,
            timeout: DEFAULT_TIMEOUT,
        };
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            profile_dir(&browser.scratch).display()
        ));
        args.push(format!("--window-size={},{}", DESKTOP.0, DESKTOP.1));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "pageLoadStrategy": "normal",
            "unhandledPromptBehavior": "accept and notify",
            "timeouts": {"implicit": 0, "pageLoad": 60_000, "script": 30_000},
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let session = browser
            .call(hyper::Method::POST, "/session", Some(caps))
            .unwrap_or_else(|e| {
                panic!(
                    "failed to open a browser session: {e}\nchromedriver said: {}",
                    fs::read_to_string(&log_path).unwrap_or_default()
                )
            });
        browser.session = session["sessionId"]
            .as_str()
            .expect("a new session has an id")
            .to_string();
        browser.resize(DESKTOP);
        browser
    }

    /// The browser's scratch directory (its profile and home), which its processes carry
    /// as [`MARKER`].
    pub fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// How long the `wait_for*` methods wait from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// One WebDriver command: `path` is below the server's root (e.g. `/session`).
    fn call(&self, method: hyper::Method, path: &str, body: Option<Value>) -> Result<Value, Error> {
        let command = format!("{method} {path}");
        let late = Error::Timeout {
            command: command.clone(),
        };
        let addr = self.addr;
        let fut = async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|source| Error::Connect { addr, source })?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let body = body.map(|b| b.to_string()).unwrap_or_default();
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, addr.to_string())
                .header(
                    hyper::header::CONTENT_TYPE,
                    "application/json; charset=utf-8",
                )
                .body(Full::new(Bytes::from(body)))?;
            let resp = send.send_request(req).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let mut v: Value = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                command: command.clone(),
                source,
            })?;
            let value = v["value"].take();
            if status.is_success() {
                Ok(value)
            } else {
                Err(Error::WebDriver {
                    command,
                    error: value["error"].as_str().unwrap_or_default().to_string(),
                    message: value["message"].as_str().unwrap_or_default().to_string(),
                })
            }
        };
        self.rt
            .block_on(async { tokio::time::timeout(DRIVER_CALL_TIMEOUT, fut).await })
            .unwrap_or(Err(late))
    }

    /// A command on this session: `path` is below `/session/ID`.
    fn get(&self, path: &str) -> Result<Value, Error> {
        let path = format!("/session/{}{path}", self.session);
        self.call(hyper::Method::GET, &path, None)
    }

    fn post(&self, path: &str, body: Value) -> Result<Value, Error> {
        let path = format!("/session/{}{path}", self.session);
        self.call(hyper::Method::POST, &path, Some(body))
    }

    /// Sets the window's size; [`DESKTOP`] and [`PHONE`] are the sizes the pages must suit.
    pub fn resize(&self, (width, height): (u32, u32)) {
        self.post("/window/rect", json!({"width": width, "height": height}))
            .unwrap_or_else(|e| panic!("failed to resize the window to {width}x{height}: {e}"));
    }

    /// Loads `url` and waits until its document has loaded.
    pub fn goto(&self, url: &str) {
        if let Err(e) = self.post("/url", json!({ "url": url })) {
            self.fail(&format!("failed to load {url}: {e}"));
        }
    }

    /// The current page's URL.
    pub fn url(&self) -> String {
        self.get("/url")
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|e| panic!("failed to read the page's URL: {e}"))
    }

    /// The current page's title.
    pub fn title(&self) -> String {
        self.get("/title")
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|e| panic!("failed to read the page's title: {e}"))
    }

    /// Reloads the current page.
    pub fn refresh(&self) {
        if let Err(e) = self.post("/refresh", json!({})) {
            self.fail(&format!("failed to reload the page: {e}"));
        }
    }

    /// Goes back in the history.
    pub fn back(&self) {
        if let Err(e) = self.post("/back", json!({})) {
            self.fail(&format!("failed to go back: {e}"));
        }
    }

    fn element(&self, value: &Value, css: &str) -> Element<'_> {
        Element {
            browser: self,
            id: value[ELEMENT_KEY]
                .as_str()
                .expect("an element reference has an id")
                .to_string(),
            css: css.to_string(),
        }
    }

    fn try_find_all(&self, css: &str) -> Result<Vec<Element<'_>>, Error> {
        let found = self.post("/elements", json!({"using": "css selector", "value": css}))?;
        Ok(found
            .as_array()
            .map(|a| a.iter().map(|v| self.element(v, css)).collect())
            .unwrap_or_default())
    }

    /// Every element matching `css`, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        self.try_find_all(css)
            .unwrap_or_else(|e| self.fail(&format!("failed to look for `{css}`: {e}")))
    }

    /// The first element matching `css`, if any.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        self.find_all(css).into_iter().next()
    }

    /// The first element matching `css`; fails the test when there is none.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.try_find(css)
            .unwrap_or_else(|| self.fail(&format!("no element matches `{css}`")))
    }

    /// What `read` gives of the first element matching `css`, if one does. A page that
    /// replaces its parts while it refreshes can swap the element between finding it and
    /// reading it: it is then found again.
    fn read_first<T>(
        &self,
        css: &str,
        what: &str,
        read: impl Fn(&Element<'_>) -> Result<T, Error>,
    ) -> Option<T> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let first = self.find_all(css).into_iter().next()?;
            match read(&first) {
                Ok(v) => return Some(v),
                Err(e) if Instant::now() >= deadline => {
                    self.fail(&format!("failed to read the {what} of `{css}`: {e}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The text of the first element matching `css`, if one does (found again if the page
    /// swaps it meanwhile).
    pub fn text_of(&self, css: &str) -> Option<String> {
        self.read_first(css, "text", |e| e.try_text())
    }

    /// The attribute `name` of the first element matching `css`: `None` when no element
    /// matches or it has no such attribute (found again if the page swaps it meanwhile).
    pub fn attr_of(&self, css: &str, name: &str) -> Option<String> {
        self.read_first(css, &format!("attribute {name}"), |e| e.try_attr(name))
            .flatten()
    }

    /// Asks `ready` every 50 ms until it gives a value; fails the test when the timeout
    /// passes, with `waited … for` and what `ready` last said it waits for.
    fn poll<T>(&self, mut ready: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + self.timeout;
        loop {
            match ready() {
                Ok(v) => return v,
                Err(waiting) if Instant::now() >= deadline => {
                    self.fail(&format!("waited {:?} for {waiting}", self.timeout))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Waits until an element matches `css`; returns the first.
    pub fn wait_for(&self, css: &str) -> Element<'_> {
        self.poll(|| {
            self.try_find_all(css)
                .ok()
                .and_then(|v| v.into_iter().next())
                .ok_or_else(|| format!("`{css}`"))
        })
    }

    /// Waits until an element matching `css` has `needle` in its text; returns it.
    pub fn wait_for_text(&self, css: &str, needle: &str) -> Element<'_> {
        self.poll(|| {
            let mut texts = Vec::new();
            for e in self.try_find_all(css).unwrap_or_default() {
                // A stale element (the page replaced it meanwhile) is looked for again.
                if let Ok(text) = e.try_text() {
                    if text.contains(needle) {
                        return Ok(e);
                    }
                    texts.push(text);
                }
            }
            Err(format!("`{css}` to show {needle:?}; it shows {texts:?}"))
        })
    }

    /// Waits until the page's URL contains `needle`; returns the URL.
    pub fn wait_for_url(&self, needle: &str) -> String {
        self.poll(|| {
            let url = self.url();
            if url.contains(needle) {
                Ok(url)
            } else {
                Err(format!("a URL with {needle:?}"))
            }
        })
    }

    /// Waits until `done` holds (asked every 50 ms); `what` names it in the failure.
    pub fn wait_until(&self, what: &str, mut done: impl FnMut(&Browser) -> bool) {
        self.poll(|| {
            if done(self) {
                Ok(())
            } else {
                Err(what.to_string())
            }
        })
    }

    /// Runs `script` (a function body: `arguments` are `args`, `return` gives the result)
    /// in the page.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .unwrap_or_else(|e| self.fail(&format!("failed to run a script in the page: {e}")))
    }

    /// The page's HTML as it is now (`document.documentElement.outerHTML`, so what scripts
    /// added is in it).
    pub fn source(&self) -> String {
        self.execute("return document.documentElement.outerHTML;", vec![])
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The cookies the browser holds for the current page.
    pub fn cookies(&self) -> Vec<Cookie> {
        let all = self
            .get("/cookie")
            .unwrap_or_else(|e| panic!("failed to read the cookies: {e}"));
        all.as_array()
            .into_iter()
            .flatten()
            .map(|c| Cookie {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                value: c["value"].as_str().unwrap_or_default().to_string(),
                path: c["path"].as_str().unwrap_or_default().to_string(),
                domain: c["domain"].as_str().unwrap_or_default().to_string(),
                secure: c["secure"].as_bool().unwrap_or(false),
                http_only: c["httpOnly"].as_bool().unwrap_or(false),
                same_site: c["sameSite"].as_str().unwrap_or_default().to_string(),
                expiry: c["expiry"].as_u64(),
            })
            .collect()
    }

    /// The cookie called `name`, if the browser holds it for the current page.
    pub fn cookie(&self, name: &str) -> Option<Cookie> {
        self.cookies().into_iter().find(|c| c.name == name)
    }

    fn try_screenshot(&self, name: &str) -> Result<PathBuf, String> {
        let data = self.get("/screenshot").map_err(|e| e.to_string())?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .map_err(|e| format!("decode the screenshot: {e}"))?;
        let file = if name.ends_with(".png") {
            name.to_string()
        } else {
            format!("{name}.png")
        };
        let path = self.out_dir.join(file);
        fs::write(&path, png).map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Saves what the window shows as `out_dir/NAME.png`; returns the file's path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        self.try_screenshot(name)
            .unwrap_or_else(|e| panic!("failed to take the screenshot {name}: {e}"))
    }

    /// Fails the test with `what`, the page's URL and text, and a screenshot of it.
    fn fail(&self, what: &str) -> ! {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let shot = match self.try_screenshot(&format!("failure-{n}")) {
            Ok(p) => p.display().to_string(),
            Err(e) => format!("(none: {e})"),
        };
        let url = self
            .get("/url")
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|e| format!("(unknown: {e})"));
        let text = self
            .post(
                "/execute/sync",
                json!({"script": "return document.body ? document.body.innerText : '';", "args": []}),
            )
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|e| format!("(unreadable: {e})"));
        let text: String = text.chars().take(4000).collect();
        panic!("{what}\nthe page at {url} shows:\n{text}\nscreenshot: {shot}")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session lets Chromium exit cleanly; the kills below catch whatever
        // did not (or a session that never opened).
        if !self.session.is_empty() {
            let _ = self.call(
                hyper::Method::DELETE,
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = killpg(Pid::from_raw(self.driver.id() as i32), Signal::SIGKILL);
        let _ = self.driver.wait();
        let scratch = self.scratch.clone();
        // A panic while the test unwinds would abort the whole test binary.
        let _ = std::panic::catch_unwind(move || kill_all_of(&scratch));
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

impl<'b> Element<'b> {
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    fn try_text(&self) -> Result<String, Error> {
        self.browser
            .get(&self.path("/text"))
            .map(|v| v.as_str().unwrap_or_default().to_string())
    }

    /// Its rendered text.
    pub fn text(&self) -> String {
        self.try_text().unwrap_or_else(|e| {
            self.browser
                .fail(&format!("failed to read the text of `{}`: {e}", self.css))
        })
    }

    fn try_attr(&self, name: &str) -> Result<Option<String>, Error> {
        self.browser
            .get(&self.path(&format!("/attribute/{name}")))
            .map(|v| v.as_str().map(str::to_string))
    }

    /// Its attribute `name` as written in the HTML, if it has one.
    pub fn attr(&self, name: &str) -> Option<String> {
        self.try_attr(name).unwrap_or_else(|e| {
            self.browser.fail(&format!(
                "failed to read the attribute {name} of `{}`: {e}",
                self.css
            ))
        })
    }

    /// Its DOM property `name` (e.g. `value` of a field as typed, `checked`).
    pub fn prop(&self, name: &str) -> Value {
        self.browser
            .get(&self.path(&format!("/property/{name}")))
            .unwrap_or_else(|e| {
                self.browser.fail(&format!(
                    "failed to read the property {name} of `{}`: {e}",
                    self.css
                ))
            })
    }

    /// Whether it is shown (not hidden by CSS, nor in a closed `details`).
    pub fn displayed(&self) -> bool {
        self.browser
            .get(&self.path("/displayed"))
            .map(|v| v.as_bool().unwrap_or(false))
            .unwrap_or_else(|e| {
                self.browser.fail(&format!(
                    "failed to see whether `{}` is shown: {e}",
                    self.css
                ))
            })
    }

    /// Clicks it (scrolled into view first, as a user would).
    pub fn click(&self) {
        if let Err(e) = self.browser.post(&self.path("/click"), json!({})) {
            self.browser
                .fail(&format!("failed to click `{}`: {e}", self.css));
        }
    }

    /// Types `text` into it (a field): key by key, after what it holds.
    pub fn type_text(&self, text: &str) {
        if let Err(e) = self
            .browser
            .post(&self.path("/value"), json!({ "text": text }))
        {
            self.browser
                .fail(&format!("failed to type into `{}`: {e}", self.css));
        }
    }

    /// Empties it (a field).
    pub fn clear(&self) {
        if let Err(e) = self.browser.post(&self.path("/clear"), json!({})) {
            self.browser
                .fail(&format!("failed to clear `{}`: {e}", self.css));
        }
    }

    /// Chooses the option whose value is `value` (it is a `select`), by clicking it.
    pub fn select(&self, value: &str) {
        let css = format!("option[value={}]", css_string(value));
        let option = self.find(&css);
        option.click();
        let now = self.prop("value");
        if now.as_str() != Some(value) {
            self.browser.fail(&format!(
                "`{}` holds {now} after choosing the option {value:?}",
                self.css
            ));
        }
    }

    /// Every element below it matching `css`.
    pub fn find_all(&self, css: &str) -> Vec<Element<'b>> {
        let what = format!("{} {css}", self.css);
        self.browser
            .post(
                &self.path("/elements"),
                json!({"using": "css selector", "value": css}),
            )
            .map(|found| {
                found
                    .as_array()
                    .map(|a| a.iter().map(|v| self.browser.element(v, &what)).collect())
                    .unwrap_or_default()
            })
            .unwrap_or_else(|e| {
                self.browser
                    .fail(&format!("failed to look for `{what}`: {e}"))
            })
    }

    /// The first element below it matching `css`; fails the test when there is none.
    pub fn find(&self, css: &str) -> Element<'b> {
        self.find_all(css).into_iter().next().unwrap_or_else(|| {
            self.browser
                .fail(&format!("no element matches `{} {css}`", self.css))
        })
    }
}
