//! "@hangar ..." in a comment: what it asks for.

/// What a comment asks hangar to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mention {
    /// `@hangar <prompt>`: a task.
    Task(String),
    /// `@hangar review [focus]`: a read-only review, perhaps with a focus ("for security
    /// regressions").
    Review(Option<String>),
}

/// The first mention of `handle` (`@hangar`) in `body` that starts a line or follows
/// whitespace, and what follows it to the end of the comment. A mention inside a quote
/// (`> `) or a code block is not one.
pub fn find(handle: &str, body: &str) -> Option<Mention> {
    let handle = handle.strip_prefix('@').unwrap_or(handle);
    if handle.is_empty() {
        return None;
    }
    let mut fence: Option<Fence> = None;
    let mut offset = 0;
    for line in body.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        if let Some(open) = &fence {
            if open.closed_by(line) {
                fence = None;
            }
            continue;
        }
        if let Some(open) = Fence::opened_by(line) {
            fence = Some(open);
            continue;
        }
        if line.trim_start().starts_with('>') {
            continue;
        }
        if let Some(at) = mention_in(handle, line) {
            return read(&body[start + at..]);
        }
    }
    None
}

/// Where in `line` a mention of `@handle` starts, after `@handle` (the byte offset just
/// past it).
fn mention_in(handle: &str, line: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = line[from..].find('@').map(|i| i + from) {
        from = i + 1;
        let after_ws = line[..i]
            .chars()
            .next_back()
            .is_none_or(char::is_whitespace);
        let end = i + 1 + handle.len();
        let Some(name) = line.get(i + 1..end) else {
            continue;
        };
        // A login goes on with letters, digits or `-`: `@hangarbot` is someone else.
        let whole = line[end..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_'));
        let named = name.eq_ignore_ascii_case(handle);
        if after_ws && named && whole {
            return Some(end);
        }
    }
    None
}

/// What follows a mention: a review, a task, or nothing.
fn read(rest: &str) -> Option<Mention> {
    let rest = rest.trim_start_matches([':', ',']).trim();
    if rest.is_empty() {
        return None;
    }
    let word_end = rest
        .find(|c: char| c.is_whitespace() || c == ':')
        .unwrap_or(rest.len());
    if rest[..word_end].eq_ignore_ascii_case("review") {
        let focus = rest[word_end..].trim_start_matches(':').trim();
        return Some(Mention::Review(
            (!focus.is_empty()).then(|| focus.to_string()),
        ));
    }
    Some(Mention::Task(rest.to_string()))
}

/// An open fenced code block (CommonMark: three or more backticks or tildes, indented
/// at most three spaces; closed by a run of the same character at least as long).
struct Fence {
    char: char,
    len: usize,
}

impl Fence {
    fn opened_by(line: &str) -> Option<Fence> {
        let (char, len) = fence_run(line)?;
        let info = &line.trim_start()[len..];
        // A backtick fence's info string may not hold a backtick.
        if char == '`' && info.contains('`') {
            return None;
        }
        Some(Fence { char, len })
    }

    fn closed_by(&self, line: &str) -> bool {
        fence_run(line).is_some_and(|(c, len)| {
            c == self.char && len >= self.len && line.trim_start()[len..].trim().is_empty()
        })
    }
}

fn fence_run(line: &str) -> Option<(char, usize)> {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let c = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = trimmed.chars().take_while(|x| *x == c).count();
    (len >= 3).then_some((c, len))
}

/// An ATX heading's level and text, outside code blocks.
fn heading(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let level = trimmed.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &trimmed[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim();
    Some((level, text))
}

/// The "Review guidelines" section of an AGENTS.md (its heading at any level, to the
/// next heading of the same or a higher level), without its heading.
pub fn review_guidelines(agents_md: &str) -> Option<String> {
    let mut fence: Option<Fence> = None;
    let mut section: Option<(usize, String)> = None;
    for line in agents_md.split_inclusive('\n') {
        let in_code = match &fence {
            Some(open) => {
                if open.closed_by(line) {
                    fence = None;
                }
                true
            }
            None => {
                fence = Fence::opened_by(line);
                fence.is_some()
            }
        };
        let found = if in_code { None } else { heading(line) };
        match (&mut section, found) {
            (Some((level, _)), Some((l, _))) if l <= *level => break,
            (Some((_, text)), _) => text.push_str(line),
            (None, Some((l, t))) if t.eq_ignore_ascii_case("review guidelines") => {
                section = Some((l, String::new()));
            }
            (None, _) => {}
        }
    }
    let text = section?.1;
    let text = text.trim_matches('\n').trim_end();
    (!text.trim().is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, expected: Option<Mention>) {
        assert_eq!(find("@hangar", body), expected, "{body:?}");
    }

    fn task(s: &str) -> Option<Mention> {
        Some(Mention::Task(s.to_string()))
    }

    fn review(focus: Option<&str>) -> Option<Mention> {
        Some(Mention::Review(focus.map(str::to_string)))
    }

    #[test]
    fn mentions_are_read() {
        check("@hangar fix the flaky test", task("fix the flaky test"));
        check("  @hangar   fix it  ", task("fix it"));
        check("@Hangar fix it", task("fix it"));
        check("@hangar: fix it", task("fix it"));
        check("@hangar, fix it", task("fix it"));
        check("please @hangar fix it", task("fix it"));
        check(
            "@hangar fix it\n\nsee the log:\n```\nerror\n```",
            task("fix it\n\nsee the log:\n```\nerror\n```"),
        );
        check("@hangar\nfix it", task("fix it"));
        check(
            "@hangar fix it, then ask @hangar again",
            task("fix it, then ask @hangar again"),
        );
        check("@hangar review", review(None));
        check("@hangar REVIEW", review(None));
        check("@hangar review\n", review(None));
        check(
            "@hangar review for security regressions",
            review(Some("for security regressions")),
        );
        check("@hangar review: the parser", review(Some("the parser")));
        check(
            "@hangar reviewing is not a review",
            task("reviewing is not a review"),
        );
        check("@hangar please review this", task("please review this"));
    }

    #[test]
    fn what_is_not_a_mention() {
        check("", None);
        check("@hangar", None);
        check("@hangar   \n\n", None);
        check("@hangarbot fix it", None);
        check("@hangar-ci fix it", None);
        check("@hangar_x fix it", None);
        check("mail@hangar fix it", None);
        check("`@hangar fix it`", None);
        check("> @hangar fix it", None);
        check("  > @hangar fix it", None);
        check("```\n@hangar fix it\n```", None);
        check("~~~\n@hangar fix it\n~~~", None);
        check("```sh\n@hangar fix it\n", None);
        check("````\n```\n@hangar fix it\n````", None);
        check("@hangarbot fix it\n@hangar", None);
        // Regression: a multi-byte character where the handle would end panicked.
        check("@hanga€ fix it", None);
        check("@€€€€ fix it", None);
        // Regression: the byte before `@` was read as a character (`à` ends in 0xA0, a
        // no-break space).
        check("voilà@hangar fix it", None);
    }

    #[test]
    fn a_mention_after_a_quote_or_a_block_counts() {
        check("> @hangar do not\n\n@hangar do this", task("do this"));
        check("```\n@hangar no\n```\n@hangar yes", task("yes"));
        check("@hangarbot no\n@hangar yes", task("yes"));
        check("    ```\n@hangar yes", task("yes"));
    }

    #[test]
    fn the_handle_may_be_given_without_its_at() {
        assert_eq!(find("hangar", "@hangar go"), task("go"));
        assert_eq!(find("", "@ go"), None);
    }

    fn guidelines(md: &str, expected: Option<&str>) {
        assert_eq!(review_guidelines(md).as_deref(), expected, "{md:?}");
    }

    #[test]
    fn review_guidelines_are_their_section() {
        guidelines("# Agents\n\nBuild with make.\n", None);
        guidelines(
            "# Agents\n\n## Review guidelines\n\nLook for panics.\n\nAnd leaks.\n\n## Style\n\nTabs.\n",
            Some("Look for panics.\n\nAnd leaks."),
        );
        guidelines(
            "## Review Guidelines ##\n- no unwrap\n### Details\n- really\n## Next\nx",
            Some("- no unwrap\n### Details\n- really"),
        );
        guidelines(
            "# Review guidelines\nall of it\n## sub\nstill",
            Some("all of it\n## sub\nstill"),
        );
        guidelines(
            "## Review guidelines\n```md\n# not a heading\n```\ntail\n# Next",
            Some("```md\n# not a heading\n```\ntail"),
        );
        guidelines("```\n## Review guidelines\nhidden\n```\n", None);
        guidelines("## Review guidelines\n\n## Next\n", None);
        guidelines("#Review guidelines\ntext", None);
    }
}
