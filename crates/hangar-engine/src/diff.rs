//! Reading what a diff touches: the summary counts from `git diff --numstat`, the
//! paths of a patch, checked so that applying it cannot write outside the repository, and
//! what an oversized patch is made of.

use hangar_spec::gitpath::unquote;
use hangar_store::db::DiffSummary;

use crate::error::{EngineError, Result};

/// Counts from `git diff --numstat` output (binary files count as changed, 0 lines).
pub fn summary(numstat: &str) -> DiffSummary {
    let mut s = DiffSummary::default();
    for line in numstat.lines().filter(|l| !l.trim().is_empty()) {
        let mut cols = line.splitn(3, '\t');
        let added = cols.next().and_then(|c| c.parse::<u32>().ok()).unwrap_or(0);
        let removed = cols.next().and_then(|c| c.parse::<u32>().ok()).unwrap_or(0);
        s.files_changed += 1;
        s.lines_added += added;
        s.lines_removed += removed;
    }
    s
}

/// Every path a git patch names (`diff --git`, `---`/`+++`, renames and copies),
/// unquoted. Refuses a path that is absolute, climbs with `..`, or enters `.git`.
pub fn patch_paths(patch: &[u8]) -> Result<Vec<String>> {
    let text = String::from_utf8_lossy(patch);
    let mut paths = Vec::new();
    let mut in_binary = false;
    for line in text.lines() {
        if line.starts_with("diff --git ") {
            in_binary = false;
        } else if line.starts_with("GIT binary patch") {
            in_binary = true;
        }
        if in_binary {
            continue;
        }
        let named = [
            ("--- a/", true),
            ("+++ b/", true),
            ("--- ", false),
            ("+++ ", false),
            ("rename from ", true),
            ("rename to ", true),
            ("copy from ", true),
            ("copy to ", true),
        ];
        for (prefix, strip) in named {
            if let Some(rest) = line.strip_prefix(prefix) {
                let p = unquote(rest.trim_end_matches('\t'));
                if !strip && (p == "/dev/null" || p.starts_with("a/") || p.starts_with("b/")) {
                    if p != "/dev/null" {
                        paths.push(p[2..].to_string());
                    }
                } else if strip {
                    paths.push(p);
                } else {
                    return Err(EngineError::BadPatch(format!(
                        "the path `{p}` lacks git's a/ b/ prefix"
                    )));
                }
                break;
            }
        }
    }
    for p in &paths {
        check_path(p)?;
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

fn check_path(p: &str) -> Result<()> {
    let bad = p.is_empty()
        || p.starts_with('/')
        || p.split('/')
            .any(|c| c == ".." || c.eq_ignore_ascii_case(".git"));
    if bad {
        return Err(EngineError::BadPatch(format!(
            "the path `{p}` leaves the repository or enters .git"
        )));
    }
    Ok(())
}

/// How many of an oversized patch's largest files its refusal names.
const NAMED: usize = 5;

/// Why a patch over `limit` bytes is refused, naming its largest files so the user can
/// see what to ignore or remove.
pub fn oversized(patch: &[u8], limit: u64) -> String {
    let files = file_sizes(patch);
    let largest: Vec<String> = files
        .iter()
        .take(NAMED)
        .map(|(path, size)| format!("{path} ({})", hangar_spec::format_bytes(*size as u64)))
        .collect();
    format!(
        "the diff is {}, over the limit of {} (`[agent] max_diff`), and is not kept; \
         its largest files: {}{}",
        hangar_spec::format_bytes(patch.len() as u64),
        hangar_spec::format_bytes(limit),
        largest.join(", "),
        match files.len() {
            n if n > NAMED => format!(" ({n} files in all)"),
            _ => String::new(),
        }
    )
}

/// Each file of a git patch with the bytes its part of the patch takes, largest first.
fn file_sizes(patch: &[u8]) -> Vec<(String, usize)> {
    let mut files: Vec<(String, usize)> = Vec::new();
    let mut rest = patch;
    while !rest.is_empty() {
        let next = rest
            .windows(12)
            .skip(1)
            .position(|w| w == b"\ndiff --git ")
            .map_or(rest.len(), |i| i + 2);
        let (part, tail) = rest.split_at(next);
        files.push((part_path(part), part.len()));
        rest = tail;
    }
    files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    files
}

/// The path one file's part of a patch is about: its new name, else its old one.
fn part_path(part: &[u8]) -> String {
    let text = String::from_utf8_lossy(&part[..part.len().min(64 << 10)]);
    let header = text.lines().take_while(|l| !l.starts_with("@@"));
    let mut old = None;
    for line in header {
        for prefix in ["+++ b/", "rename to ", "copy to "] {
            if let Some(p) = line.strip_prefix(prefix) {
                return unquote(p.trim_end_matches('\t'));
            }
        }
        if let Some(p) = line.strip_prefix("--- a/") {
            old = Some(unquote(p.trim_end_matches('\t')));
        }
    }
    old.unwrap_or_else(|| {
        // A binary or mode-only change names its path only in the first line.
        let first = text.lines().next().unwrap_or("");
        let names = first.strip_prefix("diff --git ").unwrap_or(first);
        match names.rsplit_once(" b/") {
            Some((_, b)) => unquote(b),
            None => names.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numstat_counts() {
        let s = summary("3\t1\tsrc/a.py\n-\t-\tlogo.png\n0\t0\t{old => new}.txt\n");
        assert_eq!(
            s,
            DiffSummary {
                files_changed: 3,
                lines_added: 3,
                lines_removed: 1
            }
        );
        assert_eq!(summary(""), DiffSummary::default());
    }

    fn check(patch: &str, expected: std::result::Result<&[&str], &str>) {
        match (patch_paths(patch.as_bytes()), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{patch}"),
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{e}"),
            (got, want) => panic!("{patch}: got {got:?}, want {want:?}"),
        }
    }

    fn file(path: &str, body_lines: usize) -> String {
        let mut f = format!("diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{body_lines} @@\n");
        for _ in 0..body_lines {
            f.push_str("+diff --git a/not-a-header b/x\n");
        }
        f
    }

    #[test]
    fn an_oversized_diff_names_its_largest_files() {
        let patch = [
            file("small.txt", 1),
            file("node_modules/big.js", 400),
            "diff --git a/logo.png b/logo.png\nindex 1..2 100644\nGIT binary patch\nliteral 9\nabcdefgh\n".to_string(),
            file("src/a b.py", 20),
        ]
        .concat();
        let sizes = file_sizes(patch.as_bytes());
        let names: Vec<&str> = sizes.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            ["node_modules/big.js", "src/a b.py", "small.txt", "logo.png"]
        );
        assert_eq!(sizes.iter().map(|(_, n)| n).sum::<usize>(), patch.len());
        let said = oversized(patch.as_bytes(), 1024);
        assert!(
            said.starts_with("the diff is 13.2KiB, over the limit of 1KiB"),
            "{said}"
        );
        assert!(
            said.contains("largest files: node_modules/big.js (12.2KiB), src/a b.py (726B)"),
            "{said}"
        );
        assert!(!said.contains("in all"), "{said}");
        let many: String = (0..7).map(|i| file(&format!("f{i}"), i)).collect();
        assert!(oversized(many.as_bytes(), 1).ends_with("(7 files in all)"));
    }

    #[test]
    fn patch_paths_stay_inside() {
        check(
            "diff --git a/x.txt b/x.txt\n--- a/x.txt\n+++ b/x.txt\n@@ -1 +1 @@\n-a\n+b\n",
            Ok(&["x.txt"]),
        );
        check(
            "diff --git a/old b/new\nsimilarity index 100%\nrename from old\nrename to new\n",
            Ok(&["new", "old"]),
        );
        check(
            "diff --git a/n b/n\nnew file mode 100644\n--- /dev/null\n+++ b/n\n",
            Ok(&["n"]),
        );
        check(
            "diff --git \"a/t\\tb\" \"b/t\\tb\"\n--- \"a/t\\tb\"\n+++ \"b/t\\tb\"\n",
            Ok(&["t\tb"]),
        );
        check(
            "diff --git a/../x b/../x\n--- a/../x\n+++ b/../x\n",
            Err("`../x` leaves the repository"),
        );
        check("--- a/.git/config\n+++ b/.git/config\n", Err("enters .git"));
        check(
            "rename from ok\nrename to /etc/passwd\n",
            Err("`/etc/passwd`"),
        );
        check(
            "--- /etc/passwd\n+++ /etc/passwd\n",
            Err("lacks git's a/ b/ prefix"),
        );
        check(
            "diff --git a/b b/b\nGIT binary patch\nliteral 4\n--- junk that is data\n",
            Ok(&[]),
        );
    }
}
