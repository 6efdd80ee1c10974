//! Automatic dependency install: which lockfiles at the top of the workspace call for
//! which install command. One command per ecosystem, the most specific lockfile first.

use serde::Serialize;

/// One detected install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstallStep {
    /// The file that called for it.
    pub found: &'static str,
    /// A command that succeeds when the tool is present.
    pub probe: &'static str,
    /// The tool's name, for the message when it is missing.
    pub tool: &'static str,
    pub command: &'static str,
}

/// Each ecosystem's lockfiles, most specific first; the first present one wins.
const RULES: &[&[InstallStep]] = &[
    &[
        InstallStep {
            found: "pnpm-lock.yaml",
            probe: "pnpm --version",
            tool: "pnpm",
            command: "pnpm install --frozen-lockfile",
        },
        InstallStep {
            found: "yarn.lock",
            probe: "yarn --version",
            tool: "yarn",
            command: "yarn install --frozen-lockfile",
        },
        InstallStep {
            found: "package-lock.json",
            probe: "npm --version",
            tool: "npm",
            command: "npm ci",
        },
    ],
    &[
        InstallStep {
            found: "uv.lock",
            probe: "uv --version",
            tool: "uv",
            command: "uv sync --frozen",
        },
        InstallStep {
            found: "poetry.lock",
            probe: "poetry --version",
            tool: "poetry",
            command: "poetry install --no-interaction --no-root",
        },
        InstallStep {
            found: "Pipfile.lock",
            probe: "pipenv --version",
            tool: "pipenv",
            command: "pipenv sync --dev",
        },
        InstallStep {
            found: "requirements.txt",
            probe: "python3 -m pip --version",
            tool: "pip",
            command: "python3 -m pip install -r requirements.txt",
        },
    ],
    &[InstallStep {
        found: "Cargo.lock",
        probe: "cargo --version",
        tool: "cargo",
        command: "cargo fetch",
    }],
    &[InstallStep {
        found: "go.sum",
        probe: "go version",
        tool: "go",
        command: "go mod download",
    }],
];

/// The install steps for a workspace whose top-level entries are `files`.
pub fn plan<S: AsRef<str>>(files: &[S]) -> Vec<InstallStep> {
    let has = |name: &str| files.iter().any(|f| f.as_ref() == name);
    RULES
        .iter()
        .filter_map(|eco| eco.iter().find(|s| has(s.found)).cloned())
        .collect()
}

/// Bash that fails with a message naming the first tool the image lacks, so that a
/// missing tool is reported as such rather than as "command not found".
pub fn probe_script(steps: &[InstallStep]) -> String {
    steps
        .iter()
        .map(|s| {
            format!(
                "if ! {probe} >/dev/null 2>&1; then\n  \
                 echo '{found} calls for `{tool}`, which the image lacks (add it to the image, or set [setup] auto_install = false)' >&2\n  \
                 exit 127\nfi\n",
                probe = s.probe,
                found = s.found,
                tool = s.tool,
            )
        })
        .collect()
}

/// Bash that runs the install commands, announcing each.
pub fn install_script(steps: &[InstallStep]) -> String {
    steps
        .iter()
        .map(|s| {
            format!(
                "echo 'hangar: auto-install: {found} found: {command}'\n{command}\n",
                found = s.found,
                command = s.command
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(files: &[&str], expected: &[&str]) {
        let got: Vec<_> = plan(files).iter().map(|s| s.command).collect();
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
        let steps = plan(&["Cargo.lock", "requirements.txt"]);
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
}
