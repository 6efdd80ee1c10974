//! A unified diff (as `git diff` writes it) parsed into files and hunks, and rendered as
//! a file tree with per-file unified and side-by-side views.

use std::collections::BTreeMap;

use hangar_spec::gitpath::{unquote, unquote_prefix};
use maud::{html, Markup};
use serde::Deserialize;

/// One file's part of a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileDiff {
    /// `None` when the patch says `/dev/null` (the file is added).
    pub(crate) old_path: Option<String>,
    /// `None` when the patch says `/dev/null` (the file is deleted).
    pub(crate) new_path: Option<String>,
    pub(crate) change: Change,
    /// The modes as git writes them (`100644`), where the patch names them.
    pub(crate) old_mode: Option<String>,
    pub(crate) new_mode: Option<String>,
    pub(crate) binary: bool,
    pub(crate) hunks: Vec<Hunk>,
    /// Lines added and removed over all hunks.
    pub(crate) added: usize,
    pub(crate) removed: usize,
}

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Added,
    Deleted,
    Modified,
    /// `similarity` is git's `similarity index` in percent, where it wrote one.
    Renamed {
        similarity: Option<u8>,
    },
    Copied {
        similarity: Option<u8>,
    },
    /// Only the mode changed (e.g. the executable bit): no content, no rename.
    ModeOnly,
}

/// One `@@ -a,b +c,d @@` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hunk {
    /// The whole `@@ ... @@ context` line.
    pub(crate) header: String,
    pub(crate) old_start: u32,
    pub(crate) new_start: u32,
    pub(crate) lines: Vec<Line>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    Context,
    Add,
    Del,
}

/// One line of a hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) kind: LineKind,
    /// The line's number in the old file (context and deleted lines).
    pub(crate) old: Option<u32>,
    /// The line's number in the new file (context and added lines).
    pub(crate) new: Option<u32>,
    /// The text without its `+`/`-`/space prefix.
    pub(crate) text: String,
    /// Followed by `\ No newline at end of file`.
    pub(crate) no_newline: bool,
}

/// How a file's lines are laid out; `?view=unified|split` in the pages' URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum View {
    #[default]
    Unified,
    Split,
}

impl View {
    fn name(self) -> &'static str {
        match self {
            View::Unified => "unified",
            View::Split => "split",
        }
    }
}

/// The files of a git patch (`git diff --binary` and plain unified diffs). Never fails:
/// what it cannot read it skips, so garbage gives no files or files without hunks.
pub(crate) fn parse(text: &str) -> Vec<FileDiff> {
    let mut files = Vec::new();
    let mut file: Option<Draft> = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(d) = file.as_mut() {
            if d.hunk_line(line) {
                continue;
            }
        }
        if let Some(names) = line.strip_prefix("diff --git ") {
            files.extend(file.take().map(Draft::finish));
            file = Some(Draft::git(names));
            continue;
        }
        if file.as_ref().is_some_and(|d| d.in_binary_patch) {
            continue;
        }
        if let Some(rest) = line.strip_prefix("--- ") {
            let starts_plain = lines.peek().is_some_and(|l| l.starts_with("+++ "));
            match file.as_mut() {
                Some(d) if d.in_header() && d.minus.is_none() => {
                    d.minus = Some(diff_path(rest, "a/"));
                }
                _ if starts_plain => {
                    files.extend(file.take().map(Draft::finish));
                    file = Some(Draft {
                        minus: Some(diff_path(rest, "a/")),
                        ..Draft::default()
                    });
                }
                _ => {}
            }
            continue;
        }
        if let Some(d) = file.as_mut() {
            d.other_line(line);
        }
    }
    files.extend(file.map(Draft::finish));
    files
}

/// A file while its part of the patch is read. Paths come from three places, most
/// trusted first: `---`/`+++` (unambiguous), `rename`/`copy` lines, and the `diff --git`
/// line, which cannot be split reliably when the names contain ` b/`.
#[derive(Default)]
struct Draft {
    git_old: Option<String>,
    git_new: Option<String>,
    /// `Some(None)` is `/dev/null`.
    minus: Option<Option<String>>,
    plus: Option<Option<String>>,
    from: Option<String>,
    to: Option<String>,
    new_file: bool,
    deleted: bool,
    renamed: bool,
    copied: bool,
    similarity: Option<u8>,
    old_mode: Option<String>,
    new_mode: Option<String>,
    binary: bool,
    in_binary_patch: bool,
    hunks: Vec<Hunk>,
    /// Of the current hunk: lines still to come per its header, and the next numbers.
    old_left: u32,
    new_left: u32,
    old_no: u32,
    new_no: u32,
    added: usize,
    removed: usize,
}

impl Draft {
    fn git(names: &str) -> Draft {
        let (git_old, git_new) = git_header_paths(names);
        Draft {
            git_old,
            git_new,
            ..Draft::default()
        }
    }

    /// Before the first hunk, where git's extended header lines belong.
    fn in_header(&self) -> bool {
        self.hunks.is_empty()
    }

    /// Takes `line` if it belongs to the current hunk: the header's counts say where the
    /// hunk ends, so content that looks like a header (`+diff --git`, `----`) stays content.
    fn hunk_line(&mut self, line: &str) -> bool {
        if self.old_left == 0 && self.new_left == 0 {
            return false;
        }
        let (kind, text) = match line.as_bytes().first() {
            // An empty line is a context line whose trailing space an editor or mailer ate.
            None if self.old_left > 0 && self.new_left > 0 => (LineKind::Context, ""),
            Some(b' ') if self.old_left > 0 && self.new_left > 0 => (LineKind::Context, &line[1..]),
            Some(b'-') if self.old_left > 0 => (LineKind::Del, &line[1..]),
            Some(b'+') if self.new_left > 0 => (LineKind::Add, &line[1..]),
            Some(b'\\') => {
                self.mark_no_newline();
                return true;
            }
            _ => {
                // A hunk shorter than its header claims: what follows is read afresh.
                self.old_left = 0;
                self.new_left = 0;
                return false;
            }
        };
        let (old, new) = match kind {
            LineKind::Context => (Some(self.old_no), Some(self.new_no)),
            LineKind::Del => (Some(self.old_no), None),
            LineKind::Add => (None, Some(self.new_no)),
        };
        if old.is_some() {
            self.old_left -= 1;
            self.old_no = self.old_no.saturating_add(1);
        }
        if new.is_some() {
            self.new_left -= 1;
            self.new_no = self.new_no.saturating_add(1);
        }
        match kind {
            LineKind::Add => self.added += 1,
            LineKind::Del => self.removed += 1,
            LineKind::Context => {}
        }
        if let Some(h) = self.hunks.last_mut() {
            h.lines.push(Line {
                kind,
                old,
                new,
                text: text.to_string(),
                no_newline: false,
            });
        }
        true
    }

    fn mark_no_newline(&mut self) {
        if let Some(l) = self.hunks.last_mut().and_then(|h| h.lines.last_mut()) {
            l.no_newline = true;
        }
    }

    /// A line outside any hunk: a hunk header, an extended header line, or noise.
    fn other_line(&mut self, line: &str) {
        if line.starts_with("@@ ") {
            if let Some((old_start, old_len, new_start, new_len)) = hunk_header(line) {
                self.hunks.push(Hunk {
                    header: line.to_string(),
                    old_start,
                    new_start,
                    lines: Vec::new(),
                });
                self.old_left = old_len;
                self.new_left = new_len;
                self.old_no = old_start;
                self.new_no = new_start;
            }
            return;
        }
        if line.starts_with('\\') {
            // The marker after a hunk's last line (the counts were used up by it).
            self.mark_no_newline();
            return;
        }
        if !self.in_header() {
            return;
        }
        if let Some(rest) = line.strip_prefix("+++ ") {
            if self.plus.is_none() {
                self.plus = Some(diff_path(rest, "b/"));
            }
        } else if let Some(m) = line.strip_prefix("old mode ") {
            self.old_mode = Some(m.trim().to_string());
        } else if let Some(m) = line.strip_prefix("new mode ") {
            self.new_mode = Some(m.trim().to_string());
        } else if let Some(m) = line.strip_prefix("new file mode ") {
            self.new_file = true;
            self.new_mode = Some(m.trim().to_string());
        } else if let Some(m) = line.strip_prefix("deleted file mode ") {
            self.deleted = true;
            self.old_mode = Some(m.trim().to_string());
        } else if let Some(p) = line.strip_prefix("rename from ") {
            self.renamed = true;
            self.from = Some(unquote(p));
        } else if let Some(p) = line.strip_prefix("rename to ") {
            self.renamed = true;
            self.to = Some(unquote(p));
        } else if let Some(p) = line.strip_prefix("copy from ") {
            self.copied = true;
            self.from = Some(unquote(p));
        } else if let Some(p) = line.strip_prefix("copy to ") {
            self.copied = true;
            self.to = Some(unquote(p));
        } else if let Some(s) = line.strip_prefix("similarity index ") {
            self.similarity = s.trim().strip_suffix('%').and_then(|n| n.parse().ok());
        } else if let Some(rest) = line.strip_prefix("index ") {
            // `index abc..def 100644`: the mode of a file whose mode did not change.
            let mode = rest.split_whitespace().nth(1);
            if let (Some(m), None, None) = (mode, &self.old_mode, &self.new_mode) {
                self.old_mode = Some(m.to_string());
                self.new_mode = Some(m.to_string());
            }
        } else if line.starts_with("GIT binary patch") {
            self.binary = true;
            self.in_binary_patch = true;
        } else if let Some(rest) = line.strip_prefix("Binary files ") {
            self.binary = true;
            self.new_file |= rest.starts_with("/dev/null and ");
            self.deleted |= rest.ends_with(" and /dev/null differ");
        }
    }

    fn finish(self) -> FileDiff {
        let added = self.new_file || self.minus == Some(None);
        let deleted = !added && (self.deleted || self.plus == Some(None));
        let mode_changed = matches!((&self.old_mode, &self.new_mode), (Some(o), Some(n)) if o != n);
        let change = if added {
            Change::Added
        } else if deleted {
            Change::Deleted
        } else if self.renamed {
            Change::Renamed {
                similarity: self.similarity,
            }
        } else if self.copied {
            Change::Copied {
                similarity: self.similarity,
            }
        } else if mode_changed && self.hunks.is_empty() && !self.binary {
            Change::ModeOnly
        } else {
            Change::Modified
        };
        let old_path = match self.minus {
            Some(p) => p,
            None => self.from.or(self.git_old),
        };
        let new_path = match self.plus {
            Some(p) => p,
            None => self.to.or(self.git_new),
        };
        FileDiff {
            old_path: if added { None } else { old_path },
            new_path: if deleted { None } else { new_path },
            change,
            old_mode: self.old_mode,
            new_mode: self.new_mode,
            binary: self.binary,
            hunks: self.hunks,
            added: self.added,
            removed: self.removed,
        }
    }
}

/// `@@ -a[,b] +c[,d] @@...` as (a, b, c, d); a missing count is 1.
fn hunk_header(line: &str) -> Option<(u32, u32, u32, u32)> {
    let rest = line.strip_prefix("@@ -")?;
    let (ranges, _) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let range = |r: &str| -> Option<(u32, u32)> {
        match r.split_once(',') {
            Some((start, len)) => Some((start.parse().ok()?, len.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    let (a, b) = range(old)?;
    let (c, d) = range(new)?;
    Some((a, b, c, d))
}

/// The path of a `---`/`+++` line: `None` for `/dev/null`, else without git's `prefix`.
fn diff_path(rest: &str, prefix: &str) -> Option<String> {
    let name = if rest.starts_with('"') {
        unquote(rest)
    } else {
        // git ends a name holding a space with a tab, and plain diff a name with a tab
        // and a date; an unquoted name never holds a tab itself.
        rest.split('\t').next().unwrap_or(rest).to_string()
    };
    if name == "/dev/null" {
        return None;
    }
    Some(strip(name, prefix))
}

fn strip(name: String, prefix: &str) -> String {
    match name.strip_prefix(prefix) {
        Some(p) => p.to_string(),
        None => name,
    }
}

/// The two names of `diff --git a/X b/Y`. Unquoted names are split where both halves are
/// equal (all a header can say about a file that is not renamed), else at the first ` b/`.
fn git_header_paths(names: &str) -> (Option<String>, Option<String>) {
    if names.starts_with('"') {
        let Some((old, rest)) = unquote_prefix(names) else {
            return (None, None);
        };
        let new = rest.strip_prefix(' ').map(|r| strip(unquote(r), "b/"));
        return (Some(strip(old, "a/")), new);
    }
    if let Some(i) = names.find(" \"").filter(|_| names.ends_with('"')) {
        // Unquoted names hold no `"`, so ` "` starts the quoted second one.
        let old = strip(names[..i].to_string(), "a/");
        return (Some(old), Some(strip(unquote(&names[i + 1..]), "b/")));
    }
    if let Some(p) = names
        .strip_prefix("a/")
        .and_then(|p| equal_halves(p, " b/"))
    {
        return (Some(p.to_string()), Some(p.to_string()));
    }
    match names.split_once(" b/") {
        Some((old, new)) => (Some(strip(old.to_string(), "a/")), Some(new.to_string())),
        None => (None, None),
    }
}

/// `P` where `s` is `P`, `sep`, `P`.
fn equal_halves<'a>(s: &'a str, sep: &str) -> Option<&'a str> {
    let half = s.len().checked_sub(sep.len())? / 2;
    let first = s.get(..half)?;
    (s.get(half..half + sep.len())? == sep && s.get(half + sep.len()..)? == first).then_some(first)
}

/// A file over this many lines is not rendered with the page but on request (its own
/// fragment), so one generated file does not make the page unusable.
const LARGE: usize = 2_000;

/// The page renders at most this many lines of all its files together; the files past
/// it are rendered on request, one at a time. The page's size (and the daemon's memory
/// for it) is bounded whatever the diff.
const PAGE_LINES: usize = 10_000;

/// The tree nests at most this deep; deeper directories are shown as one name, so no
/// path makes rendering recurse without bound.
const MAX_DEPTH: usize = 32;

/// Where a diff's links go: `file_url` (no trailing slash, no query) answers one file's
/// section at `{file_url}/K?view=V`; `page_query` is the page's own query (already
/// encoded, e.g. `diff=2`, or empty), kept by the links that reload the page.
#[derive(Debug, Clone)]
pub(crate) struct Links {
    pub(crate) file_url: String,
    pub(crate) page_query: String,
}

/// The whole diff: a summary, the tree of changed files, and each file's section, the
/// files past [`PAGE_LINES`] (and any over [`LARGE`]) as a placeholder that loads them.
/// Files are numbered by their index in `files`: `#file-K`, `{file_url}/K`.
pub(crate) fn render(files: &[FileDiff], view: View, links: &Links) -> Markup {
    let added: usize = files.iter().map(|f| f.added).sum();
    let removed: usize = files.iter().map(|f| f.removed).sum();
    let mut budget = PAGE_LINES;
    let mut inline = |f: &FileDiff| {
        let lines = f.line_count();
        let fits = lines <= LARGE && lines <= budget;
        if fits {
            budget -= lines;
        }
        fits
    };
    html! {
        div #diff {
            @if files.is_empty() {
                p.diff-summary { "No files changed" }
            } @else {
                p.diff-summary {
                    (files.len()) @if files.len() == 1 { " file" } @else { " files" } " changed, "
                    (counts(added, removed))
                }
                div.diff-layout {
                    nav.diff-tree aria-label="Changed files" { (tree(files)) }
                    div.diff-files {
                        @for (i, f) in files.iter().enumerate() {
                            @if inline(f) {
                                (render_file(f, i, view, links))
                            } @else {
                                (file_section(f, i, view, links, Body::Deferred))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One file's section, `section#file-{index}`, with all its lines: what htmx swaps in
/// when the file's view changes or a deferred file is asked for.
pub(crate) fn render_file(file: &FileDiff, index: usize, view: View, links: &Links) -> Markup {
    file_section(file, index, view, links, Body::Shown)
}

/// Whether a section holds its lines or a button that loads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Shown,
    Deferred,
}

fn file_section(file: &FileDiff, index: usize, view: View, links: &Links, body: Body) -> Markup {
    let path = file.path();
    let moved = matches!(file.change, Change::Renamed { .. } | Change::Copied { .. });
    html! {
        section.file id=(format!("file-{index}")) data-path=(path) {
            header.file-header {
                h3.file-path {
                    @if let (true, Some(old), Some(new)) = (moved, &file.old_path, &file.new_path)
                    {
                        span.path-old { (old) } " \u{2192} " span.path-new { (new) }
                    } @else {
                        (path)
                    }
                }
                (badges(file))
                @if !file.binary {
                    span.counts { (counts(file.added, file.removed)) }
                }
                nav.view-switch aria-label=(format!("View of {path}")) {
                    (view_link(index, View::Unified, view, links))
                    (view_link(index, View::Split, view, links))
                }
            }
            @match body {
                Body::Shown => (file_body(file, view, path)),
                Body::Deferred => p.file-note.deferred {
                    (file.line_count()) " lines, not shown with the page. "
                    @let url = format!("{}/{index}?view={}", links.file_url, view.name());
                    a.show-file
                        href=(url)
                        hx-get=(url)
                        hx-target=(format!("#file-{index}"))
                        hx-swap="outerHTML"
                    { "Show this file" }
                },
            }
        }
    }
}

impl FileDiff {
    /// The name the file goes by: its new path, else its old one.
    fn path(&self) -> &str {
        self.new_path
            .as_deref()
            .or(self.old_path.as_deref())
            .unwrap_or("")
    }

    fn line_count(&self) -> usize {
        self.hunks.iter().map(|h| h.lines.len()).sum()
    }
}

impl Change {
    /// The letter the tree shows and the word it stands for.
    fn letter(self, binary: bool) -> (&'static str, &'static str) {
        match self {
            Change::Added => ("A", "added"),
            Change::Deleted => ("D", "deleted"),
            Change::Renamed { .. } => ("R", "renamed"),
            Change::Copied { .. } => ("C", "copied"),
            Change::Modified | Change::ModeOnly if binary => ("B", "binary"),
            Change::Modified | Change::ModeOnly => ("M", "modified"),
        }
    }
}

fn badges(file: &FileDiff) -> Markup {
    let percent = |s: Option<u8>| s.map(|s| format!(" {s}%")).unwrap_or_default();
    html! {
        span.badges {
            @match file.change {
                Change::Added => span.badge.added { "added" },
                Change::Deleted => span.badge.deleted { "deleted" },
                Change::Renamed { similarity } => {
                    span.badge.renamed { "renamed" (percent(similarity)) }
                },
                Change::Copied { similarity } => {
                    span.badge.copied { "copied" (percent(similarity)) }
                },
                Change::Modified | Change::ModeOnly => {},
            }
            @if file.binary { span.badge.binary { "binary" } }
            @if let (Some(old), Some(new)) = (&file.old_mode, &file.new_mode) {
                @if old != new { span.badge.mode { "mode " (old) " \u{2192} " (new) } }
            }
        }
    }
}

/// A link to show one file in `this` view: a whole page load without script, only the
/// file's section with htmx.
fn view_link(index: usize, this: View, current: View, links: &Links) -> Markup {
    let name = this.name();
    let page = if links.page_query.is_empty() {
        String::new()
    } else {
        format!("{}&", links.page_query)
    };
    html! {
        a.(format!("view-{name}"))
            href=(format!("?{page}view={name}#file-{index}"))
            hx-get=(format!("{}/{index}?view={name}", links.file_url))
            hx-target=(format!("#file-{index}"))
            hx-swap="outerHTML"
            aria-current=[(this == current).then_some("true")]
        {
            @match this { View::Unified => "Unified", View::Split => "Split" }
        }
    }
}

fn file_body(file: &FileDiff, view: View, path: &str) -> Markup {
    if file.binary {
        return html! { p.file-note { "Binary file, not shown" } };
    }
    if file.hunks.is_empty() {
        let note = match file.change {
            Change::Added => "Empty file",
            Change::Deleted => "Empty file deleted",
            Change::Renamed { .. } => "Renamed without changes",
            Change::Copied { .. } => "Copied without changes",
            Change::ModeOnly => "Only the mode changed",
            Change::Modified => "No changes shown",
        };
        return html! { p.file-note { (note) } };
    }
    html! {
        div.file-body tabindex="0" role="region" aria-label=(format!("Changes to {path}")) {
            @match view {
                View::Unified => (unified(file)),
                View::Split => (split(file)),
            }
        }
    }
}

fn kind_class(kind: LineKind) -> &'static str {
    match kind {
        LineKind::Context => "ctx",
        LineKind::Add => "add",
        LineKind::Del => "del",
    }
}

/// The `tr.hunk` row; its start numbers let a script or test find a hunk by line.
fn hunk_row(h: &Hunk, cols: u8) -> Markup {
    html! {
        tr.hunk data-old-start=(h.old_start) data-new-start=(h.new_start) {
            td.hunk-text colspan=(cols) { (h.header) }
        }
    }
}

/// The code cell. The `+`/`-` sign is drawn by the stylesheet, so copied code is clean.
fn code_cell(l: &Line) -> Markup {
    html! {
        td.code.(kind_class(l.kind)).no-eol[l.no_newline]
            title=[l.no_newline.then_some("No newline at end of file")]
        { (l.text) }
    }
}

fn number_cell(n: Option<u32>, kind: &str) -> Markup {
    html! { td.ln.(kind) { @if let Some(n) = n { (n) } } }
}

fn unified(file: &FileDiff) -> Markup {
    html! {
        table.unified {
            thead.sr-only {
                tr {
                    th scope="col" { "Old line" }
                    th scope="col" { "New line" }
                    th scope="col" { "Code" }
                }
            }
            tbody {
                @for h in &file.hunks {
                    (hunk_row(h, 3))
                    @for l in &h.lines {
                        @let kind = kind_class(l.kind);
                        tr.(kind) {
                            (number_cell(l.old, kind))
                            (number_cell(l.new, kind))
                            (code_cell(l))
                        }
                    }
                }
            }
        }
    }
}

fn split(file: &FileDiff) -> Markup {
    html! {
        table.split {
            // The stylesheet lays the halves out by these columns, equally wide whatever
            // their lines.
            colgroup { col.ln; col.code; col.ln; col.code; }
            thead.sr-only {
                tr {
                    th scope="col" { "Old line" }
                    th scope="col" { "Old code" }
                    th scope="col" { "New line" }
                    th scope="col" { "New code" }
                }
            }
            tbody {
                @for h in &file.hunks {
                    (hunk_row(h, 4))
                    @for (old, new) in split_rows(&h.lines) {
                        @let context = old.is_some_and(|l| l.kind == LineKind::Context);
                        tr.(if context { "ctx" } else { "change" }) {
                            (split_side(old, |l| l.old))
                            (split_side(new, |l| l.new))
                        }
                    }
                }
            }
        }
    }
}

fn split_side(line: Option<&Line>, number: impl Fn(&Line) -> Option<u32>) -> Markup {
    match line {
        Some(l) => html! { (number_cell(number(l), kind_class(l.kind))) (code_cell(l)) },
        None => html! { td.ln.empty {} td.empty {} },
    }
}

/// The rows of a side-by-side hunk: a context line on both sides; in a run of deletions
/// followed by additions, the n-th deletion beside the n-th addition, the rest beside
/// nothing.
fn split_rows(lines: &[Line]) -> Vec<(Option<&Line>, Option<&Line>)> {
    let mut rows = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        if lines[i].kind == LineKind::Context {
            rows.push((Some(&lines[i]), Some(&lines[i])));
            i += 1;
            continue;
        }
        let dels_end = i + lines[i..]
            .iter()
            .take_while(|l| l.kind == LineKind::Del)
            .count();
        let adds_end = dels_end
            + lines[dels_end..]
                .iter()
                .take_while(|l| l.kind == LineKind::Add)
                .count();
        let (dels, adds) = (&lines[i..dels_end], &lines[dels_end..adds_end]);
        for n in 0..dels.len().max(adds.len()) {
            rows.push((dels.get(n), adds.get(n)));
        }
        i = adds_end;
    }
    rows
}

/// A directory of the file tree: its subdirectories by name, its files in patch order.
#[derive(Default)]
struct Dir<'a> {
    dirs: BTreeMap<&'a str, Dir<'a>>,
    files: Vec<(&'a str, usize)>,
}

fn tree(files: &[FileDiff]) -> Markup {
    let mut root = Dir::default();
    for (i, f) in files.iter().enumerate() {
        let path = f.path();
        let mut dir = &mut root;
        let name = match path.rsplit_once('/') {
            Some((parents, name)) => {
                for part in parents.splitn(MAX_DEPTH, '/') {
                    dir = dir.dirs.entry(part).or_default();
                }
                name
            }
            None => path,
        };
        dir.files.push((name, i));
    }
    dir_list(&root, files)
}

fn dir_list(dir: &Dir, files: &[FileDiff]) -> Markup {
    html! {
        ul {
            @for (name, sub) in &dir.dirs {
                @let (label, sub) = collapse(name, sub);
                li.dir {
                    details open {
                        summary { (label) "/" }
                        (dir_list(sub, files))
                    }
                }
            }
            @for &(name, i) in &dir.files {
                @if let Some(f) = files.get(i) {
                    li.file { (tree_link(name, i, f)) }
                }
            }
        }
    }
}

/// A directory that holds only one directory is shown as one entry (`src/web/`).
fn collapse<'d, 'a>(name: &str, mut dir: &'d Dir<'a>) -> (String, &'d Dir<'a>) {
    let mut label = name.to_string();
    while dir.files.is_empty() && dir.dirs.len() == 1 {
        let Some((child, sub)) = dir.dirs.iter().next() else {
            break;
        };
        label.push('/');
        label.push_str(child);
        dir = sub;
    }
    (label, dir)
}

fn counts(added: usize, removed: usize) -> Markup {
    html! { span.added { "+" (added) } " " span.removed { "\u{2212}" (removed) } }
}

fn tree_link(name: &str, index: usize, f: &FileDiff) -> Markup {
    let (letter, word) = f.change.letter(f.binary);
    html! {
        a href=(format!("#file-{index}")) title=(f.path()) {
            abbr.badge.(word) title=(word) { (letter) }
            " "
            span.name { (name) }
            @if !f.binary {
                " "
                span.counts { (counts(f.added, f.removed)) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    fn links() -> Links {
        Links {
            file_url: "/f".into(),
            page_query: String::new(),
        }
    }
    use std::fmt::Write;

    use super::*;

    /// A parse as text, one line per file, hunk and line, so tests read as data:
    /// `change old new [modes] [binary] +A -R`, `@@ header [old new]`,
    /// `OLD NEW SIGN"text" [noeol]` (`.` for no number).
    fn dump(files: &[FileDiff]) -> String {
        let path = |p: &Option<String>| match p {
            Some(p) => format!("{p:?}"),
            None => "/dev/null".to_string(),
        };
        let number = |n: Option<u32>| n.map_or(".".to_string(), |n| n.to_string());
        let mut out = String::new();
        for f in files {
            let change = match f.change {
                Change::Added => "added".to_string(),
                Change::Deleted => "deleted".to_string(),
                Change::Modified => "modified".to_string(),
                Change::ModeOnly => "mode-only".to_string(),
                Change::Renamed { similarity } => format!("renamed {similarity:?}"),
                Change::Copied { similarity } => format!("copied {similarity:?}"),
            };
            let _ = write!(out, "{change} {} {}", path(&f.old_path), path(&f.new_path));
            if f.old_mode.is_some() || f.new_mode.is_some() {
                let m = |m: &Option<String>| m.clone().unwrap_or_else(|| "-".into());
                let _ = write!(out, " mode {}..{}", m(&f.old_mode), m(&f.new_mode));
            }
            if f.binary {
                out.push_str(" binary");
            }
            let _ = writeln!(out, " +{} -{}", f.added, f.removed);
            for h in &f.hunks {
                let _ = writeln!(out, "{} [{} {}]", h.header, h.old_start, h.new_start);
                for l in &h.lines {
                    let sign = match l.kind {
                        LineKind::Context => ' ',
                        LineKind::Add => '+',
                        LineKind::Del => '-',
                    };
                    let eol = if l.no_newline { " noeol" } else { "" };
                    let _ = writeln!(
                        out,
                        "{} {} {sign}{:?}{eol}",
                        number(l.old),
                        number(l.new),
                        l.text
                    );
                }
            }
        }
        out
    }

    /// `expected` is `dump`'s text; its lines may be indented.
    fn check(input: &str, expected: &str) {
        let want: Vec<&str> = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let files = parse(input);
        let got = dump(&files);
        assert_eq!(got.lines().collect::<Vec<_>>(), want, "input:\n{input}");
        // Whatever parses also renders, in both views, and so does every cut-off input.
        for (end, _) in input.char_indices() {
            let files = parse(&input[..end]);
            render(&files, View::Unified, &links());
            render(&files, View::Split, &links());
        }
    }

    #[test]
    fn added() {
        check(
            "diff --git a/added.txt b/added.txt\n\
             new file mode 100644\n\
             index 0000000000000000000000000000000000000000..3e757656cf36eca53338e520d134963a44f793f8\n\
             --- /dev/null\n\
             +++ b/added.txt\n\
             @@ -0,0 +1,2 @@\n\
             +new\n\
             +two\n\
             diff --git a/empty.txt b/empty.txt\n\
             new file mode 100755\n\
             index 0000000000000000000000000000000000000000..e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\n",
            r#"
            added /dev/null "added.txt" mode -..100644 +2 -0
            @@ -0,0 +1,2 @@ [0 1]
            . 1 +"new"
            . 2 +"two"
            added /dev/null "empty.txt" mode -..100755 +0 -0
            "#,
        );
    }

    #[test]
    fn deleted() {
        check(
            "diff --git a/del.txt b/del.txt\n\
             deleted file mode 100644\n\
             index 286c5f5776916d7d7d5849988ca9d83e722cf9c2..0000000000000000000000000000000000000000\n\
             --- a/del.txt\n\
             +++ /dev/null\n\
             @@ -1 +0,0 @@\n\
             -gone\n",
            r#"
            deleted "del.txt" /dev/null mode 100644..- +0 -1
            @@ -1 +0,0 @@ [1 0]
            1 . -"gone"
            "#,
        );
    }

    #[test]
    fn modified() {
        check(
            "diff --git a/src/m.rs b/src/m.rs\n\
             index 4cb29ea..a9beb14 100644\n\
             --- a/src/m.rs\n\
             +++ b/src/m.rs\n\
             @@ -1,3 +1,4 @@ fn main() {\n\
             \x20one\n\
             -two\n\
             +TWO\n\
             +2b\n\
             \x20three\n\
             @@ -10,2 +11,1 @@\n\
             \x20ten\n\
             -eleven\n\
             \n\
             diff --git a/a/x b/a/x\n\
             index 1..2 100644\n\
             --- a/a/x\n\
             +++ b/a/x\n\
             @@ -5 +5 @@\n\
             -\x20\n\
             +\n",
            r#"
            modified "src/m.rs" "src/m.rs" mode 100644..100644 +2 -2
            @@ -1,3 +1,4 @@ fn main() { [1 1]
            1 1  "one"
            2 . -"two"
            . 2 +"TWO"
            . 3 +"2b"
            3 4  "three"
            @@ -10,2 +11,1 @@ [10 11]
            10 11  "ten"
            11 . -"eleven"
            modified "a/x" "a/x" mode 100644..100644 +1 -1
            @@ -5 +5 @@ [5 5]
            5 . -" "
            . 5 +""
            "#,
        );
    }

    #[test]
    fn renamed() {
        check(
            "diff --git a/old name.txt b/new name.txt\n\
             similarity index 100%\n\
             rename from old name.txt\n\
             rename to new name.txt\n\
             diff --git a/d b/f x b/d b/f x b/g\n\
             similarity index 100%\n\
             rename from d b/f x\n\
             rename to d b/f x b/g\n\
             diff --git a/old.txt b/new.txt\n\
             similarity index 61%\n\
             rename from old.txt\n\
             rename to new.txt\n\
             index bcf3b32..353c0cb 100644\n\
             --- a/old.txt\n\
             +++ b/new.txt\n\
             @@ -3,2 +3,2 @@\n\
             \x20line3\n\
             -line4\n\
             +line4 changed\n",
            r#"
            renamed Some(100) "old name.txt" "new name.txt" +0 -0
            renamed Some(100) "d b/f x" "d b/f x b/g" +0 -0
            renamed Some(61) "old.txt" "new.txt" mode 100644..100644 +1 -1
            @@ -3,2 +3,2 @@ [3 3]
            3 3  "line3"
            4 . -"line4"
            . 4 +"line4 changed"
            "#,
        );
    }

    #[test]
    fn copied() {
        check(
            "diff --git a/m.txt b/copy of m.txt\n\
             similarity index 80%\n\
             copy from m.txt\n\
             copy to copy of m.txt\n\
             index 4cb29ea..74f9bd4 100644\n\
             --- a/m.txt\n\
             +++ b/copy of m.txt\t\n\
             @@ -1 +1,2 @@\n\
             \x20one\n\
             +more\n\
             diff --git a/a b/b\n\
             copy from a\n\
             copy to b\n",
            r#"
            copied Some(80) "m.txt" "copy of m.txt" mode 100644..100644 +1 -0
            @@ -1 +1,2 @@ [1 1]
            1 1  "one"
            . 2 +"more"
            copied None "a" "b" +0 -0
            "#,
        );
    }

    #[test]
    fn mode_only() {
        check(
            "diff --git a/mode.sh b/mode.sh\n\
             old mode 100644\n\
             new mode 100755\n\
             diff --git a/run it.sh b/run it.sh\n\
             old mode 100755\n\
             new mode 100644\n\
             index 1..2\n\
             --- a/run it.sh\t\n\
             +++ b/run it.sh\t\n\
             @@ -1 +1 @@\n\
             -a\n\
             +b\n",
            r#"
            mode-only "mode.sh" "mode.sh" mode 100644..100755 +0 -0
            modified "run it.sh" "run it.sh" mode 100755..100644 +1 -1
            @@ -1 +1 @@ [1 1]
            1 . -"a"
            . 1 +"b"
            "#,
        );
    }

    #[test]
    fn binary() {
        check(
            "diff --git a/bin.dat b/bin.dat\n\
             index 8352675..ef2caff 100644\n\
             GIT binary patch\n\
             literal 4\n\
             LcmZQzWM%;X01*HQ\n\
             \n\
             literal 3\n\
             KcmZQzWC8#H2LJ>B\n\
             \n\
             diff --git a/pic b.png b/pic b.png\n\
             new file mode 100644\n\
             index 0000000..f9e371f\n\
             GIT binary patch\n\
             literal 4\n\
             LcmZR`ODzWg0*?Vp\n\
             \n\
             literal 0\n\
             HcmV?d00001\n\
             \n\
             diff --git a/logo.png b/logo.png\n\
             index 1..2 100644\n\
             Binary files a/logo.png and b/logo.png differ\n\
             diff --git a/new.png b/new.png\n\
             new file mode 100644\n\
             index 0000000..1\n\
             Binary files /dev/null and b/new.png differ\n\
             diff --git a/old.png b/old.png\n\
             deleted file mode 100644\n\
             index 1..0000000\n\
             Binary files a/old.png and /dev/null differ\n",
            r#"
            modified "bin.dat" "bin.dat" mode 100644..100644 binary +0 -0
            added /dev/null "pic b.png" mode -..100644 binary +0 -0
            modified "logo.png" "logo.png" mode 100644..100644 binary +0 -0
            added /dev/null "new.png" mode -..100644 binary +0 -0
            deleted "old.png" /dev/null mode 100644..- binary +0 -0
            "#,
        );
    }

    #[test]
    fn quoted_paths() {
        check(
            "diff --git \"a/caf\\303\\251 x.txt\" \"b/caf\\303\\251 x.txt\"\n\
             index f2ad6c7..16f9ec0 100644\n\
             --- \"a/caf\\303\\251 x.txt\"\t\n\
             +++ \"b/caf\\303\\251 x.txt\"\t\n\
             @@ -1 +1 @@\n\
             -c\n\
             +c2\n\
             diff --git \"a/t\\tq\\\"\\\\.txt\" \"b/t\\tq\\\"\\\\.txt\"\n\
             new file mode 100644\n\
             index 0000000..d169a2f\n\
             --- /dev/null\n\
             +++ \"b/t\\tq\\\"\\\\.txt\"\n\
             @@ -0,0 +1 @@\n\
             +q2\n\
             diff --git \"a/\\303\\251t\\303\\251\" \"b/\\303\\251t\\303\\251\"\n\
             old mode 100644\n\
             new mode 100755\n\
             diff --git a/plain \"b/caf\\303\\251\"\n\
             similarity index 100%\n\
             rename from plain\n\
             rename to \"caf\\303\\251\"\n\
             diff --git a/bad b/bad\n\
             --- \"a/bad\\377\\n\"\n\
             +++ \"b/unclosed\n",
            r#"
            modified "café x.txt" "café x.txt" mode 100644..100644 +1 -1
            @@ -1 +1 @@ [1 1]
            1 . -"c"
            . 1 +"c2"
            added /dev/null "t\tq\"\\.txt" mode -..100644 +1 -0
            @@ -0,0 +1 @@ [0 1]
            . 1 +"q2"
            mode-only "été" "été" mode 100644..100755 +0 -0
            renamed Some(100) "plain" "café" +0 -0
            modified "bad�\n" "\"b/unclosed" +0 -0
            "#,
        );
    }

    #[test]
    fn paths_with_spaces() {
        check(
            "diff --git a/sp ace.txt b/sp ace.txt\n\
             index 2fa992c..fe5841d 100644\n\
             --- a/sp ace.txt\t\n\
             +++ b/sp ace.txt\t\n\
             @@ -1 +1,2 @@\n\
             \x20keep\n\
             +more\n\
             diff --git a/x b/y b/x b/y\n\
             old mode 100644\n\
             new mode 100755\n\
             diff --git a/x b/y b/z\n\
             similarity index 90%\n\
             rename from x b/y\n\
             rename to z\n\
             diff --git a/x b/y b/z\n\
             similarity index 90%\n\
             rename from x\n\
             rename to y b/z\n",
            r#"
            modified "sp ace.txt" "sp ace.txt" mode 100644..100644 +1 -0
            @@ -1 +1,2 @@ [1 1]
            1 1  "keep"
            . 2 +"more"
            mode-only "x b/y" "x b/y" mode 100644..100755 +0 -0
            renamed Some(90) "x b/y" "z" +0 -0
            renamed Some(90) "x" "y b/z" +0 -0
            "#,
        );
    }

    #[test]
    fn no_newline_at_end() {
        check(
            "diff --git a/m.txt b/m.txt\n\
             index 1..2 100644\n\
             --- a/m.txt\n\
             +++ b/m.txt\n\
             @@ -1,2 +1,2 @@\n\
             \x20one\n\
             -two\n\
             \\ No newline at end of file\n\
             +TWO\n\
             \\ No newline at end of file\n\
             diff --git a/n.txt b/n.txt\n\
             index 1..2 100644\n\
             --- a/n.txt\n\
             +++ b/n.txt\n\
             @@ -1 +1,2 @@\n\
             -a\n\
             \\ No newline at end of file\n\
             +a\n\
             +b\n",
            r#"
            modified "m.txt" "m.txt" mode 100644..100644 +1 -1
            @@ -1,2 +1,2 @@ [1 1]
            1 1  "one"
            2 . -"two" noeol
            . 2 +"TWO" noeol
            modified "n.txt" "n.txt" mode 100644..100644 +2 -1
            @@ -1 +1,2 @@ [1 1]
            1 . -"a" noeol
            . 1 +"a"
            . 2 +"b"
            "#,
        );
    }

    #[test]
    fn content_that_looks_like_headers() {
        check(
            "diff --git a/p.patch b/p.patch\n\
             index 1..2 100644\n\
             --- a/p.patch\n\
             +++ b/p.patch\n\
             @@ -1,4 +1,6 @@\n\
             ---- x\n\
             -+++ y\n\
             -@@ -1 +1 @@\n\
             \x20diff --git a/q b/q\n\
             +diff --git a/z b/z\n\
             +--- a/z\n\
             ++++ b/z\n\
             +\\ not a marker\n\
             +GIT binary patch\n\
             diff --git a/next b/next\n\
             deleted file mode 100644\n",
            r#"
            modified "p.patch" "p.patch" mode 100644..100644 +5 -3
            @@ -1,4 +1,6 @@ [1 1]
            1 . -"--- x"
            2 . -"+++ y"
            3 . -"@@ -1 +1 @@"
            4 1  "diff --git a/q b/q"
            . 2 +"diff --git a/z b/z"
            . 3 +"--- a/z"
            . 4 +"+++ b/z"
            . 5 +"\\ not a marker"
            . 6 +"GIT binary patch"
            deleted "next" /dev/null mode 100644..- +0 -0
            "#,
        );
    }

    #[test]
    fn plain_unified_diff() {
        check(
            "--- a/x.txt\t2024-01-01 00:00:00\n\
             +++ b/x.txt\t2024-01-02 00:00:00\n\
             @@ -1 +1 @@\n\
             -a\n\
             +b\n\
             --- /dev/null\n\
             +++ new.txt\n\
             @@ -0,0 +1 @@\n\
             +n\n",
            r#"
            modified "x.txt" "x.txt" +1 -1
            @@ -1 +1 @@ [1 1]
            1 . -"a"
            . 1 +"b"
            added /dev/null "new.txt" +1 -0
            @@ -0,0 +1 @@ [0 1]
            . 1 +"n"
            "#,
        );
    }

    #[test]
    fn empty_input() {
        check("", "");
        check("\n\n", "");
        assert_eq!(
            render(&[], View::Unified, &links()).into_string(),
            r#"<div id="diff"><p class="diff-summary">No files changed</p></div>"#
        );
    }

    #[test]
    fn garbage() {
        check(
            "hello\nworld\n--- not followed by plus\n@@ -1 +1 @@\n-x\n",
            "",
        );
        check(
            "diff --git\n\
             @@ -1,x +1 @@\n\
             -a\n\
             diff --git a/t b/t\n\
             --- a/t\n\
             +++ b/t\n\
             @@ -1,99999999999 +1 @@\n\
             @@ -4294967295,2 +4294967295,2 @@\n\
             \x20a\n\
             \x20b\n\
             @@ -1,5 +1,5 @@\n\
             \x20cut short\n\
             \\ No newline at end of file\n\
             stray\n\
             +after the hunk\n\
             diff --git a/\u{e9} b/\u{e9}\u{e9}\n\
             diff --git \"a/\\\n\
             diff --git \"a/x\" junk\n",
            r#"
            modified "t" "t" +0 -0
            @@ -4294967295,2 +4294967295,2 @@ [4294967295 4294967295]
            4294967295 4294967295  "a"
            4294967295 4294967295  "b"
            @@ -1,5 +1,5 @@ [1 1]
            1 1  "cut short" noeol
            modified "é" "éé" +0 -0
            modified /dev/null /dev/null +0 -0
            modified "x" "junk" +0 -0
            "#,
        );
    }

    /// A sample of several files for the rendering tests.
    const SAMPLE: &str = "diff --git a/crates/web/src/a.rs b/crates/web/src/a.rs\n\
        new file mode 100644\n\
        --- /dev/null\n\
        +++ b/crates/web/src/a.rs\n\
        @@ -0,0 +1 @@\n\
        +fn a() {}\n\
        \\ No newline at end of file\n\
        diff --git a/crates/web/src/b.rs b/crates/web/src/b.rs\n\
        index 1..2 100644\n\
        --- a/crates/web/src/b.rs\n\
        +++ b/crates/web/src/b.rs\n\
        @@ -1,7 +1,7 @@ mod b\n\
        \x20a\n\
        -b\n\
        -c\n\
        -d\n\
        +B\n\
        +C\n\
        \x20e\n\
        +f\n\
        -g\n\
        diff --git a/docs/logo.png b/docs/logo.png\n\
        index 1..2 100644\n\
        Binary files a/docs/logo.png and b/docs/logo.png differ\n\
        diff --git a/old.txt b/docs/new.txt\n\
        similarity index 61%\n\
        rename from old.txt\n\
        rename to docs/new.txt\n\
        diff --git a/run.sh b/run.sh\n\
        old mode 100644\n\
        new mode 100755\n\
        diff --git a/README.md b/README.md\n\
        deleted file mode 100644\n\
        --- a/README.md\n\
        +++ /dev/null\n\
        @@ -1 +0,0 @@\n\
        -read me\n";

    /// The text of `html` with `[`/`]` for lists, `#K` for a link to file K, and one space
    /// where a list item starts.
    fn outline(html: &str) -> String {
        let mut out = String::new();
        let mut rest = html;
        while let Some(i) = rest.find('<') {
            out.push_str(&rest[..i]);
            let end = rest[i..].find('>').expect("tag closes") + i;
            let tag = &rest[i..=end];
            match tag {
                "<ul>" => out.push('['),
                "</ul>" => out.push(']'),
                _ if tag.starts_with("<li") => out.push(' '),
                _ if tag.starts_with("<a href=\"#file-") => {
                    let k = &tag["<a href=\"#file-".len()..];
                    out.push('#');
                    out.push_str(&k[..k.find('"').expect("href closes")]);
                    out.push(' ');
                }
                _ => {}
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The first element of `html` that starts with `open`, up to its closing `close`.
    fn element<'a>(html: &'a str, open: &str, close: &str) -> &'a str {
        let start = html
            .find(open)
            .unwrap_or_else(|| panic!("no {open} in {html}"));
        let len = html[start..].find(close).expect("element closes") + close.len();
        &html[start..start + len]
    }

    /// The rows of a table as `class|cell|cell...`, each cell's text.
    fn rows(table: &str) -> Vec<String> {
        table
            .split("<tr class=\"")
            .skip(1)
            .map(|row| {
                let class = &row[..row.find('"').expect("class closes")];
                let cells = row.split("<td").skip(1).map(|cell| {
                    let text = &cell[cell.find('>').expect("td opens") + 1..];
                    &text[..text.find("</td>").expect("td closes")]
                });
                std::iter::once(class)
                    .chain(cells)
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }

    #[test]
    fn renders_summary_tree_and_sections() {
        let files = parse(SAMPLE);
        let html = render(
            &files,
            View::Unified,
            &Links {
                file_url: "/ui/tasks/t1/diff".into(),
                page_query: String::new(),
            },
        )
        .into_string();
        assert!(html.starts_with(
            "<div id=\"diff\"><p class=\"diff-summary\">6 files changed, \
             <span class=\"added\">+4</span> <span class=\"removed\">\u{2212}5</span></p>"
        ));
        let nav = element(
            &html,
            "<nav class=\"diff-tree\" aria-label=\"Changed files\">",
            "</nav>",
        );
        assert_eq!(
            outline(nav),
            "[ crates/web/src/[ #0 A a.rs +1 \u{2212}0 #1 M b.rs +3 \u{2212}4] \
             docs/[ #2 B logo.png #3 R new.txt +0 \u{2212}0] \
             #4 M run.sh +0 \u{2212}0 #5 D README.md +0 \u{2212}1]"
        );
        for (k, path) in [
            "crates/web/src/a.rs",
            "crates/web/src/b.rs",
            "docs/logo.png",
            "docs/new.txt",
            "run.sh",
            "README.md",
        ]
        .iter()
        .enumerate()
        {
            assert!(
                html.contains(&format!(
                    "<section class=\"file\" id=\"file-{k}\" data-path=\"{path}\">"
                )),
                "{path}"
            );
        }
        let header = |k: usize| element(&html, &format!("id=\"file-{k}\""), "</header>");
        assert!(header(0).contains("<span class=\"badge added\">added</span>"));
        assert!(header(2).contains("<span class=\"badge binary\">binary</span>"));
        assert!(header(3).contains(
            "<span class=\"path-old\">old.txt</span> \u{2192} <span class=\"path-new\">docs/new.txt</span>"
        ));
        assert!(header(3).contains("<span class=\"badge renamed\">renamed 61%</span>"));
        assert!(header(4).contains("<span class=\"badge mode\">mode 100644 \u{2192} 100755</span>"));
        assert!(header(5).contains("<span class=\"badge deleted\">deleted</span>"));
        assert!(header(1).contains(
            "<a class=\"view-unified\" href=\"?view=unified#file-1\" \
             hx-get=\"/ui/tasks/t1/diff/1?view=unified\" hx-target=\"#file-1\" \
             hx-swap=\"outerHTML\" aria-current=\"true\">Unified</a>\
             <a class=\"view-split\" href=\"?view=split#file-1\" \
             hx-get=\"/ui/tasks/t1/diff/1?view=split\" hx-target=\"#file-1\" \
             hx-swap=\"outerHTML\">Split</a>"
        ));
        let section = |k: usize| element(&html, &format!("id=\"file-{k}\""), "</section>");
        assert!(section(2).contains("Binary file, not shown"));
        assert!(!section(2).contains("<table"));
        assert!(section(3).contains("Renamed without changes"));
        assert!(section(4).contains("Only the mode changed"));
    }

    #[test]
    fn unified_rows() {
        let files = parse(SAMPLE);
        let html = render(&files, View::Unified, &links()).into_string();
        let table = |k: usize| {
            let section = element(&html, &format!("id=\"file-{k}\""), "</section>");
            element(section, "<table class=\"unified\">", "</table>")
        };
        assert_eq!(
            rows(table(1)),
            [
                "hunk|@@ -1,7 +1,7 @@ mod b",
                "ctx|1|1|a",
                "del|2||b",
                "del|3||c",
                "del|4||d",
                "add||2|B",
                "add||3|C",
                "ctx|5|4|e",
                "add||5|f",
                "del|6||g",
            ]
        );
        assert!(table(1).contains(
            "<tr class=\"hunk\" data-old-start=\"1\" data-new-start=\"1\"><td class=\"hunk-text\" colspan=\"3\">"
        ));
        assert!(table(1).contains(
            "<tr class=\"del\"><td class=\"ln del\">2</td><td class=\"ln del\"></td><td class=\"code del\">b</td></tr>"
        ));
        assert!(table(0).contains(
            "<td class=\"code add no-eol\" title=\"No newline at end of file\">fn a() {}</td>"
        ));
    }

    #[test]
    fn split_rows_pair_deletions_with_additions() {
        let files = parse(SAMPLE);
        let html = render_file(&files[1], 1, View::Split, &links()).into_string();
        assert!(html.starts_with("<section class=\"file\" id=\"file-1\""));
        assert!(html.contains("href=\"?view=split#file-1\" hx-get=\"/f/1?view=split\" hx-target=\"#file-1\" hx-swap=\"outerHTML\" aria-current=\"true\">"));
        assert!(!html.contains("<table class=\"unified\">"));
        let table = element(&html, "<table class=\"split\">", "</table>");
        assert_eq!(
            rows(table),
            [
                "hunk|@@ -1,7 +1,7 @@ mod b",
                "ctx|1|a|1|a",
                "change|2|b|2|B",
                "change|3|c|3|C",
                "change|4|d||",
                "ctx|5|e|4|e",
                "change|||5|f",
                "change|6|g||",
            ]
        );
        assert!(table.contains(
            "<tr class=\"change\"><td class=\"ln del\">4</td><td class=\"code del\">d</td><td class=\"ln empty\"></td><td class=\"empty\"></td></tr>"
        ));
    }

    #[test]
    fn view_reads_from_a_query() {
        assert_eq!(
            serde_json::from_str::<View>("\"split\"").ok(),
            Some(View::Split)
        );
        assert_eq!(
            serde_json::from_str::<View>("\"unified\"").ok(),
            Some(View::Unified)
        );
        assert!(serde_json::from_str::<View>("\"sideways\"").is_err());
        assert_eq!(View::default(), View::Unified);
    }

    /// Every attribute of every tag in `html` as (tag, name, value), checking that each
    /// tag is well formed: no value's quote ends early and lets text become markup.
    fn attributes(html: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let mut rest = html;
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            if rest.starts_with('/') {
                continue;
            }
            let end = rest.find([' ', '>']).expect("tag name ends");
            let tag = rest[..end].to_string();
            rest = &rest[end..];
            loop {
                rest = rest.trim_start_matches(' ');
                if let Some(r) = rest.strip_prefix('>') {
                    rest = r;
                    break;
                }
                let end = rest.find(['=', ' ', '>']).expect("attribute name ends");
                let name = rest[..end].to_string();
                rest = &rest[end..];
                let mut value = String::new();
                if let Some(r) = rest.strip_prefix("=\"") {
                    let end = r.find('"').expect("attribute value closes");
                    value = r[..end].to_string();
                    rest = &r[end + 1..];
                    assert!(
                        rest.starts_with([' ', '>']),
                        "<{tag} {name}=\"{value}\"{rest}"
                    );
                }
                out.push((tag.clone(), name, value));
            }
        }
        out
    }

    #[test]
    fn diff_content_is_text() {
        let evil = "diff --git \"a/<script>alert(1)</script>.txt\" \"b/\\\"><img src=x onerror=alert(1)>\"\n\
            similarity index 50%\n\
            rename from \"<script>alert(1)</script>.txt\"\n\
            rename to \"\\\"><img src=x onerror=alert(1)>\"\n\
            --- \"a/<script>alert(1)</script>.txt\"\n\
            +++ \"b/\\\"><img src=x onerror=alert(1)>\"\n\
            @@ -1,3 +1,3 @@ <script>alert(1)</script>\n\
            -<script>alert(1)</script>\n\
            +\"><img src=x onerror=alert(1)>\n\
            \x20javascript:alert(1)\n\
            -' onmouseover='alert(1)\n\
            +<a href=\"javascript:alert(1)\">x</a>\n\
            diff --git a/javascript:alert(1)/x b/javascript:alert(1)/x\n\
            old mode \"><img src=x>\n\
            new mode <script>\n\
            diff --git a/javascript:alert(1) b/javascript:alert(1)\n\
            new file mode 100644\n\
            --- /dev/null\n\
            +++ b/javascript:alert(1)\n\
            @@ -0,0 +1 @@\n\
            +</td></tr></table><script>alert(1)</script>\n";
        let files = parse(evil);
        assert_eq!(files.len(), 3);
        assert_eq!(
            files[0].new_path.as_deref(),
            Some("\"><img src=x onerror=alert(1)>")
        );
        for view in [View::Unified, View::Split] {
            let html = render(&files, view, &links()).into_string();
            let lower = html.to_lowercase();
            assert!(!lower.contains("<script"), "{html}");
            assert!(!lower.contains("<img"), "{html}");
            assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
            assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
            let allowed_tags = [
                "div", "p", "span", "nav", "ul", "li", "details", "summary", "a", "abbr",
                "section", "header", "h3", "table", "colgroup", "col", "thead", "tbody", "tr",
                "th", "td",
            ];
            let allowed_attributes = [
                "id",
                "class",
                "href",
                "hx-get",
                "hx-target",
                "hx-swap",
                "aria-current",
                "aria-label",
                "data-path",
                "title",
                "tabindex",
                "role",
                "colspan",
                "scope",
                "data-old-start",
                "data-new-start",
                "open",
            ];
            for (tag, name, value) in attributes(&html) {
                assert!(allowed_tags.contains(&tag.as_str()), "<{tag}> in {html}");
                assert!(
                    allowed_attributes.contains(&name.as_str()),
                    "{name} on <{tag}>"
                );
                if name == "href" {
                    assert!(
                        !value.to_lowercase().contains("javascript:"),
                        "href={value}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_large_file_renders_every_line_on_request() {
        let mut text = String::from(
            "diff --git a/big.txt b/big.txt\nindex 1..2 100644\n--- a/big.txt\n+++ b/big.txt\n@@ -1,2500 +1,3750 @@\n",
        );
        // Per four lines: one context line, one deletion, two additions.
        for i in 0..5_000 {
            let sign = ["\x20", "-", "+", "+"][i % 4];
            let _ = writeln!(text, "{sign}line {i}");
        }
        let files = parse(&text);
        assert_eq!((files[0].added, files[0].removed), (2_500, 1_250));
        // With the page: a placeholder that loads it.
        let page = render(&files, View::Unified, &links()).into_string();
        assert_eq!(page.matches("<td class=\"code ").count(), 0);
        assert!(
            page.contains("5000 lines, not shown with the page."),
            "{page}"
        );
        assert!(
            page.contains(r##"hx-get="/f/0?view=unified" hx-target="#file-0""##),
            "{page}"
        );
        // Asked for, every line.
        let unified = render_file(&files[0], 0, View::Unified, &links()).into_string();
        assert_eq!(unified.matches("<td class=\"code ").count(), 5_000);
        let rows = rows(&unified);
        assert_eq!(rows.len(), 1 + 5_000);
        assert_eq!(rows[5_000], "add||3750|line 4999");
        // Side by side, each context line is a row and each deletion shares one with the
        // first of its two additions.
        let split = render_file(&files[0], 0, View::Split, &links()).into_string();
        assert_eq!(split.matches("<tr class=\"ctx\">").count(), 1_250);
        assert_eq!(split.matches("<tr class=\"change\">").count(), 2_500);
        assert_eq!(
            split.matches("<td class=\"code ").count(),
            1_250 * 2 + 2_500 + 1_250
        );
    }

    /// A regression test for a diff whose page was 34 times its patch: past the page's
    /// budget, files wait to be asked for, so the page stays bounded.
    #[test]
    fn a_huge_diff_renders_within_a_bound() {
        let mut text = String::new();
        for f in 0..40 {
            let _ = writeln!(
                text,
                "diff --git a/f{f} b/f{f}\n--- a/f{f}\n+++ b/f{f}\n@@ -0,0 +1,1000 @@"
            );
            for i in 0..1_000 {
                let _ = writeln!(text, "+x{i}");
            }
        }
        let files = parse(&text);
        assert_eq!(files.len(), 40);
        let page = render(&files, View::Split, &links()).into_string();
        // Additions alone: one code cell a row, the old side empty.
        assert_eq!(page.matches("<td class=\"code ").count(), PAGE_LINES);
        assert_eq!(
            page.matches("not shown with the page").count(),
            40 - PAGE_LINES / 1_000
        );
        // Every file is still in the tree and has its section.
        for f in 0..40 {
            assert!(page.contains(&format!(r#"id="file-{f}""#)));
        }
    }

    #[test]
    fn view_links_keep_the_page_query() {
        let files = parse(SAMPLE);
        let links = Links {
            file_url: "/ui/tasks/t1/diff/2/file".into(),
            page_query: "diff=2".into(),
        };
        let html = render_file(&files[1], 1, View::Unified, &links).into_string();
        assert!(
            html.contains(r##"href="?diff=2&amp;view=split#file-1""##),
            "{html}"
        );
        assert!(
            html.contains(r#"hx-get="/ui/tasks/t1/diff/2/file/1?view=split""#),
            "{html}"
        );
    }
}
