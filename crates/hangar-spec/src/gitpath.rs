//! How git writes a path in a patch's headers: C-quoted (`"a\tb\303\251"`) when it
//! holds a byte it would not print, else as it is. Both the engine (which checks what a
//! patch touches) and the web UI (which shows it) read it back with this.

/// A name as git writes it: C-quoted (`"a\tb\303\251"`) or as is.
pub fn unquote(s: &str) -> String {
    if s.starts_with('"') {
        if let Some((name, _)) = unquote_prefix(s) {
            return name;
        }
    }
    s.to_string()
}

/// The C-quoted string `s` starts with, decoded (bytes that are not UTF-8 become U+FFFD),
/// and what follows its closing quote; `None` if it does not close.
pub fn unquote_prefix(s: &str) -> Option<(String, &str)> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some((String::from_utf8_lossy(&out).into_owned(), &s[i + 1..])),
            b'\\' => {
                i += 1;
                let Some(&e) = bytes.get(i) else { break };
                match e {
                    b'0'..=b'7' => {
                        let mut v: u32 = 0;
                        let mut n = 0;
                        while n < 3 && matches!(bytes.get(i), Some(b'0'..=b'7')) {
                            v = v * 8 + u32::from(bytes[i] - b'0');
                            i += 1;
                            n += 1;
                        }
                        // Three octal digits can exceed a byte (`\777`); git never writes that.
                        out.push((v & 0xff) as u8);
                        continue;
                    }
                    b'a' => out.push(0x07),
                    b'b' => out.push(0x08),
                    b't' => out.push(b'\t'),
                    b'n' => out.push(b'\n'),
                    b'v' => out.push(0x0b),
                    b'f' => out.push(0x0c),
                    b'r' => out.push(b'\r'),
                    other => out.push(other),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(quoted: &str, expected: &str) {
        assert_eq!(unquote(quoted), expected, "{quoted}");
    }

    #[test]
    fn quoted_paths_read_back_as_git_wrote_them() {
        check("plain/name.rs", "plain/name.rs");
        check(r#""a\tb""#, "a\tb");
        check(r#""caf\303\251 x.txt""#, "café x.txt");
        check(r#""q\"uote\\d""#, "q\"uote\\d");
        // Every escape git writes, `\r` and friends too (the engine's own copy read `\r`
        // as a plain `r`).
        check(r#""\a\b\f\n\r\v""#, "\u{7}\u{8}\u{c}\n\r\u{b}");
        // Unclosed: as it is.
        check(r#""open"#, r#""open"#);
        assert_eq!(
            unquote_prefix(r#""a b" "c""#),
            Some(("a b".to_string(), r#" "c""#))
        );
    }
}
