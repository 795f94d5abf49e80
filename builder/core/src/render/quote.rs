//! Quoting for the languages renderers write: POSIX shell, HCL2 and Ruby string literals.

/// A POSIX shell word: bare when it only holds safe characters, single-quoted otherwise.
pub fn sh(text: &str) -> String {
    let safe = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if safe {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// An HCL2 quoted string: escapes `\` and `"`, and `${`/`%{` so nothing is interpolated.
pub fn hcl(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Ruby single-quoted string literal (no interpolation).
pub fn ruby(text: &str) -> String {
    format!("'{}'", text.replace('\\', r"\\").replace('\'', r"\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(sh("local-lvm"), "local-lvm");
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("it's"), r"'it'\''s'");
        assert_eq!(sh(""), "''");
    }

    #[test]
    fn hcl_strings() {
        assert_eq!(hcl("a\"b"), r#""a\"b""#);
        assert_eq!(hcl("${x} %{y} $z"), r#""$${x} %%{y} $z""#);
    }

    #[test]
    fn ruby_strings() {
        assert_eq!(ruby(r"a'b\c"), r"'a\'b\\c'");
    }
}
