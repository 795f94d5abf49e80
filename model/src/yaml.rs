//! The only module that reads YAML. It walks a marked YAML tree, records where every
//! field is, and collects problems instead of stopping at the first one.

use crate::problem::{Location, Problem, Problems, Severity};
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node, Span};
use std::collections::BTreeMap;

/// Parses a scalar spelled as text into a validated value; the error says what was expected.
pub trait Scalar: Sized {
    fn parse_scalar(text: &str) -> Result<Self, String>;
}

macro_rules! scalar_from_str {
    ($($t:ty => $what:literal),* $(,)?) => {$(
        impl Scalar for $t {
            fn parse_scalar(text: &str) -> Result<Self, String> {
                text.parse::<$t>().map_err(|_| format!("`{text}` is not {}", $what))
            }
        }
    )*};
}
scalar_from_str!(
    u8 => "a whole number from 0 to 255",
    u16 => "a whole number from 0 to 65535",
    u32 => "a whole number (0 or more)",
    u64 => "a whole number (0 or more)",
    std::net::Ipv4Addr => "an IPv4 address like 192.168.1.10",
    ipnet::Ipv4Net => "an IPv4 network in CIDR form like 192.168.1.0/24",
);

impl Scalar for String {
    fn parse_scalar(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
}

impl Scalar for bool {
    fn parse_scalar(text: &str) -> Result<Self, String> {
        match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("`{text}` is not true or false")),
        }
    }
}

/// Serde for a validated type through its text form: `Display` out, `Scalar` in, so a value
/// read from JSON is checked exactly like one read from the spec.
macro_rules! serde_as_text {
    ($($t:ty),* $(,)?) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t as $crate::yaml::Scalar>::parse_scalar(&s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$t as $crate::yaml::Scalar>::parse_scalar(s)
            }
        }
    )*};
}
pub(crate) use serde_as_text;

/// Collects problems and field locations while a document is decoded.
#[derive(Debug)]
pub struct Ctx {
    pub file: String,
    pub problems: Problems,
    locations: BTreeMap<String, Location>,
}

impl Ctx {
    pub fn new(file: &str) -> Self {
        Ctx {
            file: file.to_string(),
            problems: Problems::default(),
            locations: BTreeMap::new(),
        }
    }

    /// Where a field was written; falls back to its nearest written parent, then the top.
    pub fn location_of(&self, path: &str) -> Location {
        let mut p = path;
        loop {
            if let Some(loc) = self.locations.get(p) {
                return *loc;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return Location { line: 1, column: 1 },
            }
        }
    }

    /// Whether a field, or anything under it, was already reported as an error; checks
    /// built on such a field would only repeat or invent problems.
    pub fn is_bad(&self, path: &str) -> bool {
        self.problems.errors().any(|p| {
            p.field == path
                || p.field
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    }

    pub fn error(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Error, path, message.into(), hint);
    }

    pub fn warn(&mut self, path: &str, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Warning, path, message.into(), hint);
    }

    fn push(&mut self, severity: Severity, path: &str, message: String, hint: Option<String>) {
        let location = self.location_of(path);
        self.problems.items.push(Problem {
            severity,
            file: self.file.clone(),
            location,
            field: path.to_string(),
            message,
            hint,
        });
    }

    fn record(&mut self, path: &str, span: &Span) {
        self.locations.insert(path.to_string(), location(span));
    }

    /// Parses `text` and returns the top-level mapping, or records why it cannot.
    pub fn parse_document<'n>(&mut self, root: &'n Option<Node>) -> Option<Map<'n>> {
        let node = root.as_ref()?;
        Field {
            node,
            path: String::new(),
        }
        .map(self)
    }
}

/// Loads YAML text into a marked tree; a syntax error becomes a located problem.
pub fn load(ctx: &mut Ctx, text: &str) -> Option<Node> {
    if !check_text(ctx, text) {
        return None;
    }
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(false)
        .toplevel_mapping();
    match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(node) => Some(node),
        Err(e) => {
            use marked_yaml::LoadError as E;
            let (marker, message) = match &e {
                E::TopLevelMustBeMapping(m) => {
                    (Some(*m), "the spec must be a YAML mapping".to_string())
                }
                E::DuplicateKey(d) => (
                    d.key.span().start().copied(),
                    format!("key `{}` appears twice in the same mapping", d.key.as_str()),
                ),
                E::ScanError(m, s) => (Some(*m), format!("YAML syntax error: {s}")),
                other => (None, format!("YAML error: {other}")),
            };
            let location = marker
                .map(|m| Location {
                    line: m.line(),
                    column: m.column(),
                })
                .unwrap_or(Location { line: 1, column: 1 });
            ctx.problems.items.push(Problem {
                severity: Severity::Error,
                file: ctx.file.clone(),
                location,
                field: "(document)".into(),
                message,
                hint: None,
            });
            None
        }
    }
}

fn document_error(ctx: &mut Ctx, location: Location, message: String, hint: Option<String>) {
    ctx.problems.items.push(Problem {
        severity: Severity::Error,
        file: ctx.file.clone(),
        location,
        field: "(document)".into(),
        message,
        hint,
    });
}

/// Refuses what the YAML reader would drop or misread without a word: text over the size
/// limit, control characters (it stops reading at NUL) and a second document (it reads
/// only the first). False when the text must not be parsed at all.
fn check_text(ctx: &mut Ctx, text: &str) -> bool {
    let limit = crate::spec::MAX_SPEC_BYTES;
    if text.len() > limit {
        document_error(
            ctx,
            Location { line: 1, column: 1 },
            format!(
                "the spec is {} bytes; the limit is {limit} (1 MiB)",
                text.len()
            ),
            None,
        );
        return false;
    }
    if let Some((location, c, count)) = first_control(text) {
        let more = match count {
            1 => String::new(),
            n => format!(" ({n} in the file)"),
        };
        document_error(
            ctx,
            location,
            format!(
                "control character U+{:04X} is not allowed in a spec{more}",
                u32::from(c)
            ),
            Some("only tab, line feed and carriage return may appear; is this a text file?".into()),
        );
        return false;
    }
    if let Some((location, after_end)) = second_document(text) {
        let message = if after_end {
            "a spec is one YAML document; this follows the end of the first (`...`)"
        } else {
            "a spec is one YAML document; a second one starts here"
        };
        document_error(
            ctx,
            location,
            message.into(),
            Some("put one cluster in each file".into()),
        );
    }
    true
}

/// Splits text into lines as YAML does (LF, CRLF or a lone CR end a line).
fn yaml_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.find(['\n', '\r']) {
            Some(i) => {
                let skip = if t[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&t[i + skip..]);
                Some(&t[..i])
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

/// The first control character other than tab, LF and CR: where, which, and how many.
fn first_control(text: &str) -> Option<(Location, char, usize)> {
    let bad = |c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r');
    let count = text.chars().filter(|&c| bad(c)).count();
    let (line, column, c) = yaml_lines(text).enumerate().find_map(|(l, line)| {
        line.chars()
            .enumerate()
            .find(|&(_, c)| bad(c))
            .map(|(col, c)| (l + 1, col + 1, c))
    })?;
    Some((Location { line, column }, c, count))
}

/// The line where a second document starts, and whether it follows an end marker. At the
/// start of a line `---` and `...` are always document markers (YAML forbids them inside
/// scalars), so a line scan finds what the reader would skip.
fn second_document(text: &str) -> Option<(Location, bool)> {
    let marker = |line: &str, m: &str| {
        line.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
    };
    let (mut started, mut content, mut ended) = (false, false, false);
    for (n, line) in yaml_lines(text).enumerate() {
        let line = if n == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        let here = Location {
            line: n + 1,
            column: 1,
        };
        let rest = line.trim_start();
        if marker(line, "---") {
            if started || content || ended {
                return Some((here, ended));
            }
            started = true;
            let after = line[3..].trim_start();
            content = !after.is_empty() && !after.starts_with('#');
        } else if marker(line, "...") {
            ended = true;
        } else if rest.is_empty() || rest.starts_with('#') {
            continue;
        } else if ended {
            return Some((here, true));
        } else if !(line.starts_with('%') && !started && !content) {
            // Anything but a directive before the document is its content.
            content = true;
        }
    }
    None
}

fn location(span: &Span) -> Location {
    span.start()
        .map(|m| Location {
            line: m.line(),
            column: m.column(),
        })
        // Every problem is located; a span without a start is at least in the file.
        .unwrap_or(Location { line: 1, column: 1 })
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A value at a known path in the document.
#[derive(Debug, Clone)]
pub struct Field<'n> {
    node: &'n Node,
    pub path: String,
}

impl<'n> Field<'n> {
    fn kind(&self) -> &'static str {
        match self.node {
            Node::Scalar(_) => "a single value",
            Node::Mapping(_) => "a mapping",
            Node::Sequence(_) => "a list",
        }
    }

    /// An empty `key:` counts as absent.
    fn is_null(&self) -> bool {
        matches!(self.node, Node::Scalar(s) if s.may_coerce() && matches!(s.as_str(), "" | "~" | "null"))
    }

    pub fn scalar(&self, ctx: &mut Ctx) -> Option<&'n MarkedScalarNode> {
        match self.node {
            Node::Scalar(s) => Some(s),
            _ => {
                ctx.error(
                    &self.path,
                    format!("expected a single value, found {}", self.kind()),
                    None,
                );
                None
            }
        }
    }

    pub fn parse<T: Scalar>(&self, ctx: &mut Ctx) -> Option<T> {
        let s = self.scalar(ctx)?;
        match T::parse_scalar(s.as_str().trim()) {
            Ok(v) => Some(v),
            Err(msg) => {
                ctx.error(&self.path, msg, None);
                None
            }
        }
    }

    pub fn map(&self, ctx: &mut Ctx) -> Option<Map<'n>> {
        match self.node {
            Node::Mapping(m) => Some(Map {
                node: m,
                path: self.path.clone(),
                used: Vec::new(),
            }),
            _ => {
                ctx.error(
                    &self.path,
                    format!("expected a mapping, found {}", self.kind()),
                    None,
                );
                None
            }
        }
    }

    pub fn seq(&self, ctx: &mut Ctx) -> Option<Vec<Field<'n>>> {
        match self.node {
            Node::Sequence(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, node)| {
                        let path = format!("{}[{i}]", self.path);
                        ctx.record(&path, node.span());
                        Field { node, path }
                    })
                    .collect(),
            ),
            _ => {
                ctx.error(
                    &self.path,
                    format!("expected a list, found {}", self.kind()),
                    None,
                );
                None
            }
        }
    }

    /// A list of scalars, each parsed; bad items are reported and dropped.
    pub fn parse_list<T: Scalar>(&self, ctx: &mut Ctx) -> Option<Vec<T>> {
        let items = self.seq(ctx)?;
        Some(items.iter().filter_map(|f| f.parse(ctx)).collect())
    }
}

/// A mapping being decoded; keys nobody asked for are unknown fields.
#[derive(Debug)]
pub struct Map<'n> {
    node: &'n MarkedMappingNode,
    pub path: String,
    used: Vec<&'static str>,
}

impl<'n> Map<'n> {
    /// The value at `key`, if present and not null.
    pub fn get(&mut self, ctx: &mut Ctx, key: &'static str) -> Option<Field<'n>> {
        self.used.push(key);
        let (k, node) = self.node.iter().find(|(k, _)| k.as_str() == key)?;
        let path = join(&self.path, key);
        ctx.record(&path, k.span());
        let field = Field { node, path };
        (!field.is_null()).then_some(field)
    }

    /// Like `get`, but a missing key is an error.
    pub fn require(&mut self, ctx: &mut Ctx, key: &'static str, hint: &str) -> Option<Field<'n>> {
        let field = self.get(ctx, key);
        if field.is_none() {
            let here = location(self.node.span());
            let path = join(&self.path, key);
            ctx.locations.entry(path.clone()).or_insert(here);
            ctx.error(&path, "required field is missing", Some(hint.to_string()));
        }
        field
    }

    pub fn map(&mut self, ctx: &mut Ctx, key: &'static str) -> Option<Map<'n>> {
        self.get(ctx, key)?.map(ctx)
    }

    pub fn list<T: Scalar>(&mut self, ctx: &mut Ctx, key: &'static str) -> Vec<T> {
        self.get(ctx, key)
            .and_then(|f| f.parse_list(ctx))
            .unwrap_or_default()
    }

    /// Reports every key that no decoder asked for, with the nearest known key as a hint.
    pub fn finish(self, ctx: &mut Ctx) {
        for (k, _) in self.node.iter() {
            let key = k.as_str();
            if self.used.contains(&key) {
                continue;
            }
            // An empty key (`? ` with nothing after it) still needs a path to be located by.
            let shown = if key.is_empty() { "\"\"" } else { key };
            let path = join(&self.path, shown);
            ctx.record(&path, k.span());
            let hint = nearest(key, &self.used)
                .map(|near| format!("did you mean `{near}`?"))
                .or_else(|| Some(format!("known fields here: {}", self.used.join(", "))));
            ctx.error(&path, format!("unknown field `{shown}`"), hint);
        }
    }
}

/// The known key closest to a misspelt one, if it is close enough to be a typo.
fn nearest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key_l = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&key_l, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_suggests_typos_only() {
        let known = ["workers", "controlPlanes", "loadBalancers"];
        assert_eq!(nearest("wokers", &known), Some("workers"));
        assert_eq!(nearest("controlplanes", &known), Some("controlPlanes"));
        assert_eq!(nearest("banana", &known), None);
    }

    #[test]
    fn syntax_error_is_located() {
        let mut ctx = Ctx::new("x.yaml");
        assert!(load(&mut ctx, "a: 1\nb: [1, 2\n").is_none());
        let p = &ctx.problems.items[0];
        assert!(p.message.contains("syntax"), "{p}");
        assert!(p.location.line >= 2, "{p}");
    }

    #[test]
    fn lines_end_as_in_yaml() {
        let lines: Vec<&str> = yaml_lines("a\r\nb\rc\n\nd").collect();
        assert_eq!(lines, ["a", "b", "c", "", "d"]);
    }

    #[test]
    fn second_documents_are_found_and_markers_in_text_are_not() {
        assert_eq!(second_document("a: 1\n"), None);
        assert_eq!(second_document("%YAML 1.2\n---\na: 1\n...\n# end\n"), None);
        assert_eq!(second_document("a: \"x\n ---\"\nb: ---\n"), None);
        let at = |line| Location { line, column: 1 };
        assert_eq!(second_document("a: 1\n---\n"), Some((at(2), false)));
        assert_eq!(second_document("--- {a: 1}\n--- x\n"), Some((at(2), false)));
        assert_eq!(second_document("a: 1\n...\nb: 2\n"), Some((at(3), true)));
        assert_eq!(second_document("---\n---\n"), Some((at(2), false)));
    }

    #[test]
    fn control_characters_are_counted_and_located() {
        let (loc, c, n) = first_control("a: 1\r\nb: \t\x1b\0\n\0").unwrap();
        assert_eq!((loc.line, loc.column, c, n), (2, 5, '\x1b', 3));
        assert_eq!(first_control("tab\there\r\n"), None);
    }

    #[test]
    fn duplicate_key_is_an_error() {
        let mut ctx = Ctx::new("x.yaml");
        assert!(load(&mut ctx, "a: 1\na: 2\n").is_none());
        assert!(ctx.problems.items[0].message.contains("twice"));
        assert_eq!(ctx.problems.items[0].location.line, 2);
    }
}
