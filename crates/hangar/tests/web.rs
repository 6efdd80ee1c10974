//! The web UI in a real browser (headless Chromium over WebDriver, the testkit's
//! [`Browser`]) against a real daemon: `hangar serve` over the shared test data dir (its
//! Debian image) with a TLS listener, its environments' repository served by `git daemon`,
//! every workspace a token's. The tests sign in with a token, start tasks from the form
//! (the script harness, so no model is needed), watch a log arrive live and a task become
//! ready without a reload, read its diff, rank a best-of-3, edit an environment with an
//! error, set a secret that never comes back, keep two workspaces apart, and show what a
//! task holds as text. Each saves screenshots, its last page's as `last.png`, into its
//! output folder under the target dir (printed at its start).

use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use hangar_testkit::browser::{self, Browser, PHONE};
use serde_json::{json, Value};

mod common;

/// Waits for a task are long: the first task of an environment builds its snapshot, and
/// the machine is shared with the rest of the suite.
const TASK_WAIT: Duration = Duration::from_secs(300);

/// The statuses a task ends in.
const FINISHED: &[&str] = &["ready", "failed", "error", "cancelled"];

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", hangar_spec::TaskId::random())
}

/// A daemon of its own (socket, TLS listener on a free loopback port) over the shared
/// data dir, and the git daemon that serves the tests' repository to token workspaces.
/// Stopped on drop.
struct Site {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `https://127.0.0.1:PORT`.
    base: String,
    /// The repository's `git://` URL, which token workspaces may use (`--open-internal`).
    repo_url: String,
    _gitd: hangar_testkit::gitd::GitDaemon,
    _repos: tempfile::TempDir,
}

impl Site {
    fn start() -> Site {
        let repos = tempfile::tempdir().unwrap();
        let repo = repos.path().join("project");
        std::fs::create_dir(&repo).unwrap();
        std::fs::write(repo.join("notes.txt"), "first note\nsecond note\n").unwrap();
        std::fs::write(repo.join("README"), "a project for the web UI's tests\n").unwrap();
        hangar_testkit::git(&repo, &["init", "-q", "-b", "main"]);
        hangar_testkit::git(&repo, &["add", "-A"]);
        hangar_testkit::git(&repo, &["commit", "-qm", "initial"]);
        let gitd = hangar_testkit::gitd::GitDaemon::serve(repos.path());

        let dir = tempfile::tempdir().unwrap();
        common::write_pki(dir.path(), &["localhost", "127.0.0.1"]);
        let mut site = Site {
            repo_url: gitd.url("project"),
            base: String::new(),
            child: None,
            _gitd: gitd,
            _repos: repos,
            dir,
        };
        let cert = site.path("cert.pem");
        let key = site.path("key.pem");
        let child = site
            .command()
            .args(["serve", "--listen", "tcp:127.0.0.1:0", "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args([
                "--max-running",
                "3",
                "--open-internal",
                &site._gitd.authority(),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(site.path("serve.log")).unwrap())
            .spawn()
            .unwrap();
        site.child = Some(child);
        let log = site.path("serve.log");
        let said = common::wait_serving(site.child.as_mut().unwrap(), &log);
        let port = common::tcp_port(&said);
        site.base = format!("https://127.0.0.1:{port}");
        site
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `hangar` on this daemon's socket (the local admin), over the shared data dir.
    fn command(&self) -> std::process::Command {
        let mut cmd = common::hangar_shared();
        cmd.current_dir(self.dir.path())
            .env("HANGAR_SOCKET", self.path("hangar.sock"));
        cmd
    }

    /// A page's URL.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A token for the new workspace `workspace`.
    fn token(&self, workspace: &str) -> String {
        let out = self
            .command()
            .args(["token", "create", "--workspace", workspace])
            .output()
            .unwrap();
        ok(&out, "token create").trim().to_string()
    }

    /// `hangar ARGS` as a token's user elsewhere: over the TLS listener.
    fn remote(&self, token: &str, args: &[&str]) -> Output {
        let elsewhere = tempfile::tempdir().unwrap();
        common::hangar(elsewhere.path())
            .current_dir(self.dir.path())
            .env_remove("HANGAR_SOCKET")
            .env("HANGAR_URL", &self.base)
            .env("HANGAR_CA", self.path("ca.pem"))
            .env("HANGAR_TOKEN", token)
            .args(args)
            .output()
            .unwrap()
    }

    fn remote_ok(&self, token: &str, args: &[&str]) -> String {
        ok(&self.remote(token, args), &args.join(" "))
    }

    /// Creates environment `name` over the test repository in `token`'s workspace from a
    /// file holding `extra` after the repository and image; returns the file's text.
    fn env_create(&self, token: &str, name: &str, extra: &str) -> String {
        let text = format!(
            "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n{extra}\n[agent]\nscript = \"true\"\n",
            self.repo_url
        );
        let file = self.path(&format!("{name}.toml"));
        std::fs::write(&file, &text).unwrap();
        self.remote_ok(token, &["env", "create", "--file", file.to_str().unwrap()]);
        text
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.command().arg("shutdown").output();
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Expects a finished `hangar` to have succeeded; its stdout.
fn ok(out: &Output, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "hangar {what}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A browser for the test `name`, whose output folder is printed; waits are long enough
/// for a task.
fn browser(name: &str) -> Browser {
    let mut b = Browser::start(&browser::output_dir(name));
    b.set_timeout(TASK_WAIT);
    b
}

/// Clicks the submit button `css` of a form and waits for the page it leads to (a new
/// document: the old one's marker is gone).
fn submit(b: &Browser, css: &str) {
    let button = b.find(css);
    b.execute("window.__hangar_old_page = true;", vec![]);
    button.click();
    b.wait_until("the page the form leads to", |b| {
        b.execute(
            "return window.__hangar_old_page === undefined && document.readyState === 'complete';",
            vec![],
        ) == json!(true)
    });
}

/// Waits until the page shows `css`, or an error (`p.error`), which fails the test at
/// once with what the page says.
fn arrive(b: &Browser, css: &str) {
    b.wait_until(&format!("`{css}` or an error"), |b| {
        b.try_find(css).is_some() || b.try_find("p.error").is_some()
    });
    b.find(css);
}

/// Signs in on the sign-in form with `token`; lands on the task list.
fn sign_in(b: &Browser, site: &Site, token: &str) {
    b.goto(&site.url("/ui/sign-in"));
    let field = b.wait_for("form#sign-in input[name=token]");
    assert_eq!(field.attr("type").as_deref(), Some("password"));
    field.type_text(token);
    submit(b, "form#sign-in button[type=submit]");
    // The list's filters: an empty list has no table.
    arrive(b, "form#filters");
    let url = b.url();
    assert!(
        url.starts_with(&site.url("/ui/tasks")),
        "signed in at {url}"
    );
}

/// Signs out with the header's form; lands on the sign-in page.
fn sign_out(b: &Browser) {
    submit(b, "form#sign-out button");
    b.wait_for("form#sign-in");
}

/// The HTTP status `path` answers this browser's session with (a same-origin fetch, so
/// the session cookie goes along); a redirect reads 0 (the fetch does not follow it).
fn status_of(b: &Browser, path: &str) -> u64 {
    let status = b.execute(
        "return fetch(arguments[0], {redirect: 'manual'}).then(r => r.status);",
        vec![json!(path)],
    );
    status
        .as_u64()
        .unwrap_or_else(|| panic!("fetch {path} gave {status}"))
}

/// Starts a task from the form with the script harness: `script` is the agent's script.
/// Returns the task's id, once its page shows.
fn start_task(
    b: &Browser,
    site: &Site,
    env: &str,
    prompt: &str,
    attempts: u32,
    script: &str,
) -> String {
    b.goto(&site.url("/ui/tasks/new"));
    let form = b.wait_for("form#new-task");
    form.find("select[name=environment]").select(env);
    form.find("textarea[name=prompt]").type_text(prompt);
    let n = form.find("input[name=attempts]");
    assert_eq!(n.attr("type").as_deref(), Some("number"));
    n.clear();
    n.type_text(&attempts.to_string());
    form.find("select[name=harness]").select("script");
    let field = form.find("textarea[name=script]");
    if !field.displayed() {
        // A collapsed section holds it: opened by its summary, as a user would.
        form.find("details summary").click();
    }
    field.type_text(script);
    submit(b, "form#new-task button[type=submit]");
    arrive(b, "#task-status");
    let url = b.url();
    let id = url
        .strip_prefix(&site.url("/ui/tasks/"))
        .map(|rest| {
            rest.split(['?', '#'])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_else(|| panic!("the form led to {url}, not a task's page"));
    assert_eq!(id.len(), 12, "the form led to {url}, not a task's page");
    id
}

/// Waits (on the task's page, without reloading it) until the task has finished; its
/// status word.
fn wait_finished(b: &Browser) -> String {
    b.wait_until("the task to finish", |b| {
        b.text_of("#task-status")
            .is_some_and(|s| FINISHED.contains(&s.trim()))
    });
    status(b)
}

/// The task's status word, as its page shows it now.
fn status(b: &Browser) -> String {
    text(b, "#task-status")
}

/// The live log of attempt `n`, as its page shows it now.
fn log(b: &Browser, n: u32) -> String {
    text(b, &format!("#log-{n}"))
}

/// The rendered texts of every element matching `css`, read at one moment (a refreshing
/// part of the page cannot be swapped halfway).
fn texts(b: &Browser, css: &str) -> Vec<String> {
    let found = b.execute(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText);",
        vec![json!(css)],
    );
    serde_json::from_value(found).expect("a list of texts")
}

/// The attribute `name` of every element matching `css`, read at one moment.
fn attrs(b: &Browser, css: &str, name: &str) -> Vec<Option<String>> {
    let found = b.execute(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute(arguments[1]));",
        vec![json!(css), json!(name)],
    );
    serde_json::from_value(found).expect("a list of attributes")
}

/// The trimmed text of the first element matching `css`; fails the test when none does.
fn text(b: &Browser, css: &str) -> String {
    b.text_of(css)
        .unwrap_or_else(|| b.find(css).text())
        .trim()
        .to_string()
}

/// Scrolls the element matching `css` to the top of the window (for its screenshot).
fn scroll_to(b: &Browser, css: &str) {
    b.execute(
        "document.querySelector(arguments[0]).scrollIntoView();",
        vec![json!(css)],
    );
}

#[test]
fn sign_in_start_a_task_watch_its_log_live_and_find_its_change_in_the_diff() {
    let site = Site::start();
    let token = site.token(&unique("web-live"));
    let env = unique("live");
    site.env_create(&token, &env, "");
    let b = browser("web-task-from-the-form");

    // Without a session every page sends the browser to sign in.
    b.goto(&site.url("/ui/tasks"));
    b.wait_for("form#sign-in");
    assert!(b.url().starts_with(&site.url("/ui/sign-in")), "{}", b.url());
    // A wrong token is refused on the same page, and no session is given.
    b.find("form#sign-in input[name=token]")
        .type_text("hgr_not-a-token-of-this-daemon");
    submit(&b, "form#sign-in button[type=submit]");
    b.wait_for("p.error");
    b.find("form#sign-in");
    assert_eq!(b.cookie("hangar_session"), None);

    sign_in(&b, &site, &token);
    let session = b.cookie("hangar_session").expect("a session cookie");
    assert!(session.http_only, "{session:?}");
    assert!(
        session.secure,
        "a cookie set over TLS is Secure: {session:?}"
    );
    assert_eq!(session.same_site, "Strict", "{session:?}");
    assert!(
        !session.value.contains(&token),
        "the cookie is a session, not the token"
    );
    b.find("a#new-task").click();
    b.wait_for("form#new-task");

    // Ten lines a second apart: the first shows while the task still runs.
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo \"step $i of 10\"; sleep 1; done\n\
                  echo 'changed from the form' >> notes.txt";
    let prompt = "Add a line to the notes";
    let id = start_task(&b, &site, &env, prompt, 1, script);
    b.wait_for_text("#log-1 span.line", "step 1 of 10");
    let now = status(&b);
    assert!(
        !FINISHED.contains(&now.as_str()),
        "the first line showed only once the task was {now}"
    );
    assert!(
        !log(&b, 1).contains("step 10 of 10"),
        "the log showed all at once"
    );
    b.screenshot("running");
    b.wait_for_text("#log-1 span.line", "step 10 of 10");
    assert_eq!(wait_finished(&b), "ready", "{}", log(&b, 1));
    let shown = log(&b, 1);
    let steps: Vec<&str> = shown
        .lines()
        .filter_map(|l| l.find("step ").map(|at| &l[at..]))
        .collect();
    let expected: Vec<String> = (1..=10).map(|i| format!("step {i} of 10")).collect();
    assert_eq!(steps, expected, "each line once, in order: {shown}");

    b.wait_for_text("#diff tr.add td.code", "changed from the form");
    let added: Vec<String> = texts(&b, "#diff tr.add td.code")
        .iter()
        .map(|t| t.trim().to_string())
        .collect();
    assert_eq!(added, ["changed from the form"]);
    assert!(b
        .try_find("#diff section.file[data-path=\"notes.txt\"]")
        .is_some());
    assert!(texts(&b, "#diff tr.ctx td.code")
        .iter()
        .any(|t| t.contains("second note")));
    assert!(b.try_find("#diff tr.del").is_none(), "nothing was removed");
    b.screenshot("task");
    scroll_to(&b, "#diff");
    b.screenshot("diff");
    let apply = text(&b, "#apply-line code");
    assert!(apply.contains(&format!("hangar apply {id}")), "{apply}");

    // The list shows it, linked, finished.
    b.goto(&site.url("/ui/tasks"));
    let row = format!("table#tasks tbody tr[data-task=\"{id}\"]");
    b.wait_for(&row);
    assert_eq!(text(&b, &format!("{row} td.status")), "ready");
    assert!(text(&b, &format!("{row} td.title")).contains(prompt));
    assert_eq!(text(&b, &format!("{row} td.env")), env);
    let link = b
        .attr_of(&format!("{row} td.id a"), "href")
        .unwrap_or_default();
    assert!(link.ends_with(&format!("/ui/tasks/{id}")), "{link}");
    b.screenshot("list");

    b.resize(PHONE);
    b.goto(&site.url(&format!("/ui/tasks/{id}")));
    b.wait_for("#diff");
    b.screenshot("task-phone");
    b.screenshot("last");
}

#[test]
fn a_best_of_three_shows_each_attempt_s_rank_and_marks_the_best() {
    let site = Site::start();
    let token = site.token(&unique("web-best"));
    let env = unique("best");
    site.env_create(&token, &env, "");
    let b = browser("web-best-of-three");
    sign_in(&b, &site, &token);

    // Attempt 2 changes one line, the others nine: the smaller diff ranks first.
    let script = "if [ \"$HANGAR_ATTEMPT\" = 2 ]; then echo 'the one line' >> notes.txt; \
                  else seq 1 9 >> notes.txt; fi";
    start_task(&b, &site, &env, "Best of three", 3, script);
    assert_eq!(wait_finished(&b), "ready");
    b.wait_for(".attempt.best");
    let mut ranks = Vec::new();
    for n in 1..=3 {
        let attempt = format!("#attempts .attempt[data-attempt=\"{n}\"]");
        assert_eq!(text(&b, &format!("{attempt} .status")), "ready");
        let rank = text(&b, &format!("{attempt} .rank"));
        let first: String = rank
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect();
        ranks.push(
            first
                .parse::<u32>()
                .unwrap_or_else(|_| panic!("attempt {n}'s rank reads {rank:?}")),
        );
    }
    assert_eq!(ranks, [2, 1, 3], "the ranks of attempts 1, 2, 3");
    assert_eq!(
        attrs(&b, "#attempts .attempt.best", "data-attempt"),
        [Some("2".to_string())]
    );
    // The diff on the page is the best attempt's.
    assert_eq!(
        texts(&b, "#diff tr.add td.code")
            .iter()
            .map(|t| t.trim().to_string())
            .collect::<Vec<_>>(),
        ["the one line"]
    );
    scroll_to(&b, "#attempts");
    b.screenshot("last");
}

#[test]
fn an_environment_s_error_shows_at_its_line_and_a_secret_s_value_never_comes_back() {
    let site = Site::start();
    let token = site.token(&unique("web-env"));
    let env = unique("edit");
    let stored = site.env_create(&token, &env, "[secrets.API_KEY]\n");
    let b = browser("web-environment");
    sign_in(&b, &site, &token);

    b.goto(&site.url("/ui/environments"));
    b.wait_for(&format!(
        "table#environments tbody tr[data-env=\"{env}\"] td.name a"
    ))
    .click();
    let file = b.wait_for("form#env-file textarea[name=file]");
    let shown = file
        .prop("value")
        .as_str()
        .unwrap_or_default()
        .replace("\r\n", "\n");
    assert!(shown.contains(&format!("name = \"{env}\"")), "{shown}");
    assert!(shown.contains(&site.repo_url), "{shown}");

    // A misspelt table: refused, the typed text kept, the error at its line.
    let bad = format!("{}\n[agnet]\nscript = \"x\"\n", shown.trim_end());
    let line = bad.lines().position(|l| l == "[agnet]").unwrap() + 1;
    file.clear();
    file.type_text(&bad);
    submit(&b, "form#env-file button[type=submit]");
    let item = b.wait_for(&format!("ol#diagnostics li[data-line=\"{line}\"]"));
    let said = item.text();
    assert!(said.contains(&format!("line {line}")), "{said}");
    assert!(said.contains("agnet"), "{said}");
    assert_eq!(
        b.find_all("ol#diagnostics li").len(),
        1,
        "{:?}",
        texts(&b, "ol#diagnostics li")
    );
    let kept = b
        .find("form#env-file textarea[name=file]")
        .prop("value")
        .as_str()
        .unwrap_or_default()
        .replace("\r\n", "\n");
    assert_eq!(kept, bad);
    b.screenshot("env-error");
    let show: Value =
        serde_json::from_str(&site.remote_ok(&token, &["env", "show", &env, "--json"])).unwrap();
    assert_eq!(show["version"], 1, "a bad file is not saved: {show}");

    // A good file is saved as a new version.
    let good = stored.replace("script = \"true\"", "script = \"echo edited\"");
    let file = b.find("form#env-file textarea[name=file]");
    file.clear();
    file.type_text(&good);
    submit(&b, "form#env-file button[type=submit]");
    assert!(
        b.try_find("ol#diagnostics").is_none(),
        "{:?}",
        texts(&b, "ol#diagnostics li")
    );
    let saved = b
        .wait_for("form#env-file textarea[name=file]")
        .prop("value");
    assert!(
        saved.as_str().is_some_and(|v| v.contains("echo edited")),
        "{saved}"
    );
    let show: Value =
        serde_json::from_str(&site.remote_ok(&token, &["env", "show", &env, "--json"])).unwrap();
    assert_eq!(show["version"], 2, "{show}");

    // A secret is set by name and value; only its name comes back.
    let value = format!("sekrit-{}", hangar_spec::TaskId::random());
    let form = b.find("form#secret-set");
    form.find("input[name=name]").type_text("API_KEY");
    let field = form.find("input[name=value]");
    assert_eq!(field.attr("type").as_deref(), Some("password"));
    field.type_text(&value);
    submit(&b, "form#secret-set button[type=submit]");
    b.wait_for("ul#secrets li[data-secret=\"API_KEY\"]");
    assert_eq!(secret_set(&site, &token, &env, "API_KEY"), Some(true));
    let mut visited = Vec::new();
    let mut check = |b: &Browser, what: &str| {
        let source = b.source();
        assert!(
            !source.contains(&value),
            "the secret's value is in {what}: {source}"
        );
        visited.push(what.to_string());
    };
    check(&b, "the page after setting it");
    for path in [
        format!("/ui/environments/{env}"),
        "/ui/environments".to_string(),
        "/ui/tasks".to_string(),
        "/ui/tasks/new".to_string(),
        "/ui/images".to_string(),
    ] {
        b.goto(&site.url(&path));
        b.wait_for("form#sign-out");
        check(&b, &path);
    }
    assert_eq!(visited.len(), 6);
    b.screenshot("secret-set");

    // Removed by its button.
    b.goto(&site.url(&format!("/ui/environments/{env}")));
    submit(
        &b,
        "ul#secrets li[data-secret=\"API_KEY\"] form.secret-remove button",
    );
    b.wait_for("form#secret-set");
    assert_eq!(secret_set(&site, &token, &env, "API_KEY"), Some(false));
    b.screenshot("last");
}

/// Whether the environment's secret `name` has a value, as the CLI lists it.
fn secret_set(site: &Site, token: &str, env: &str, name: &str) -> Option<bool> {
    let listed: Value =
        serde_json::from_str(&site.remote_ok(token, &["secret", "ls", env, "--json"])).unwrap();
    listed["secrets"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["set"].as_bool())
}

#[test]
fn another_workspace_s_token_sees_none_of_the_first_s_tasks_or_environments() {
    let site = Site::start();
    let first = site.token(&unique("web-first"));
    let second = site.token(&unique("web-second"));
    let env = unique("mine");
    site.env_create(&first, &env, "");
    let id = site
        .remote_ok(
            &first,
            &[
                "exec",
                "--quiet",
                "--env",
                &env,
                "The first workspace's task",
            ],
        )
        .trim()
        .to_string();
    let b = browser("web-workspaces");

    sign_in(&b, &site, &second);
    assert_eq!(
        texts(&b, "table#tasks tbody tr[data-task]"),
        Vec::<String>::new()
    );
    assert!(!b.source().contains(&id));
    b.goto(&site.url("/ui/environments"));
    b.wait_for("form#sign-out");
    assert!(b
        .find_all("table#environments tbody tr[data-env]")
        .is_empty());
    assert!(!b.source().contains(&env));
    b.goto(&site.url("/ui/tasks/new"));
    b.wait_for("form#new-task");
    assert!(b
        .find_all(&format!("select[name=environment] option[value=\"{env}\"]"))
        .is_empty());
    assert_eq!(status_of(&b, &format!("/ui/tasks/{id}")), 404);
    assert_eq!(status_of(&b, &format!("/ui/environments/{env}")), 404);
    b.goto(&site.url(&format!("/ui/tasks/{id}")));
    b.wait_for("form#sign-out");
    assert!(b.try_find("#task-status").is_none());
    assert!(!b.source().contains("The first workspace's task"));
    b.screenshot("second-workspace");

    // The first workspace's own token sees both.
    sign_out(&b);
    b.goto(&site.url("/ui/tasks"));
    b.wait_for("form#sign-in");
    sign_in(&b, &site, &first);
    b.wait_for(&format!("table#tasks tbody tr[data-task=\"{id}\"]"));
    b.goto(&site.url("/ui/environments"));
    b.wait_for(&format!("table#environments tbody tr[data-env=\"{env}\"]"));
    assert_eq!(status_of(&b, &format!("/ui/tasks/{id}")), 200);
    b.screenshot("last");
}

/// What a task holds, shown on its page and in the list: each must read as text.
const PAYLOADS: [&str; 3] = [
    "<script>window.__x=1</script>",
    "\"><img src=x onerror=\"window.__x=2\">",
    "javascript:alert(1)",
];

/// Nothing the payloads hold ran or became markup on the current page.
fn assert_inert(b: &Browser, page: &str) {
    assert_eq!(
        b.execute("return typeof window.__x;", vec![]),
        json!("undefined"),
        "a payload ran on {page}"
    );
    let made = b.execute(
        "return {
            img: document.querySelectorAll('img[src=\"x\"], [onerror]').length,
            script: [...document.scripts].filter(s => s.textContent.includes('__x')).length,
            href: document.querySelectorAll('[href^=\"javascript:\"], [src^=\"javascript:\"]').length,
        };",
        vec![],
    );
    assert_eq!(
        made,
        json!({"img": 0, "script": 0, "href": 0}),
        "markup on {page}"
    );
}

#[test]
fn a_task_s_prompt_log_file_names_and_diff_are_shown_as_text() {
    let site = Site::start();
    let token = site.token(&unique("web-xss"));
    let env = unique("xss");
    site.env_create(&token, &env, "");
    let b = browser("web-escaping");
    sign_in(&b, &site, &token);

    let prompt = format!("Escape {} {} {}", PAYLOADS[0], PAYLOADS[1], PAYLOADS[2]);
    // The payloads in single quotes (none holds one): printed, written into a file, as
    // two file names, and all on the last line (the final message).
    let script = format!(
        "a='{}'\nb='{}'\nc='{}'\nprintf '%s\\n' \"$a\" \"$b\" \"$c\"\n\
         printf '%s\\n' \"$a\" \"$b\" \"$c\" >> notes.txt\n\
         printf '%s\\n' \"$a\" > \"$b.txt\"\nprintf '%s\\n' \"$c\" > \"$c\"\n\
         echo \"$a $b $c\"",
        PAYLOADS[0], PAYLOADS[1], PAYLOADS[2]
    );
    let id = start_task(&b, &site, &env, &prompt, 1, &script);
    assert_eq!(wait_finished(&b), "ready", "{}", log(&b, 1));
    b.wait_for("#diff tr.add");
    assert_inert(&b, "the task's page");

    let shown = log(&b, 1);
    for p in PAYLOADS {
        assert!(shown.contains(p), "the log shows {p:?} as text: {shown}");
    }
    // The last line the agent printed is its final message.
    let last = texts(&b, ".final-message");
    let all = PAYLOADS.join(" ");
    assert!(last.iter().any(|m| m.contains(&all)), "{last:?}");
    let code = texts(&b, "#diff tr.add td.code");
    for p in PAYLOADS {
        assert!(
            code.iter().any(|c| c.trim() == p),
            "the diff shows {p:?} as text: {code:?}"
        );
    }
    let paths = attrs(&b, "#diff section.file", "data-path");
    for name in [format!("{}.txt", PAYLOADS[1]), PAYLOADS[2].to_string()] {
        assert!(
            paths.contains(&Some(name.clone())),
            "{name:?} among {paths:?}"
        );
        assert!(
            texts(&b, "#diff nav.diff-tree a")
                .iter()
                .any(|t| t.contains(&name)),
            "the file tree names {name:?}"
        );
    }
    // Every link of the file tree stays on the page.
    for href in attrs(&b, "#diff nav.diff-tree a", "href") {
        let href = href.unwrap_or_default();
        assert!(href.starts_with("#file-"), "{href}");
    }
    scroll_to(&b, "#diff");
    b.screenshot("task");

    b.goto(&site.url("/ui/tasks"));
    let row = format!("table#tasks tbody tr[data-task=\"{id}\"]");
    b.wait_for(&row);
    let title = text(&b, &format!("{row} td.title"));
    assert!(title.contains(PAYLOADS[0]), "{title}");
    assert_inert(&b, "the task list");
    b.screenshot("last");
}

/// `hangar ui`'s link, as the local admin at the daemon's host would use it: opening it
/// shows a button (a previewer fetching it uses up nothing), the button signs this
/// browser in to the default workspace as the admin, and a second use is refused.
#[test]
fn a_one_time_link_signs_the_local_admin_in_once() {
    let site = Site::start();
    let out = site.command().args(["ui", "--json"]).output().unwrap();
    let links: serde_json::Value = serde_json::from_str(&ok(&out, "ui --json")).unwrap();
    let url = links["urls"][0].as_str().unwrap().to_string();
    assert!(url.starts_with(&site.url("/ui/sign-in?code=")), "{url}");

    let b = browser("web-one-time-link");
    b.goto(&url);
    b.wait_for("form#sign-in-link");
    // Loaded again: still there, nothing used.
    b.goto(&url);
    b.wait_for("form#sign-in-link");
    submit(&b, "form#sign-in-link button[type=submit]");
    arrive(&b, "form#filters");
    assert_eq!(text(&b, "header .workspace"), "default");
    let cookie = b
        .cookies()
        .into_iter()
        .find(|c| c.name == "hangar_session")
        .expect("the session cookie");
    assert!(cookie.http_only && cookie.secure, "{cookie:?}");
    assert_eq!(cookie.same_site, "Strict");

    // The link again, in a browser signed out: used up.
    sign_out(&b);
    b.goto(&url);
    b.wait_for("form#sign-in-link");
    submit(&b, "form#sign-in-link button[type=submit]");
    b.wait_for("p.error");
    assert!(text(&b, "p.error").contains("used already or has expired"));
    b.screenshot("last");
}

/// A task page's log stream is checked against its session while it is open: removing
/// the token that signed the browser in ends the stream while the task still runs
/// (regression: only the stream's start was checked, so it streamed on).
#[test]
fn a_log_stream_ends_when_its_session_ends() {
    let site = Site::start();
    let out = site
        .command()
        .args(["token", "create", "--workspace", "default", "--json"])
        .output()
        .unwrap();
    let made: serde_json::Value = serde_json::from_str(&ok(&out, "token create")).unwrap();
    let (token_id, token) = (
        made["id"].as_str().unwrap().to_string(),
        made["token"].as_str().unwrap().to_string(),
    );
    let env = unique("stream");
    site.env_create(&token, &env, "");
    let b = browser("web-stream-ends");
    sign_in(&b, &site, &token);
    let id = start_task(
        &b,
        &site,
        &env,
        "tick for a long while",
        1,
        "for i in $(seq 1 600); do echo tick $i; sleep 1; done",
    );
    b.wait_until("the log's first ticks", |b| log(b, 1).contains("tick 2"));
    // A stream of its own, read to its end, from a page that does not refresh itself
    // (the task's page, refreshing, would be sent to sign in and lose the script).
    b.goto(&site.url("/ui/images"));
    b.wait_for("main h1");
    b.execute(
        "window.__ended = false; \
         fetch(arguments[0]).then(async r => { \
           const reader = r.body.getReader(); \
           while (!(await reader.read()).done) {} \
           window.__ended = true; });",
        vec![json!(format!("/ui/tasks/{id}/log"))],
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(b.execute("return window.__ended;", vec![]), json!(false));
    ok(
        &site
            .command()
            .args(["token", "rm", &token_id])
            .output()
            .unwrap(),
        "token rm",
    );
    b.wait_until("the stream to end", |b| {
        b.execute("return window.__ended;", vec![]) == json!(true)
    });
    // ... while the task runs on (it ticks for ten minutes).
    let shown = ok(
        &site
            .command()
            .args(["show", &id, "--json"])
            .output()
            .unwrap(),
        "show",
    );
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["status"], "running", "{shown}");
    ok(
        &site.command().args(["cancel", &id]).output().unwrap(),
        "cancel",
    );
    b.screenshot("last");
}
