//! Placeholders in shell text (steps, prestart hooks, service and readiness commands, flow
//! commands) are data, never code: each becomes a reference to the environment variable that
//! carries its value (`{{ msg }}` -> `"${ENVBUILD_VAR_MSG}"`), quoted for the place it stands in,
//! so the shell expands it as one word and never parses the value. `$(...)`, backquotes, `;`,
//! quotes and newlines in a value arrive verbatim.
//!
//! Where a placeholder stands is read by a small scanner of POSIX sh quoting: unquoted text,
//! '...', "...", `$(...)`, backquotes, comments and here-documents.
//!
//! | where | becomes |
//! | --- | --- |
//! | unquoted, inside `$(...)` | `"${VAR}"` |
//! | inside "..." or a here-document | `${VAR}` |
//! | inside '...' | `'"${VAR}"'` (the quotes are closed around it) |
//! | inside backquotes | `${VAR}` (split into words there: use `$(...)` instead) |
//! | in a here-document whose delimiter is quoted | refused: the shell expands nothing there |

use super::template::{self, TemplateError};

/// How the shell reads the text at one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    Unquoted,
    Single,
    Double,
    Backquoted,
    HereDocument,
    QuotedHereDocument,
}

/// A nesting level of the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// The top level, or the inside of `$(...)` (`parens` counts its open parentheses).
    Code {
        parens: usize,
        substitution: bool,
    },
    Single,
    Double,
    Backquote,
}

/// `text` with each placeholder replaced by a quoted reference to `variable(name)`. Callers
/// validate names first (`template::placeholders`).
pub fn render(text: &str, variable: impl Fn(&str) -> String) -> Result<String, TemplateError> {
    let found = template::placeholders(text)?;
    let offsets: Vec<usize> = found.iter().map(|p| p.offset).collect();
    let quoting = quoting_at(text, &offsets);
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (placeholder, quoting) in found.iter().zip(quoting) {
        out.push_str(&text[rest..placeholder.offset]);
        let var = variable(&placeholder.name);
        match quoting {
            Quoting::Unquoted => out.push_str(&format!("\"${{{var}}}\"")),
            Quoting::Double | Quoting::HereDocument | Quoting::Backquoted => {
                out.push_str(&format!("${{{var}}}"))
            }
            Quoting::Single => out.push_str(&format!("'\"${{{var}}}\"'")),
            Quoting::QuotedHereDocument => {
                return Err(TemplateError {
                    offset: placeholder.offset,
                    message: format!(
                        "`{{{{ {} }}}}` is in a here-document whose delimiter is quoted, where the shell expands nothing; unquote the delimiter (<<EOF) or read ${var}",
                        placeholder.name
                    ),
                });
            }
        }
        rest = placeholder.offset + text[placeholder.offset..].find("}}").expect("parsed") + 2;
    }
    out.push_str(&text[rest..]);
    Ok(out)
}

/// The quoting at each of `offsets` (sorted byte offsets of placeholders, which the scanner
/// steps over as plain words).
fn quoting_at(text: &str, offsets: &[usize]) -> Vec<Quoting> {
    let bytes = text.as_bytes();
    let mut found = Vec::with_capacity(offsets.len());
    let mut next = offsets.iter().copied().peekable();
    let mut stack = vec![Frame::Code {
        parens: 0,
        substitution: false,
    }];
    let mut pending: Vec<(String, bool, bool)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if next.peek() == Some(&i) {
            next.next();
            found.push(match stack.last().expect("the top level stays") {
                Frame::Code { .. } => Quoting::Unquoted,
                Frame::Single => Quoting::Single,
                Frame::Double => Quoting::Double,
                Frame::Backquote => Quoting::Backquoted,
            });
            i += text[i..].find("}}").map_or(2, |n| n + 2);
            continue;
        }
        let c = bytes[i];
        let top = *stack.last().expect("the top level stays");
        match (top, c) {
            (Frame::Single, b'\'') => {
                stack.pop();
            }
            (Frame::Single, _) => {}
            (_, b'\\') => i += 1,
            (Frame::Double, b'"') => {
                stack.pop();
            }
            (Frame::Backquote, b'`') => {
                stack.pop();
            }
            (_, b'`') => stack.push(Frame::Backquote),
            (_, b'$') if bytes.get(i + 1) == Some(&b'(') => {
                stack.push(Frame::Code {
                    parens: 0,
                    substitution: true,
                });
                i += 1;
            }
            (Frame::Double, _) => {}
            (_, b'\'') => stack.push(Frame::Single),
            (_, b'"') => stack.push(Frame::Double),
            (
                Frame::Code {
                    parens,
                    substitution,
                },
                b'(',
            ) => {
                *stack.last_mut().unwrap() = Frame::Code {
                    parens: parens + 1,
                    substitution,
                }
            }
            (
                Frame::Code {
                    parens: 0,
                    substitution: true,
                },
                b')',
            ) => {
                stack.pop();
            }
            (
                Frame::Code {
                    parens,
                    substitution,
                },
                b')',
            ) => {
                *stack.last_mut().unwrap() = Frame::Code {
                    parens: parens.saturating_sub(1),
                    substitution,
                }
            }
            (_, b'#') if i == 0 || b" \t\n;&|()".contains(&bytes[i - 1]) => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            (_, b'<') if bytes.get(i + 1) == Some(&b'<') && bytes.get(i + 2) != Some(&b'<') => {
                let (delimiter, quoted, strip_tabs, end) = here_document_operator(bytes, i + 2);
                pending.push((delimiter, quoted, strip_tabs));
                i = end;
                continue;
            }
            (_, b'\n') if !pending.is_empty() => {
                i += 1;
                for (delimiter, quoted, strip_tabs) in pending.drain(..) {
                    // The body, line by line, up to the delimiter line.
                    while i < bytes.len() {
                        let end = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
                        let line = &text[i..end];
                        let line = if strip_tabs {
                            line.trim_start_matches('\t')
                        } else {
                            line
                        };
                        let body = i;
                        i = (end + 1).min(bytes.len());
                        if line == delimiter {
                            break;
                        }
                        while next.peek().is_some_and(|&o| o >= body && o < end) {
                            next.next();
                            found.push(if quoted {
                                Quoting::QuotedHereDocument
                            } else {
                                Quoting::HereDocument
                            });
                        }
                    }
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    // Placeholders past an unterminated here-document or quote: as the last state had them.
    found.resize(offsets.len(), Quoting::Unquoted);
    found
}

/// The delimiter after `<<` (at `start`): (word, quoted, `<<-`, offset after the word).
fn here_document_operator(bytes: &[u8], start: usize) -> (String, bool, bool, usize) {
    let mut i = start;
    let strip_tabs = bytes.get(i) == Some(&b'-');
    if strip_tabs {
        i += 1;
    }
    while bytes.get(i).is_some_and(|b| *b == b' ' || *b == b'\t') {
        i += 1;
    }
    let (mut word, mut quoted, mut quote) = (Vec::new(), false, None);
    while let Some(&b) = bytes.get(i) {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => word.push(b),
            (None, b'\'' | b'"') => {
                quoted = true;
                quote = Some(b);
            }
            (None, b'\\') => {
                quoted = true;
                if let Some(&escaped) = bytes.get(i + 1) {
                    word.push(escaped);
                    i += 1;
                }
            }
            (None, b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')') => break,
            (None, _) => word.push(b),
        }
        i += 1;
    }
    (
        String::from_utf8_lossy(&word).into_owned(),
        quoted,
        strip_tabs,
        i,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(text: &str) -> String {
        render(text, |name| format!("V_{}", name.to_uppercase())).unwrap()
    }

    #[test]
    fn a_placeholder_is_one_quoted_word_wherever_it_stands() {
        assert_eq!(shell("echo {{ a }} > f"), r#"echo "${V_A}" > f"#);
        assert_eq!(shell("pip install k=={{a}}"), r#"pip install k=="${V_A}""#);
        assert_eq!(shell(r#"echo "x {{ a }} y""#), r#"echo "x ${V_A} y""#);
        assert_eq!(shell("sed 's/a/{{ a }}/' f"), r#"sed 's/a/'"${V_A}"'/' f"#);
        assert_eq!(
            shell(r#"echo "$(cat '{{ a }}')" {{ a }}"#),
            r#"echo "$(cat ''"${V_A}"'')" "${V_A}""#
        );
        assert_eq!(shell("echo `echo {{ a }}`"), "echo `echo ${V_A}`");
        assert_eq!(shell(r#"echo \' {{ a }}"#), r#"echo \' "${V_A}""#);
        assert_eq!(shell(r#"echo "\"" {{ a }}"#), r#"echo "\"" "${V_A}""#);
        assert_eq!(
            shell("echo $((1 + ( 2 ))) {{ a }}"),
            r#"echo $((1 + ( 2 ))) "${V_A}""#
        );
        assert_eq!(shell("x=a#b'{{ a }}'"), "x=a#b''\"${V_A}\"''");
    }

    #[test]
    fn comments_and_here_documents_are_read_as_the_shell_reads_them() {
        assert_eq!(
            shell("true # it's\necho {{ a }}"),
            "true # it's\necho \"${V_A}\""
        );
        assert_eq!(
            shell("cat <<EOF > f\nit's {{ a }}\nEOF\necho {{ a }}"),
            "cat <<EOF > f\nit's ${V_A}\nEOF\necho \"${V_A}\""
        );
        assert_eq!(
            shell("cat <<-END\n\tit's {{ a }}\n\tEND\n'{{ a }}'"),
            "cat <<-END\n\tit's ${V_A}\n\tEND\n''\"${V_A}\"''"
        );
        let quoted = render("cat <<'EOF'\n{{ a }}\nEOF", |n| n.to_string()).unwrap_err();
        assert_eq!(quoted.offset, 12);
        assert!(
            quoted.message.contains("delimiter is quoted"),
            "{}",
            quoted.message
        );
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        let text = "echo 'a' \"b\" $(c) `d` <<EOF\ne\nEOF";
        assert_eq!(shell(text), text);
    }
}
