//! The forms in which a tool (or a script that wants to smuggle it) writes a secret value:
//! the value itself and its simple encodings. The redactor and the leak scan look for all
//! of them at once.

use base64::Engine;

/// Values shorter than this are matched only literally. A derived form of a short value
/// is short too (the stable middle of a 4-byte value's base64 is 4 or 5 characters) and
/// would turn up by chance in ordinary text and binaries; at 8 bytes the shortest derived
/// form (base64) is 10 characters, 60 bits, which random data does not produce.
pub const MIN_DERIVED_LEN: usize = 8;

/// `value` and, when it is at least [`MIN_DERIVED_LEN`] bytes long, every encoding below,
/// each once, the literal first:
/// - base64 in the standard and the URL-safe alphabet, at each of the three alignments a
///   value can have inside a longer encoded text (preceded by 0, 1 or 2 bytes): only the
///   characters that depend on the value's bytes alone, so `user:VALUE` encoded is found;
/// - hex, lower and upper case;
/// - percent-encoding of the characters outside RFC 3986's unreserved set, and of every
///   byte, each with upper- and lower-case hex digits;
/// - UTF-16, little and big endian;
/// - the value's characters reversed.
pub(crate) fn forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![value.to_vec()];
    if value.len() < MIN_DERIVED_LEN {
        return out;
    }
    let mut add = |form: Vec<u8>| {
        if !out.contains(&form) {
            out.push(form);
        }
    };
    for engine in [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for shift in 0..3 {
            add(base64_middle(&engine, value, shift));
        }
    }
    let lower = hex::encode(value);
    add(lower.to_ascii_uppercase().into_bytes());
    add(lower.into_bytes());
    for every in [false, true] {
        for upper in [true, false] {
            add(percent_encode(value, every, upper));
        }
    }
    let text = String::from_utf8_lossy(value);
    add(text.encode_utf16().flat_map(u16::to_le_bytes).collect());
    add(text.encode_utf16().flat_map(u16::to_be_bytes).collect());
    add(text.chars().rev().collect::<String>().into_bytes());
    out
}

/// The base64 characters of `value` preceded by `shift` bytes that depend on neither the
/// preceding bytes nor the following ones: character `i` covers bits `6i..6i+6`, which
/// must lie inside the value's bits `8*shift..8*(shift+len)`.
fn base64_middle(engine: &impl Engine, value: &[u8], shift: usize) -> Vec<u8> {
    let mut shifted = vec![0u8; shift];
    shifted.extend_from_slice(value);
    let encoded = engine.encode(&shifted).into_bytes();
    let first = (8 * shift).div_ceil(6);
    let end = (8 * (shift + value.len())) / 6;
    encoded[first..end].to_vec()
}

fn percent_encode(value: &[u8], every: bool, upper: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        if unreserved && !every {
            out.push(b);
        } else if upper {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: &[&str]) {
        let got: Vec<String> = forms(value.as_bytes())
            .into_iter()
            .map(|f| String::from_utf8_lossy(&f).into_owned())
            .collect();
        assert_eq!(got, expected, "{value}");
    }

    #[test]
    fn short_values_have_only_their_literal_form() {
        check("abcd", &["abcd"]);
        check("abcdefg", &["abcdefg"]);
    }

    #[test]
    fn values_have_every_encoding_a_tool_writes() {
        check(
            "tok/en+1?",
            &[
                "tok/en+1?",
                // base64, standard alphabet, after 0, 1 and 2 bytes.
                "dG9rL2VuKzE/",
                "Rvay9lbisxP",
                "0b2svZW4rMT",
                // URL-safe: only the first differs from the standard alphabet's.
                "dG9rL2VuKzE_",
                "746F6B2F656E2B313F",
                "746f6b2f656e2b313f",
                "tok%2Fen%2B1%3F",
                "tok%2fen%2b1%3f",
                "%74%6F%6B%2F%65%6E%2B%31%3F",
                "%74%6f%6b%2f%65%6e%2b%31%3f",
                "t\x00o\x00k\x00/\x00e\x00n\x00+\x001\x00?\x00",
                "\x00t\x00o\x00k\x00/\x00e\x00n\x00+\x001\x00?",
                "?1+ne/kot",
            ],
        );
        // Nothing to percent-encode, no hex letters: forms that coincide are listed once.
        check(
            "abcdefgh",
            &[
                "abcdefgh",
                "YWJjZGVmZ2",
                "FiY2RlZmdo",
                "hYmNkZWZna",
                "6162636465666768",
                "%61%62%63%64%65%66%67%68",
                "a\0b\0c\0d\0e\0f\0g\0h\0",
                "\0a\0b\0c\0d\0e\0f\0g\0h",
                "hgfedcba",
            ],
        );
    }

    /// Whatever bytes surround the value, its base64 holds one of the value's forms.
    #[test]
    fn base64_forms_are_found_at_every_alignment() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let value = b"s3cr3t-v4lue/+?";
        let forms = forms(value);
        for before in 0..7 {
            for after in 0..4 {
                let mut text = b"user:".repeat(before);
                text.truncate(before);
                text.extend_from_slice(value);
                text.extend(std::iter::repeat_n(b'x', after));
                for encoded in [STANDARD.encode(&text), URL_SAFE.encode(&text)] {
                    assert!(
                        forms
                            .iter()
                            .any(|f| encoded.as_bytes().windows(f.len()).any(|w| w == f)),
                        "{before} {after} {encoded}"
                    );
                }
            }
        }
    }
}
