//! What `hangar image build` makes: the built-in recipes (`debian-<suite>` and the default
//! image, as data here and nowhere else) and the checked names a build request carries.

use std::fmt;
use std::str::FromStr;

use crate::error::{ImageError, Result};

/// Packages every built image has: a shell, TLS roots, git, curl and python3 (what
/// hangar's harness installs need).
pub const DEFAULT_PACKAGES: &[&str] = &["bash", "ca-certificates", "git", "curl", "python3"];

/// A built-in image: what `hangar image build NAME` makes without `--from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    pub name: &'static str,
    /// Debian suite (codename).
    pub suite: &'static str,
    /// Debian packages beyond minbase (on top of [`DEFAULT_PACKAGES`]).
    pub packages: &'static [&'static str],
    /// Python packages that the suite does not ship: their wheels are downloaded by the
    /// host's pip (so the index is the host's configured one) and installed by the image's
    /// pip without a network. Each must be a wheel without dependencies.
    pub wheels: &'static [&'static str],
    /// Shell commands run last inside the image (as root, with a clean environment).
    pub commands: &'static [&'static str],
}

/// The default image ([`hangar_spec::DEFAULT_IMAGE`]): the toolchains a repository's setup
/// usually needs, in the spirit of codex-universal. trixie because bookworm's cargo (1.63)
/// cannot read today's crates index.
pub const DEFAULT_RECIPE: Recipe = Recipe {
    name: hangar_spec::DEFAULT_IMAGE,
    suite: "trixie",
    packages: &[
        "python3-pip",
        "python3-venv",
        "nodejs",
        "npm",
        "node-corepack",
        "rustc",
        "cargo",
        "golang-go",
        "build-essential",
        "pkgconf",
        "libssl-dev",
        "jq",
        "ripgrep",
        "unzip",
        "xz-utils",
    ],
    wheels: &["uv"],
    // Puts corepack's pnpm and yarn shims on PATH; each downloads its release on first use.
    // A sandbox is thrown away: pip may install for the system (PEP 668's marker would
    // refuse `pip install -r requirements.txt`, which auto-install runs).
    commands: &[
        "corepack enable",
        "rm -f /usr/lib/python3*/EXTERNALLY-MANAGED",
    ],
};

/// A Debian package name as Debian Policy (5.6.1) allows it: at least two characters of
/// lower-case letters, digits, `+`, `-` and `.`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackageName(String);

impl PackageName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PackageName {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<PackageName> {
        let bad = |reason| ImageError::BadPackageName {
            name: s.to_string(),
            reason,
        };
        if s.len() < 2 {
            return Err(bad("it is shorter than two characters"));
        }
        if !s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(bad("it must start with a lower-case letter or a digit"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        {
            return Err(bad(
                "it may hold only lower-case letters, digits, `+`, `-` and `.`",
            ));
        }
        Ok(PackageName(s.to_string()))
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Debian suite's codename (`bookworm`, `trixie`): lower-case letters and digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite(String);

impl Suite {
    /// The suite of a `debian-<suite>` name, if it is one.
    pub fn of_debian_name(name: &str) -> Option<Suite> {
        name.strip_prefix("debian-")
            .filter(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
            .map(|s| Suite(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    pub suite: Suite,
    /// Packages beyond minbase.
    pub packages: Vec<PackageName>,
    /// See [`Recipe::wheels`].
    pub wheels: Vec<String>,
    /// See [`Recipe::commands`].
    pub commands: Vec<String>,
    /// apt sources to use, in one-line format; `None` derives them from the host's.
    pub sources: Option<String>,
}

impl BuildOptions {
    /// What `hangar image build NAME [--from debian-<suite>] [-p PKG]...` builds: with
    /// `from`, [`DEFAULT_PACKAGES`] of that suite under any name; without, the built-in
    /// recipe of that name (`debian-<suite>` or [`DEFAULT_RECIPE`]). `extra` packages are
    /// added either way; every name is checked, and the first bad one is named.
    pub fn new(name: &str, from: Option<&str>, extra: &[String]) -> Result<BuildOptions> {
        let (suite, recipe) = match from {
            Some(from) => (
                Suite::of_debian_name(from).ok_or_else(|| ImageError::BadBase {
                    from: from.to_string(),
                })?,
                None,
            ),
            None if name == DEFAULT_RECIPE.name => {
                (Suite(DEFAULT_RECIPE.suite.into()), Some(&DEFAULT_RECIPE))
            }
            None => (
                Suite::of_debian_name(name).ok_or_else(|| ImageError::NoRecipe {
                    name: name.to_string(),
                })?,
                None,
            ),
        };
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut opts = BuildOptions {
            suite,
            packages: DEFAULT_PACKAGES
                .iter()
                .chain(recipe.map_or(&[][..], |r| r.packages))
                .map(|p| PackageName(p.to_string()))
                .collect(),
            wheels: strings(recipe.map_or(&[], |r| r.wheels)),
            commands: strings(recipe.map_or(&[], |r| r.commands)),
            sources: None,
        };
        for p in extra {
            let p: PackageName = p.parse()?;
            if !opts.packages.contains(&p) {
                opts.packages.push(p);
            }
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        name: &str,
        from: Option<&str>,
        extra: &[&str],
        expected: Result<(&str, &[&str]), &str>,
    ) {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let got = BuildOptions::new(name, from, &extra)
            .map(|o| {
                (
                    o.suite.to_string(),
                    o.packages.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                )
            })
            .map_err(|e| e.to_string());
        let expected = expected
            .map(|(s, p)| (s.to_string(), p.iter().map(|p| p.to_string()).collect()))
            .map_err(|e| e.to_string());
        assert_eq!(got, expected, "{name} --from {from:?} -p {extra:?}");
    }

    #[test]
    fn build_requests() {
        let base = DEFAULT_PACKAGES;
        check("debian-bookworm", None, &[], Ok(("bookworm", base)));
        check(
            "tools",
            Some("debian-bookworm"),
            &["jq", "g++", "libc6.1-dev", "jq"],
            Ok(("bookworm", &[base, &["jq", "g++", "libc6.1-dev"]].concat())),
        );
        check(
            "ubuntu-noble",
            None,
            &[],
            Err("failed to build image `ubuntu-noble`: it is no built-in image: use debian-<suite> or hangar-default, or give a base with --from debian-<suite>"),
        );
        check("debian-", None, &[], Err("failed to build image `debian-`: it is no built-in image: use debian-<suite> or hangar-default, or give a base with --from debian-<suite>"));
        check(
            "tools",
            Some("ubuntu-noble"),
            &[],
            Err("failed to build image: `--from ubuntu-noble` is not debian-<suite> (e.g. debian-bookworm)"),
        );
        check(
            "tools",
            Some("debian-bookworm"),
            &["jq", "jQ"],
            Err("failed to build image: `jQ` is not a Debian package name: it may hold only lower-case letters, digits, `+`, `-` and `.`"),
        );
        check(
            "tools",
            Some("debian-bookworm"),
            &["-jq"],
            Err("failed to build image: `-jq` is not a Debian package name: it must start with a lower-case letter or a digit"),
        );
        check(
            "tools",
            Some("debian-bookworm"),
            &["j"],
            Err("failed to build image: `j` is not a Debian package name: it is shorter than two characters"),
        );
        check(
            "tools",
            Some("debian-bookworm"),
            &["jq;rm"],
            Err("failed to build image: `jq;rm` is not a Debian package name: it may hold only lower-case letters, digits, `+`, `-` and `.`"),
        );
    }

    #[test]
    fn the_default_image_is_its_recipe() {
        let o = BuildOptions::new(hangar_spec::DEFAULT_IMAGE, None, &[]).unwrap();
        assert_eq!(o.suite.as_str(), DEFAULT_RECIPE.suite);
        assert_eq!(o.wheels, ["uv"]);
        // The wheels are installed by the image's own pip.
        assert!(o.packages.iter().any(|p| p.as_str() == "python3-pip"));
        for p in DEFAULT_RECIPE.packages {
            p.parse::<PackageName>().unwrap();
        }
    }
}
