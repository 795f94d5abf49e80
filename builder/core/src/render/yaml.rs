//! The one place YAML is written. Values go through `serde_yaml::Value` (which keeps field
//! order) and are emitted here in block style with conservative quoting: a string is left
//! plain only if it cannot be read back as anything but that string under YAML 1.1 or 1.2
//! (so MACs, `0600`, IP addresses, `on`/`no` are always quoted, the traps validators.md
//! lists). Same value, same bytes.

use serde::Serialize;
use serde_yaml::Value;

#[derive(Debug, thiserror::Error)]
#[error("cannot turn {what} into YAML: {source}")]
pub struct YamlError {
    pub what: &'static str,
    #[source]
    pub source: serde_yaml::Error,
}

/// One YAML document (no `---`), ending with a newline.
pub fn to_yaml<T: Serialize>(what: &'static str, value: &T) -> Result<String, YamlError> {
    let v = serde_yaml::to_value(value).map_err(|source| YamlError { what, source })?;
    let mut out = String::new();
    emit(&mut out, &v, 0, Ctx::Top);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Top,
    /// After `key:` — a scalar follows on the same line, a collection on the next.
    MapValue,
    /// After `- ` — a map's first key continues on the same line.
    SeqItem,
}

const YAML11_WORDS: [&str; 22] = [
    "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "nan", "inf", ".nan", ".inf",
    "-.inf", "+.inf", "=", "<<", "-", "?", ":", "",
];

/// True when `s` may be written without quotes.
fn plain_ok(s: &str) -> bool {
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/');
    first_ok
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        && !YAML11_WORDS.contains(&s.to_ascii_lowercase().as_str())
}

/// A double-quoted YAML scalar; JSON string escaping is valid YAML.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

fn scalar(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// Multi-line text ending in a newline, with no characters that a literal block would
/// change: written as `|` block.
fn literal_ok(s: &str) -> bool {
    s.contains('\n')
        && s.ends_with('\n')
        && !s.ends_with("\n\n")
        && !s.starts_with([' ', '\n'])
        && !s
            .chars()
            .any(|c| c == '\t' || c == '\r' || (c.is_control() && c != '\n'))
        && !s.lines().any(|l| l.ends_with(' '))
}

fn pad(n: usize) -> String {
    " ".repeat(n)
}

fn emit(out: &mut String, v: &Value, indent: usize, ctx: Ctx) {
    match v {
        Value::Null => line_scalar(out, "null", ctx),
        Value::Bool(b) => line_scalar(out, if *b { "true" } else { "false" }, ctx),
        Value::Number(n) => line_scalar(out, &n.to_string(), ctx),
        Value::String(s) => {
            if literal_ok(s) {
                out.push_str(if ctx == Ctx::Top { "|\n" } else { " |\n" });
                for l in s.lines() {
                    if l.is_empty() {
                        out.push('\n');
                    } else {
                        out.push_str(&pad(indent.max(2)));
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            } else {
                line_scalar(out, &scalar(s), ctx);
            }
        }
        Value::Sequence(items) if items.is_empty() => line_scalar(out, "[]", ctx),
        Value::Mapping(m) if m.is_empty() => line_scalar(out, "{}", ctx),
        Value::Sequence(items) => {
            if ctx == Ctx::MapValue {
                out.push('\n');
            }
            for (i, item) in items.iter().enumerate() {
                if !(i == 0 && ctx == Ctx::SeqItem) {
                    out.push_str(&pad(indent));
                }
                out.push_str("- ");
                emit(out, item, indent + 2, Ctx::SeqItem);
            }
        }
        Value::Mapping(m) => {
            if ctx == Ctx::MapValue {
                out.push('\n');
            }
            for (i, (k, val)) in m.iter().enumerate() {
                if !(i == 0 && ctx == Ctx::SeqItem) {
                    out.push_str(&pad(indent));
                }
                let key = match k {
                    Value::String(s) => scalar(s),
                    other => serde_yaml::to_string(other)
                        .map(|t| t.trim().to_string())
                        .unwrap_or_default(),
                };
                out.push_str(&key);
                out.push(':');
                // Sequences under a key stay at the key's indent (kubectl style).
                let child = match val {
                    Value::Sequence(s) if !s.is_empty() => indent,
                    _ => indent + 2,
                };
                emit(out, val, child, Ctx::MapValue);
            }
        }
        Value::Tagged(t) => emit(out, &t.value, indent, ctx),
    }
}

fn line_scalar(out: &mut String, text: &str, ctx: Ctx) {
    if ctx == Ctx::MapValue {
        out.push(' ');
    }
    out.push_str(text);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quotes_every_trap_and_round_trips() {
        let v = json!({
            "mac": "52:54:00:12:34:56",
            "perm": "0600",
            "ip": "10.0.0.1",
            "word": "on",
            "ver": "v1.31.4",
            "tok": "@@TOKEN@@",
            "path": "/etc/muster/node.json",
            "text": "line one\nline two\n",
            "list": [{"a": 1, "b": [true, "x y"]}, "z", []],
            "empty": {},
            "nested": {"k": {"l": ["m"]}}
        });
        let y = to_yaml("test", &v).unwrap();
        assert!(y.contains("mac: \"52:54:00:12:34:56\"\n"), "{y}");
        assert!(y.contains("perm: \"0600\"\n"));
        assert!(y.contains("ip: \"10.0.0.1\"\n"));
        assert!(y.contains("word: \"on\"\n"));
        assert!(y.contains("ver: v1.31.4\n"));
        assert!(y.contains("text: |\n  line one\n  line two\n"));
        let back: serde_json::Value = serde_yaml::from_str(&y).unwrap();
        assert_eq!(back, v, "{y}");
    }
}
