//! Maps positions in a decoded TOML string back to the source file, so that an error about a
//! placeholder points at the exact line and column even after escapes and line-ending
//! backslashes (which make the decoded text shorter than its literal). The toml crate keeps a
//! CRLF inside a multi-line string as two bytes, so it maps byte for byte.

/// For each byte of the decoded value of the string literal starting at `source[start..]`,
/// the offset in `source` where it came from; one extra element marks the end.
pub fn decoded_offsets(source: &str, start: usize) -> Vec<usize> {
    let bytes = source.as_bytes();
    let rest = &source[start.min(source.len())..];
    let (quote, multiline) = if rest.starts_with("\"\"\"") {
        (b'"', true)
    } else if rest.starts_with("'''") {
        (b'\'', true)
    } else if rest.starts_with('\'') {
        (b'\'', false)
    } else {
        (b'"', false)
    };
    let mut i = start + if multiline { 3 } else { 1 };
    if multiline {
        // A newline right after the opening quotes is not part of the value.
        if bytes.get(i) == Some(&b'\r') && bytes.get(i + 1) == Some(&b'\n') {
            i += 2;
        } else if bytes.get(i) == Some(&b'\n') {
            i += 1;
        }
    }
    let closing: &[u8] = match (quote, multiline) {
        (b'"', true) => b"\"\"\"",
        (b'\'', true) => b"'''",
        (b'"', false) => b"\"",
        _ => b"'",
    };
    let mut offsets = Vec::new();
    while i < bytes.len() && !bytes[i..].starts_with(closing) {
        let b = bytes[i];
        if quote == b'"' && b == b'\\' {
            let next = bytes.get(i + 1).copied().unwrap_or(0);
            let (length, decoded) = match next {
                b'u' => (6, char_len(source, i + 2, 4)),
                b'U' => (10, char_len(source, i + 2, 8)),
                b'x' => (4, char_len(source, i + 2, 2)),
                b' ' | b'\t' | b'\r' | b'\n' if multiline => {
                    // Line-ending backslash: it and all following whitespace vanish.
                    let mut j = i + 1;
                    while j < bytes.len() && matches!(bytes[j], b' ' | b'\t' | b'\r' | b'\n') {
                        j += 1;
                    }
                    (j - i, 0)
                }
                _ => (2, 1),
            };
            offsets.extend(std::iter::repeat_n(i, decoded));
            i += length;
        } else {
            let width = source[i..].chars().next().map_or(1, char::len_utf8);
            offsets.extend(std::iter::repeat_n(i, width));
            i += width;
        }
    }
    offsets.push(i);
    offsets
}

/// UTF-8 length of the character a `\u`/`\U`/`\x` escape with `digits` hex digits decodes to.
fn char_len(source: &str, at: usize, digits: usize) -> usize {
    source
        .get(at..at + digits)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .and_then(char::from_u32)
        .map_or(1, char::len_utf8)
}

#[cfg(test)]
mod tests {
    use super::decoded_offsets;

    fn source_of(source: &str, decoded_index: usize) -> usize {
        decoded_offsets(source, 0)[decoded_index]
    }

    #[test]
    fn plain_and_escaped_strings() {
        let s = r#""ab{{ x }}""#;
        assert_eq!(&s[source_of(s, 2)..source_of(s, 2) + 2], "{{");
        // Decoded: printf '%s\n' "{{ x }}" -- the `{{` is at decoded byte 15, source byte 18.
        let s = r#""printf '%s\\n' \"{{ x }}\"""#;
        assert_eq!(source_of(s, 15), 18);
        assert_eq!(&s[18..20], "{{");
    }

    #[test]
    fn multiline_continuations_and_crlf() {
        let s = "\"\"\"\r\nfirst \\\r\n    {{ x }}\"\"\"";
        // Decoded: "first {{ x }}"
        let at = source_of(s, 6);
        assert_eq!(&s[at..at + 2], "{{");
        let s = "'''\nline\r\n{{ x }}'''";
        // Decoded: "line\r\n{{ x }}"
        let at = source_of(s, 6);
        assert_eq!(&s[at..at + 2], "{{");
    }
}
