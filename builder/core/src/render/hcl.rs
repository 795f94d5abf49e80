//! A small HCL2 writer that lays text out the way `packer fmt` does: two-space indents and
//! the `=` of consecutive one-line attributes aligned.

use std::fmt::Write as _;

/// One line-level item of a body.
#[derive(Debug, Clone)]
pub enum Item {
    /// `name = value`, value already rendered (quoted string, number, expression, list).
    Attr(String, String),
    /// `header {` body `}`; header like `source "qemu" "node"` or `disks`.
    Block(String, Vec<Item>),
    /// A `# comment` line.
    Comment(String),
    /// An empty line.
    Blank,
}

pub fn attr(name: &str, value: impl Into<String>) -> Item {
    Item::Attr(name.to_string(), value.into())
}

pub fn block(header: impl Into<String>, body: Vec<Item>) -> Item {
    Item::Block(header.into(), body)
}

pub fn comment(text: impl Into<String>) -> Item {
    Item::Comment(text.into())
}

/// A list of rendered values on one line: `["a", "b"]`.
pub fn list(values: &[String]) -> String {
    format!("[{}]", values.join(", "))
}

/// Renders a whole file body.
pub fn render(items: &[Item]) -> String {
    let mut out = String::new();
    write_body(&mut out, items, 0);
    out
}

fn write_body(out: &mut String, items: &[Item], depth: usize) {
    let pad = "  ".repeat(depth);
    let mut i = 0;
    while i < items.len() {
        match &items[i] {
            Item::Attr(..) => {
                // A run of attributes whose values fit on one line aligns together; a value
                // spanning lines stands alone, as `packer fmt` lays it out.
                let start = i;
                let mut end = i + 1;
                let multiline = |it: &Item| matches!(it, Item::Attr(_, v) if v.contains('\n'));
                if !multiline(&items[start]) {
                    while end < items.len()
                        && matches!(items[end], Item::Attr(..))
                        && !multiline(&items[end])
                    {
                        end += 1;
                    }
                }
                let width = items[start..end]
                    .iter()
                    .map(|it| match it {
                        Item::Attr(n, _) => n.len(),
                        _ => 0,
                    })
                    .max()
                    .unwrap_or(0);
                for it in &items[start..end] {
                    if let Item::Attr(n, v) = it {
                        let v = v.replace('\n', &format!("\n{pad}"));
                        let _ = writeln!(out, "{pad}{n:<width$} = {v}");
                    }
                }
                i = end;
            }
            Item::Block(header, body) => {
                let _ = writeln!(out, "{pad}{header} {{");
                write_body(out, body, depth + 1);
                let _ = writeln!(out, "{pad}}}");
                i += 1;
            }
            Item::Comment(text) => {
                for line in text.lines() {
                    if line.is_empty() {
                        let _ = writeln!(out, "{pad}#");
                    } else {
                        let _ = writeln!(out, "{pad}# {line}");
                    }
                }
                i += 1;
            }
            Item::Blank => {
                out.push('\n');
                i += 1;
            }
        }
    }
}
