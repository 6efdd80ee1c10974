//! Automatic dependency install: which lockfiles at the top of the workspace call for
//! which install command. One command per ecosystem, the most specific lockfile first;
//! `[setup.install.<tool>]` adds flags to a command or replaces it.

use std::collections::BTreeMap;

use hangar_spec::InstallChange;
/// One detected install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallStep {
    /// The file that called for it.
    pub found: &'static str,
    /// A command that succeeds when the tool is present; none when the environment gave
    /// its own command (which may install the tool first).
    pub probe: Option<&'static str>,
    /// The tool's name, for the message when it is missing.
    pub tool: &'static str,
    /// How to get the tool, for that message.
    pub get: &'static str,
    pub command: String,
}

/// One lockfile's install, as hangar runs it by default.
struct Rule {
    found: &'static str,
    probe: &'static str,
    tool: &'static str,
    get: &'static str,
    command: &'static str,
}

const COREPACK: &str = "`corepack enable` (Node ships corepack)";

/// Each ecosystem's lockfiles, most specific first; the first present one wins.
const RULES: &[&[Rule]] = &[
    &[
        Rule {
            found: "pnpm-lock.yaml",
            probe: "pnpm --version",
            tool: "pnpm",
            get: COREPACK,
            command: "pnpm install --frozen-lockfile",
        },
        Rule {
            found: "yarn.lock",
            probe: "yarn --version",
            tool: "yarn",
            get: COREPACK,
            command: "yarn install --frozen-lockfile",
        },
        Rule {
            found: "package-lock.json",
            probe: "npm --version",
            tool: "npm",
            get: "Debian's `npm` package",
            command: "npm ci",
        },
    ],
    &[
        Rule {
            found: "uv.lock",
            probe: "uv --version",
            tool: "uv",
            get: "`pip install uv`",
            command: "uv sync --frozen",
        },
        Rule {
            found: "poetry.lock",
            probe: "poetry --version",
            tool: "poetry",
            get: "`pip install poetry`",
            command: "poetry install --no-interaction --no-root",
        },
        Rule {
            found: "Pipfile.lock",
            probe: "pipenv --version",
            tool: "pipenv",
            get: "`pip install pipenv`",
            command: "pipenv sync --dev",
        },
        Rule {
            found: "requirements.txt",
            probe: "python3 -m pip --version",
            tool: "pip",
            get: "Debian's `python3-pip` package",
            command: "python3 -m pip install -r requirements.txt",
        },
    ],
    &[Rule {
        found: "Cargo.lock",
        probe: "cargo --version",
        tool: "cargo",
        get: "Debian's `cargo` package",
        command: "cargo fetch",
    }],
    &[Rule {
        found: "go.sum",
        probe: "go version",
        tool: "go",
        get: "Debian's `golang-go` package",
        command: "go mod download",
    }],
];

/// The install steps for a workspace whose top-level entries are `files`, with the
/// environment's changes to them.
pub fn plan<S: AsRef<str>>(
    files: &[S],
    changes: &BTreeMap<String, InstallChange>,
) -> Vec<InstallStep> {
    let has = |name: &str| files.iter().any(|f| f.as_ref() == name);
    RULES
        .iter()
        .filter_map(|eco| eco.iter().find(|r| has(r.found)))
        .map(|r| {
            let (probe, command) = match changes.get(r.tool) {
                None => (Some(r.probe), r.command.to_string()),
                Some(InstallChange::Args(args)) => (Some(r.probe), format!("{} {args}", r.command)),
                Some(InstallChange::Command(c)) => (None, c.clone()),
            };
            InstallStep {
                found: r.found,
                probe,
                tool: r.tool,
                get: r.get,
                command,
            }
        })
        .collect()
}

/// Bash that fails with a message naming the first tool the image lacks and how to get
/// it, so that a missing tool is reported as such rather than as "command not found".
pub fn probe_script(steps: &[InstallStep]) -> String {
    steps
        .iter()
        .filter_map(|s| {
            let probe = s.probe?;
            let said = format!(
                "{found} calls for `{tool}`, which the image lacks: use the default image \
                 (leave out `image`), build an image with it (hangar image build NAME --from \
                 debian-trixie -p PKG...; {tool}: {get}), give the command that installs it \
                 first ([setup.install.{tool}] command = \"...\"), or set [setup] \
                 auto_install = false",
                found = s.found,
                tool = s.tool,
                get = s.get,
            );
            Some(format!(
                "if ! {probe} >/dev/null 2>&1; then\n  echo {} >&2\n  exit 127\nfi\n",
                shell_quote(&said)
            ))
        })
        .collect()
}

/// Bash that runs the install commands, announcing each.
pub fn install_script(steps: &[InstallStep]) -> String {
    steps
        .iter()
        .map(|s| {
            format!(
                "echo {announce}\n{command}\n",
                announce = shell_quote(&format!(
                    "hangar: auto-install: {} found: {}",
                    s.found, s.command
                )),
                command = s.command
            )
        })
        .collect()
}

/// `s` in single quotes for bash.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(files: &[&str], expected: &[&str]) {
        let got: Vec<_> = plan(files, &BTreeMap::new())
            .into_iter()
            .map(|s| s.command)
            .collect();
        assert_eq!(got, expected, "{files:?}");
    }

    #[test]
    fn lockfiles_pick_installs() {
        check(&["README.md", "src"], &[]);
        check(&["package.json"], &[]);
        check(&["package.json", "package-lock.json"], &["npm ci"]);
        check(
            &["yarn.lock", "package-lock.json"],
            &["yarn install --frozen-lockfile"],
        );
        check(
            &["pnpm-lock.yaml", "yarn.lock"],
            &["pnpm install --frozen-lockfile"],
        );
        check(
            &["requirements.txt"],
            &["python3 -m pip install -r requirements.txt"],
        );
        check(&["Pipfile", "Pipfile.lock"], &["pipenv sync --dev"]);
        check(
            &["poetry.lock", "requirements.txt"],
            &["poetry install --no-interaction --no-root"],
        );
        check(&["uv.lock", "poetry.lock"], &["uv sync --frozen"]);
        check(&["Cargo.toml", "Cargo.lock"], &["cargo fetch"]);
        check(&["go.mod", "go.sum"], &["go mod download"]);
        check(
            &["go.sum", "Cargo.lock", "package-lock.json", "uv.lock"],
            &[
                "npm ci",
                "uv sync --frozen",
                "cargo fetch",
                "go mod download",
            ],
        );
    }

    #[test]
    fn scripts_probe_then_install() {
        let steps = plan(&["Cargo.lock", "requirements.txt"], &BTreeMap::new());
        let probe = probe_script(&steps);
        assert!(probe.contains("if ! cargo --version"), "{probe}");
        assert!(
            probe.contains("requirements.txt calls for `pip`"),
            "{probe}"
        );
        let install = install_script(&steps);
        assert_eq!(
            install.lines().nth(1),
            Some("python3 -m pip install -r requirements.txt")
        );
        assert_eq!(install.lines().nth(3), Some("cargo fetch"));
    }

    #[test]
    fn every_tool_the_environment_file_names_has_its_rule() {
        let mut tools: Vec<&str> = RULES
            .iter()
            .flat_map(|e| e.iter().map(|r| r.tool))
            .collect();
        let mut named = hangar_spec::INSTALL_TOOLS.to_vec();
        tools.sort();
        named.sort();
        assert_eq!(tools, named);
    }

    /// Regression: auto-install ran before the setup script, so a tool the image lacked
    /// could not be installed first; nor could a command be given flags.
    #[test]
    fn the_environment_adds_flags_or_gives_its_own_command() {
        let changes = BTreeMap::from([
            ("npm".to_string(), InstallChange::Args("--no-audit".into())),
            (
                "uv".to_string(),
                InstallChange::Command("pip install uv && uv sync --frozen".into()),
            ),
        ]);
        let steps = plan(&["package-lock.json", "uv.lock"], &changes);
        let got: Vec<(&str, Option<&str>)> = steps
            .iter()
            .map(|s| (s.command.as_str(), s.probe))
            .collect();
        assert_eq!(
            got,
            [
                ("npm ci --no-audit", Some("npm --version")),
                ("pip install uv && uv sync --frozen", None)
            ]
        );
        // Only the tool hangar runs itself is probed.
        let probe = probe_script(&steps);
        assert!(probe.contains("if ! npm --version"), "{probe}");
        assert!(!probe.contains("uv --version"), "{probe}");
        assert!(
            probe.contains(
                "package-lock.json calls for `npm`, which the image lacks: use the default image"
            ),
            "{probe}"
        );
        assert!(probe.contains("[setup.install.npm] command"), "{probe}");
        hangar_testkit::assert_bash_parses(&probe, "probe");
        let install = install_script(&steps);
        hangar_testkit::assert_bash_parses(&install, "install");
        assert!(
            install.contains(
                "echo 'hangar: auto-install: uv.lock found: pip install uv && uv sync --frozen'"
            ),
            "{install}"
        );
    }
}
