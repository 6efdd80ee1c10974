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
    let _ = (handle, body);
    todo!()
}

/// The "Review guidelines" section of an AGENTS.md (its heading at any level, to the
/// next heading of the same or a higher level), without its heading.
pub fn review_guidelines(agents_md: &str) -> Option<String> {
    let _ = agents_md;
    todo!()
}
