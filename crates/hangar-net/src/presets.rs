//! The `package-managers` preset: the registry hosts an image's own configuration names
//! (apt sources, pip, npm, cargo, go), so private mirrors work and no host is built in.
//! Where a tool has no configuration, its default comes from the tool's own files in the
//! image (pip's index module, npm's option definitions, the registry URLs compiled into
//! cargo's and uv's binaries, go's `go.env`), never from hangar.

use hangar_spec::HostRule;

/// Reads an image's files: `read` gives a file's text, `list` a directory's entry names.
pub struct ImageFiles<'a> {
    pub read: &'a dyn Fn(&str) -> Option<String>,
    pub list: &'a dyn Fn(&str) -> Vec<String>,
    /// The image's configured environment (`PIP_INDEX_URL`, `GOPROXY`, ...).
    pub env: &'a [(String, String)],
}

/// A host the preset allows and the file (or variable) that named it.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetHost {
    pub host: HostRule,
    pub source: String,
}

/// The variables that name a package manager's registry, or where its configuration and
/// binaries are: of an environment, the only ones [`package_manager_hosts`] reads, so the
/// hosts of an image are known again from its files and these alone.
const VARS: [&str; 10] = [
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_EXTRA_INDEX_URL",
    "NPM_CONFIG_REGISTRY",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "GOPROXY",
];

/// The variables of `env` that [`package_manager_hosts`] reads, in their order.
pub fn registry_vars(env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| VARS.iter().any(|v| k.eq_ignore_ascii_case(v)))
        .cloned()
        .collect()
}

/// Every registry host the image's package managers are configured to use, deduplicated,
/// in a stable order.
pub fn package_manager_hosts(files: &ImageFiles<'_>) -> Vec<PresetHost> {
    let env = registry_vars(files.env);
    let mut found: Vec<(String, String)> = Vec::new();
    let mut add_urls = |source: &str, text: &str| {
        for url in urls(text) {
            found.push((url, source.to_string()));
        }
    };
    // apt: one-line sources and deb822 `.sources` files.
    let mut apt = vec!["/etc/apt/sources.list".to_string()];
    for name in (files.list)("/etc/apt/sources.list.d") {
        if name.ends_with(".list") || name.ends_with(".sources") {
            apt.push(format!("/etc/apt/sources.list.d/{name}"));
        }
    }
    for path in &apt {
        if let Some(text) = (files.read)(path) {
            let relevant: String = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    l.starts_with("deb ") || l.starts_with("deb-src ") || l.starts_with("URIs:")
                })
                .collect::<Vec<_>>()
                .join("\n");
            add_urls(path, &relevant);
        }
    }
    // pip: configuration files, then pip's own default index.
    let pip_conf = [
        "/etc/pip.conf",
        "/etc/xdg/pip/pip.conf",
        "/root/.pip/pip.conf",
        "/root/.config/pip/pip.conf",
    ];
    let mut pip_configured = false;
    for path in pip_conf {
        if let Some(text) = (files.read)(path) {
            let relevant = keyed_values(&text, &["index-url", "extra-index-url", "find-links"]);
            pip_configured |= !relevant.is_empty();
            add_urls(path, &relevant);
        }
    }
    for var in ["PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"] {
        if let Some((_, v)) = env.iter().find(|(k, _)| k == var) {
            pip_configured = true;
            add_urls(var, v);
        }
    }
    if !pip_configured {
        for dir in python_package_dirs(files) {
            let path = format!("{dir}/pip/_internal/models/index.py");
            if let Some(text) = (files.read)(&path) {
                let relevant: String = text
                    .lines()
                    .filter(|l| l.contains("PackageIndex("))
                    .map(|l| l.replace("file_storage_domain=\"", "\"https://"))
                    .collect::<Vec<_>>()
                    .join("\n");
                add_urls(&path, &relevant);
            }
        }
    }
    // uv (which reads no pip configuration): its configuration files and variables, else
    // the default index compiled into its binary, the one `/simple` index it names.
    let mut uv_configured = false;
    for path in ["/etc/uv/uv.toml", "/root/.config/uv/uv.toml"] {
        if let Some(text) = (files.read)(path) {
            let relevant = keyed_values(&text, &["index-url", "extra-index-url", "url"]);
            uv_configured |= !relevant.is_empty();
            add_urls(path, &relevant);
        }
    }
    for var in [
        "UV_INDEX_URL",
        "UV_DEFAULT_INDEX",
        "UV_INDEX",
        "UV_EXTRA_INDEX_URL",
    ] {
        if let Some((_, v)) = env.iter().find(|(k, _)| k == var) {
            uv_configured |= matches!(var, "UV_INDEX_URL" | "UV_DEFAULT_INDEX");
            add_urls(var, v);
        }
    }
    if !uv_configured {
        for path in [
            "/usr/local/bin/uv",
            "/usr/bin/uv",
            "/root/.local/bin/uv",
            "/root/.cargo/bin/uv",
        ] {
            if let Some(binary) = (files.read)(path) {
                for host in hosts_of_urls_at(&binary, "https://", "/simple") {
                    add_urls(path, &format!("https://{host}/"));
                }
            }
        }
    }
    // npm: user, global and built-in npmrc files; `registry=` and `@scope:registry=`; npm's
    // own default (the `registry` definition in its bundled config) unless one is set.
    let mut npm_configured = false;
    for path in [
        "/root/.npmrc",
        "/etc/npmrc",
        "/usr/etc/npmrc",
        "/usr/local/etc/npmrc",
    ] {
        if let Some(text) = (files.read)(path) {
            let registries: Vec<(&str, &str)> = text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim(), v.trim()))
                .filter(|(k, _)| k.ends_with("registry"))
                .collect();
            npm_configured |= registries.iter().any(|(k, _)| *k == "registry");
            let relevant: Vec<&str> = registries.iter().map(|(_, v)| *v).collect();
            add_urls(path, &relevant.join("\n"));
        }
    }
    if let Some((_, v)) = env
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("NPM_CONFIG_REGISTRY"))
    {
        npm_configured = true;
        add_urls("NPM_CONFIG_REGISTRY", v);
    }
    if !npm_configured {
        for path in npm_definitions() {
            if let Some(text) = (files.read)(&path) {
                add_urls(&path, &definition_default(&text, "registry"));
            }
        }
    }
    // cargo: source replacements and extra registries.
    let cargo_home = env
        .iter()
        .find(|(k, _)| k == "CARGO_HOME")
        .map(|(_, v)| v.clone());
    let mut cargo = vec![
        "/root/.cargo/config.toml".to_string(),
        "/root/.cargo/config".to_string(),
    ];
    if let Some(home) = cargo_home {
        cargo.push(format!("{home}/config.toml"));
    }
    let mut crates_io_replaced = false;
    for path in &cargo {
        if let Some(text) = (files.read)(path) {
            crates_io_replaced |= replaces_crates_io(&text);
            add_urls(path, &keyed_values(&text, &["registry", "index"]));
        }
    }
    // cargo's own default registry, compiled into the binary as its one sparse index URL
    // (the rustup proxies in `.cargo/bin` are not cargo; the toolchains' binaries are).
    // Its download host is not in the binary: the index's `config.json` names it.
    if !crates_io_replaced {
        for path in cargo_binaries(files, &env) {
            if let Some(binary) = (files.read)(&path) {
                for host in hosts_of_urls_at(&binary, "sparse+https://", "/") {
                    add_urls(&path, &format!("https://{host}/"));
                }
            }
        }
    }
    // go: the toolchain's go.env, the user's go env file, and GOPROXY.
    for path in [
        "/usr/local/go/go.env",
        "/usr/lib/go/go.env",
        "/root/.config/go/env",
    ] {
        if let Some(text) = (files.read)(path) {
            add_urls(path, &keyed_values(&text, &["GOPROXY"]));
        }
    }
    if let Some((_, v)) = env.iter().find(|(k, _)| k == "GOPROXY") {
        add_urls("GOPROXY", v);
    }

    let mut out: Vec<PresetHost> = Vec::new();
    for (authority, source) in found {
        let Ok(host) = HostRule::parse(&authority) else {
            continue;
        };
        if !out.iter().any(|p| p.host == host) {
            out.push(PresetHost { host, source });
        }
    }
    out
}

/// Where npm keeps its option definitions: in its bundled `@npmcli/config` (npm 9 and
/// later, installed from npm's own tarball under a `node_modules`), in `lib/utils/config`
/// (npm 7 and 8, and Debian's `npm`, which lives in `/usr/share/nodejs`).
fn npm_definitions() -> Vec<String> {
    let mut paths = Vec::new();
    for npm in [
        "/usr/lib/node_modules/npm",
        "/usr/local/lib/node_modules/npm",
        "/usr/share/nodejs/npm",
    ] {
        paths.push(format!(
            "{npm}/node_modules/@npmcli/config/lib/definitions/definitions.js"
        ));
        paths.push(format!("{npm}/lib/utils/config/definitions.js"));
    }
    paths.push("/usr/share/nodejs/@npmcli/config/lib/definitions/definitions.js".to_string());
    paths
}

/// The `default:` of one option in npm's definitions, written as
/// `define('NAME', {` (npm 7, 8) or `NAME: new Definition('NAME', {` (npm 9 and later).
fn definition_default(text: &str, name: &str) -> String {
    let opening = format!("('{name}', {{");
    let mut lines = text.lines().skip_while(|l| !l.contains(&opening));
    lines.next();
    lines
        .take_while(|l| !l.contains("Definition(") && !l.contains("define("))
        .find_map(|l| l.trim().strip_prefix("default:"))
        .unwrap_or_default()
        .to_string()
}

/// Whether a cargo configuration replaces the default registry's source (`replace-with` in
/// `[source.crates-io]`, or as a dotted key), so that cargo's default is not used.
fn replaces_crates_io(text: &str) -> bool {
    let mut in_section = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line.trim_matches(['[', ']']).trim() == "source.crates-io";
            continue;
        }
        let key = line.split_once('=').map(|(k, _)| k.trim());
        if key == Some("source.crates-io.replace-with") || in_section && key == Some("replace-with")
        {
            return true;
        }
    }
    false
}

/// The cargo binaries of an image: a distribution's, and each rustup toolchain's.
fn cargo_binaries(files: &ImageFiles<'_>, env: &[(String, String)]) -> Vec<String> {
    let mut paths = vec![
        "/usr/bin/cargo".to_string(),
        "/usr/local/bin/cargo".to_string(),
    ];
    let rustup_env = env.iter().find(|(k, _)| k == "RUSTUP_HOME");
    let mut homes: Vec<String> = rustup_env.map(|(_, v)| v.clone()).into_iter().collect();
    homes.extend(["/root/.rustup".to_string(), "/usr/local/rustup".to_string()]);
    homes.dedup();
    for home in homes {
        for toolchain in (files.list)(&format!("{home}/toolchains")) {
            paths.push(format!("{home}/toolchains/{toolchain}/bin/cargo"));
        }
    }
    paths
}

/// The hosts of the URLs in `text` (a binary's bytes, read lossily) that begin with
/// `scheme` and whose path begins with `path`: how a tool's compiled-in default is told
/// from the other URLs it carries (documentation links, adjacent strings). A host must
/// have a dot, since a binary's strings run into each other.
fn hosts_of_urls_at(text: &str, scheme: &str, path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, _) in text.match_indices(scheme) {
        let rest = &text[i + scheme.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || ".-:".contains(c)))
            .unwrap_or(rest.len());
        let host = rest[..end].to_ascii_lowercase();
        if host.contains('.') && rest[end..].starts_with(path) && !out.contains(&host) {
            out.push(host);
        }
    }
    out
}

/// Directories where a Python package such as pip may be installed.
fn python_package_dirs(files: &ImageFiles<'_>) -> Vec<String> {
    let mut dirs = vec!["/usr/lib/python3/dist-packages".to_string()];
    for base in ["/usr/local/lib", "/usr/lib"] {
        for name in (files.list)(base) {
            if name.starts_with("python3") {
                dirs.push(format!("{base}/{name}/site-packages"));
                dirs.push(format!("{base}/{name}/dist-packages"));
            }
        }
    }
    dirs
}

/// The values of `key = value` (or `key=value`, or `key: value`) lines for the given keys,
/// with pip's indented continuation lines.
fn keyed_values(text: &str, keys: &[&str]) -> String {
    let mut out = Vec::new();
    let mut continuing = false;
    for line in text.lines() {
        if continuing && line.starts_with([' ', '\t']) {
            out.push(line.trim().to_string());
            continue;
        }
        continuing = false;
        let Some((k, v)) = line.split_once(['=', ':']) else {
            continue;
        };
        if keys.iter().any(|key| k.trim().eq_ignore_ascii_case(key)) {
            out.push(v.trim().to_string());
            continuing = true;
        }
    }
    out.join("\n")
}

/// The `host[:port]` of every http(s) URL in `text` (also `sparse+https://`), in order.
fn urls(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let before = &rest[..i];
        rest = &rest[i + 3..];
        if !(before.ends_with("http") || before.ends_with("https")) {
            continue;
        }
        let end = rest
            .find(|c: char| "/\"',|".contains(c) || c.is_whitespace())
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        // Userinfo is not part of the host.
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        if !authority.is_empty() {
            out.push(authority.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn check(files: &[(&str, &str)], env: &[(&str, &str)], expected: &[&str]) {
        let map: BTreeMap<String, String> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        let read = |p: &str| map.get(p).cloned();
        let list = |dir: &str| {
            map.keys()
                .filter_map(|p| p.strip_prefix(&format!("{dir}/")))
                .map(|rest| rest.split('/').next().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let got: Vec<String> = package_manager_hosts(&ImageFiles {
            read: &read,
            list: &list,
            env: &env,
        })
        .iter()
        .map(|p| format!("{} ({})", p.host, p.source))
        .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn apt_one_line_and_deb822_sources() {
        check(
            &[
                (
                    "/etc/apt/sources.list",
                    "# deb http://commented.test/debian main\n\
                     deb [arch=amd64 signed-by=/k.gpg] http://mirror.test/debian bookworm main\n\
                     deb-src https://src.mirror.test:8443/debian bookworm main\n",
                ),
                (
                    "/etc/apt/sources.list.d/debian.sources",
                    "Types: deb\nURIs: http://deb.mirror.test/debian http://two.mirror.test/d\n\
                     Suites: bookworm\nSigned-By: /usr/share/keyrings/x.gpg\n",
                ),
                ("/etc/apt/sources.list.d/notes.txt", "http://ignored.test/"),
            ],
            &[],
            &[
                "mirror.test (/etc/apt/sources.list)",
                "src.mirror.test:8443 (/etc/apt/sources.list)",
                "deb.mirror.test (/etc/apt/sources.list.d/debian.sources)",
                "two.mirror.test (/etc/apt/sources.list.d/debian.sources)",
            ],
        );
    }

    #[test]
    fn pip_config_wins_over_pips_own_default() {
        let index_py = "PyPI = PackageIndex(\"https://index.pip.test/\", \
                        file_storage_domain=\"files.pip.test\")\n\
                        TestPyPI = PackageIndex(\n";
        check(
            &[(
                "/usr/lib/python3/dist-packages/pip/_internal/models/index.py",
                index_py,
            )],
            &[],
            &[
                "index.pip.test (/usr/lib/python3/dist-packages/pip/_internal/models/index.py)",
                "files.pip.test (/usr/lib/python3/dist-packages/pip/_internal/models/index.py)",
            ],
        );
        check(
            &[
                (
                    "/usr/lib/python3/dist-packages/pip/_internal/models/index.py",
                    index_py,
                ),
                (
                    "/etc/pip.conf",
                    "[global]\nindex-url = https://user:pw@pypi.mirror.test/simple\n\
                     extra-index-url =\n    https://extra.test/simple\ntimeout = 60\n",
                ),
            ],
            &[("PIP_EXTRA_INDEX_URL", "https://env.pip.test/simple")],
            &[
                "pypi.mirror.test (/etc/pip.conf)",
                "extra.test (/etc/pip.conf)",
                "env.pip.test (PIP_EXTRA_INDEX_URL)",
            ],
        );
    }

    #[test]
    fn npm_cargo_and_go() {
        check(
            &[
                (
                    "/root/.npmrc",
                    "registry=https://npm.mirror.test/\n@corp:registry=https://npm.corp.test/\n\
                     //npm.corp.test/:_authToken=abc\n",
                ),
                (
                    "/root/.cargo/config.toml",
                    "[source.crates-io]\nreplace-with = \"mirror\"\n\
                     [source.mirror]\nregistry = \"sparse+https://crates.mirror.test/index/\"\n",
                ),
                (
                    "/usr/local/go/go.env",
                    "GOPROXY=https://goproxy.test,direct\nGOSUMDB=sum.test\n",
                ),
            ],
            &[("GOPROXY", "https://corp.goproxy.test|direct")],
            &[
                "npm.mirror.test (/root/.npmrc)",
                "npm.corp.test (/root/.npmrc)",
                "crates.mirror.test (/root/.cargo/config.toml)",
                "goproxy.test (/usr/local/go/go.env)",
                "corp.goproxy.test (GOPROXY)",
            ],
        );
    }

    const NPM_DEFINITIONS: &str =
        "/usr/lib/node_modules/npm/node_modules/@npmcli/config/lib/definitions/definitions.js";
    const DEBIAN_NPM_DEFINITIONS: &str = "/usr/share/nodejs/npm/lib/utils/config/definitions.js";
    const CARGO: &str = "/root/.rustup/toolchains/stable-x86_64/bin/cargo";
    const UV: &str = "/usr/local/bin/uv";

    /// The tools' own files, as npm's tarball, Debian's npm, a rustup toolchain's cargo and
    /// uv's binary carry them (binaries as the engine reads them: lossy text, strings run
    /// together).
    fn tools() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                NPM_DEFINITIONS,
                "  'prefer-online': new Definition('prefer-online', {\n    default: false,\n  }),\n\
                 \x20 registry: new Definition('registry', {\n\
                 \x20   default: 'https://registry.example.test/',\n    type: url,\n  }),\n\
                 \x20 'replace-registry-host': new Definition('replace-registry-host', {\n\
                 \x20   default: 'https://not-a-registry.example.test/',\n",
            ),
            (
                DEBIAN_NPM_DEFINITIONS,
                "define('registry', {\n  default: 'https://debian-npm.example.test/',\n",
            ),
            (
                CARGO,
                "\u{7f}ELF\u{fffd}https://docs.example.test/book/sparse+https://iints\u{fffd}\
                 sparse+https://index.crates.example.test/https://git.example.test/index",
            ),
            (
                UV,
                "\u{7f}ELF\u{fffd}https://docs.example.test/guide \
                 https://pypi.example.test/simple>)The default\u{fffd}https://pypi.example.test/simple",
            ),
        ]
    }

    /// Regression: with no npmrc and no cargo configuration the preset opened neither npm's
    /// nor cargo's registry, and without pip in the image no Python index at all.
    #[test]
    fn the_defaults_of_npm_cargo_and_uv_come_from_their_own_files() {
        check(
            &tools(),
            &[],
            &[
                "pypi.example.test (/usr/local/bin/uv)",
                &format!("registry.example.test ({NPM_DEFINITIONS})"),
                &format!("debian-npm.example.test ({DEBIAN_NPM_DEFINITIONS})"),
                &format!("index.crates.example.test ({CARGO})"),
            ],
        );
        // A scoped registry is used beside the default, not instead of it.
        let mut files = tools();
        files.push(("/root/.npmrc", "@corp:registry=https://npm.corp.test/\n"));
        check(
            &files,
            &[],
            &[
                "pypi.example.test (/usr/local/bin/uv)",
                "npm.corp.test (/root/.npmrc)",
                &format!("registry.example.test ({NPM_DEFINITIONS})"),
                &format!("debian-npm.example.test ({DEBIAN_NPM_DEFINITIONS})"),
                &format!("index.crates.example.test ({CARGO})"),
            ],
        );
    }

    #[test]
    fn a_configured_registry_replaces_the_tools_default() {
        let mut files = tools();
        files.extend([
            ("/root/.npmrc", "registry=https://npm.mirror.test/\n"),
            (
                "/root/.cargo/config.toml",
                "[source.crates-io]\nreplace-with = \"mirror\"\n\
                 [source.mirror]\nregistry = \"sparse+https://crates.mirror.test/index/\"\n",
            ),
            (
                "/etc/uv/uv.toml",
                "[[index]]\nurl = \"https://uv.mirror.test/simple\"\ndefault = true\n",
            ),
        ]);
        check(
            &files,
            &[],
            &[
                "uv.mirror.test (/etc/uv/uv.toml)",
                "npm.mirror.test (/root/.npmrc)",
                "crates.mirror.test (/root/.cargo/config.toml)",
            ],
        );
        check(
            &tools(),
            &[
                ("UV_DEFAULT_INDEX", "https://env.uv.test/simple"),
                ("NPM_CONFIG_REGISTRY", "https://env.npm.test/"),
            ],
            &[
                "env.uv.test (UV_DEFAULT_INDEX)",
                "env.npm.test (NPM_CONFIG_REGISTRY)",
                &format!("index.crates.example.test ({CARGO})"),
            ],
        );
    }

    #[test]
    fn an_image_without_package_managers_opens_nothing() {
        check(&[("/etc/hostname", "x")], &[], &[]);
    }
}
