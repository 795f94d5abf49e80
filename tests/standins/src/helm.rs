//! `helm-standin`: a muster test STAND-IN for `helm template` (NOT Helm). muster renders an
//! add-on published only as a Helm chart (cilium) with `helm template` on the build machine;
//! Helm cannot be downloaded here, so the tests render a small test chart through this.
//!
//! Real work underneath: the packaged chart is unpacked with the real `tar`, its
//! `values.yaml` deep-merged with every `--values` file in order (as Helm does), and each
//! template rendered in a subset of Go's template language — `{{ .Values.a.b }}`,
//! `.Release.*`, `.Chart.*`, `.Capabilities.KubeVersion.Version`, the pipeline functions
//! `quote`, `toJson`, `default`, `required`, `if`/`else`/`end`, and `{{-`/`-}}` trimming.
//! Strict: any other action, a missing `required` value, or a list printed without `toJson`
//! fails the render with exit 1, so muster's values must really reach the chart.
//! Output is Helm's: `---\n# Source: CHART/templates/FILE\n` before each non-empty template,
//! templates in name order, `_*` helpers skipped.

use anyhow::{Context, Result, anyhow, bail};
use serde_yaml::{Mapping, Value};
use std::path::{Path, PathBuf};

/// The version `helm version --short` prints: says what it is.
pub const VERSION: &str = "v3.19.0+muster-standin";

/// Runs `helm ARGS...`; the rendered manifest goes to stdout. Returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    }
}

fn run(args: &[String]) -> Result<String> {
    match args.first().map(String::as_str) {
        Some("version") => Ok(format!("{VERSION}\n")),
        Some("template") => {
            let t = TemplateArgs::parse(&args[1..])?;
            template(&t)
        }
        other => {
            bail!("helm stand-in: unsupported command {other:?} (only `template` and `version`)")
        }
    }
}

/// `helm template [NAME] CHART [--namespace NS] [--values FILE]... [--kube-version V]`.
#[derive(Debug, Default, PartialEq)]
struct TemplateArgs {
    release: String,
    chart: PathBuf,
    namespace: String,
    values: Vec<PathBuf>,
    kube_version: String,
}

impl TemplateArgs {
    fn parse(args: &[String]) -> Result<TemplateArgs> {
        let mut t = TemplateArgs {
            namespace: "default".into(),
            kube_version: "v1.20.0".into(),
            ..TemplateArgs::default()
        };
        let mut positional = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| anyhow!("flag needs an argument: {flag}"))
            };
            match flag {
                "--namespace" | "-n" => t.namespace = value()?,
                "--values" | "-f" => t.values.push(PathBuf::from(value()?)),
                "--kube-version" => t.kube_version = value()?,
                f if f.starts_with('-') => bail!("helm stand-in: unsupported flag {f}"),
                _ => positional.push(a.clone()),
            }
        }
        match positional.as_slice() {
            [chart] => {
                t.release = "release-name".into();
                t.chart = PathBuf::from(chart);
            }
            [name, chart] => {
                t.release = name.clone();
                t.chart = PathBuf::from(chart);
            }
            _ => bail!("helm stand-in: `template [NAME] CHART`, got {positional:?}"),
        }
        Ok(t)
    }
}

fn template(t: &TemplateArgs) -> Result<String> {
    let scratch = tempfile::tempdir().context("a scratch directory")?;
    let dir = unpack(&t.chart, scratch.path())?;
    let chart: Value = read_yaml(&dir.join("Chart.yaml"))?;
    let chart_name = str_at(&chart, "name")
        .ok_or_else(|| anyhow!("{}: no `name`", dir.join("Chart.yaml").display()))?;
    let mut values = if dir.join("values.yaml").is_file() {
        read_yaml(&dir.join("values.yaml"))?
    } else {
        Value::Mapping(Mapping::new())
    };
    for f in &t.values {
        merge(&mut values, read_yaml(f)?);
    }
    let root = scope(t, &chart, values);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("templates"))
        .with_context(|| format!("{}/templates", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('_') && (name.ends_with(".yaml") || name.ends_with(".yml"))
        })
        .collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        let text = std::fs::read_to_string(&f).with_context(|| f.display().to_string())?;
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let rendered =
            render(&text, &root).with_context(|| format!("{chart_name}/templates/{name}"))?;
        if rendered.trim().is_empty() {
            continue;
        }
        out.push_str(&format!("---\n# Source: {chart_name}/templates/{name}\n"));
        out.push_str(rendered.trim_start_matches('\n'));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// A packaged chart (`.tgz`) unpacked under `into` (its one top directory), or a chart
/// directory as is.
fn unpack(chart: &Path, into: &Path) -> Result<PathBuf> {
    if chart.is_dir() {
        return Ok(chart.to_path_buf());
    }
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(chart)
        .arg("-C")
        .arg(into)
        .status()
        .context("running tar")?;
    if !status.success() {
        bail!("{}: not a packaged chart (tar: {status})", chart.display());
    }
    let mut tops = std::fs::read_dir(into)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Chart.yaml").is_file());
    match (tops.next(), tops.next()) {
        (Some(top), None) => Ok(top),
        _ => bail!(
            "{}: expected one chart directory with a Chart.yaml",
            chart.display()
        ),
    }
}

fn read_yaml(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let v: Value = serde_yaml::from_str(&text).with_context(|| path.display().to_string())?;
    Ok(if v.is_null() {
        Value::Mapping(Mapping::new())
    } else {
        v
    })
}

fn str_at(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Helm's values merge: maps merge key by key, anything else is replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The template's root object `.`.
fn scope(t: &TemplateArgs, chart: &Value, values: Value) -> Value {
    let mut release = Mapping::new();
    release.insert("Name".into(), t.release.clone().into());
    release.insert("Namespace".into(), t.namespace.clone().into());
    let mut ch = Mapping::new();
    for (key, field) in [
        ("Name", "name"),
        ("Version", "version"),
        ("AppVersion", "appVersion"),
    ] {
        ch.insert(key.into(), str_at(chart, field).unwrap_or_default().into());
    }
    let mut kube = Mapping::new();
    kube.insert("Version".into(), t.kube_version.clone().into());
    kube.insert("GitVersion".into(), t.kube_version.clone().into());
    let mut caps = Mapping::new();
    caps.insert("KubeVersion".into(), Value::Mapping(kube));
    let mut root = Mapping::new();
    root.insert("Values".into(), values);
    root.insert("Release".into(), Value::Mapping(release));
    root.insert("Chart".into(), Value::Mapping(ch));
    root.insert("Capabilities".into(), Value::Mapping(caps));
    Value::Mapping(root)
}

/// A template: text and actions, `if` blocks nested.
#[derive(Debug)]
enum Node {
    Text(String),
    Print(String),
    If {
        cond: String,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// Renders `text` against `root`.
pub fn render(text: &str, root: &Value) -> Result<String> {
    let pieces = lex(text)?;
    let mut it = pieces.into_iter();
    let (nodes, end) = parse(&mut it)?;
    if let Some(e) = end {
        bail!("unexpected {{{{ {e} }}}}");
    }
    let mut out = String::new();
    emit(&nodes, root, &mut out)?;
    Ok(out)
}

enum Piece {
    Text(String),
    Action(String),
}

/// Splits text from `{{ … }}` actions, applying `{{-` / `-}}` trimming.
fn lex(text: &str) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut before = &rest[..open];
        if trim_next {
            before = before.trim_start();
        }
        let after_open = &rest[open + 2..];
        let close = after_open
            .find("}}")
            .ok_or_else(|| anyhow!("unclosed {{{{ action"))?;
        let mut action = &after_open[..close];
        if let Some(a) = action.strip_prefix("- ") {
            before = before.trim_end();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix(" -") {
            trim_next = true;
            action = a;
        }
        if !before.is_empty() {
            out.push(Piece::Text(before.to_string()));
        }
        let action = action.trim();
        if !action.starts_with("/*") {
            out.push(Piece::Action(action.to_string()));
        }
        rest = &after_open[close + 2..];
    }
    let tail = if trim_next { rest.trim_start() } else { rest };
    if !tail.is_empty() {
        out.push(Piece::Text(tail.to_string()));
    }
    Ok(out)
}

/// Nodes up to an `else` or `end` (returned), or the end of input.
fn parse(it: &mut std::vec::IntoIter<Piece>) -> Result<(Vec<Node>, Option<String>)> {
    let mut nodes = Vec::new();
    while let Some(p) = it.next() {
        match p {
            Piece::Text(t) => nodes.push(Node::Text(t)),
            Piece::Action(a) if a == "end" || a == "else" => return Ok((nodes, Some(a))),
            Piece::Action(a) => {
                if let Some(cond) = a.strip_prefix("if ") {
                    let (then, end) = parse(it)?;
                    let otherwise = match end.as_deref() {
                        Some("else") => match parse(it)? {
                            (o, Some(e)) if e == "end" => o,
                            _ => bail!("`if {cond}`: `else` without `end`"),
                        },
                        Some("end") => Vec::new(),
                        _ => bail!("`if {cond}` without `end`"),
                    };
                    nodes.push(Node::If {
                        cond: cond.trim().to_string(),
                        then,
                        otherwise,
                    });
                } else {
                    let word = a.split_whitespace().next().unwrap_or("");
                    if ["range", "with", "define", "template", "include", "block"].contains(&word) {
                        bail!("helm stand-in: unsupported action `{{{{ {a} }}}}`");
                    }
                    nodes.push(Node::Print(a));
                }
            }
        }
    }
    Ok((nodes, None))
}

fn emit(nodes: &[Node], root: &Value, out: &mut String) -> Result<()> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Print(p) => out.push_str(&print(&pipeline(p, root)?, p)?),
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                let branch = if truthy(&pipeline(cond, root)?) {
                    then
                } else {
                    otherwise
                };
                emit(branch, root, out)?;
            }
        }
    }
    Ok(())
}

/// A value as Go's template prints it; a list or map is refused (Go would print
/// `map[…]`, which no manifest wants).
fn print(v: &Value, action: &str) -> Result<String> {
    Ok(match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => bail!("`{{{{ {action} }}}}` prints a list or map: pipe it through toJson"),
    })
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => !m.is_empty(),
        Value::Tagged(_) => true,
    }
}

/// `CMD | FN | FN ARG`, each stage's result passed as the next one's last argument.
fn pipeline(p: &str, root: &Value) -> Result<Value> {
    let mut acc: Option<Value> = None;
    for stage in p.split('|') {
        let words = split_words(stage.trim())?;
        let Some((head, args)) = words.split_first() else {
            bail!("empty pipeline stage in `{p}`");
        };
        let mut vals: Vec<Value> = args
            .iter()
            .map(|a| operand(a, root))
            .collect::<Result<_>>()?;
        if let Some(prev) = acc.take() {
            vals.push(prev);
        }
        acc = Some(if head.starts_with('.') || head.starts_with('"') {
            if !vals.is_empty() {
                bail!("`{stage}`: a value takes no arguments");
            }
            operand(head, root)?
        } else {
            call(head, vals, p)?
        });
    }
    acc.ok_or_else(|| anyhow!("empty action"))
}

fn call(f: &str, args: Vec<Value>, p: &str) -> Result<Value> {
    let arity = |n: usize| -> Result<()> {
        if args.len() == n {
            Ok(())
        } else {
            bail!("`{p}`: {f} takes {n} argument(s), got {}", args.len())
        }
    };
    Ok(match f {
        "quote" => {
            arity(1)?;
            Value::String(format!("{:?}", print(&args[0], p)?))
        }
        "toJson" => {
            arity(1)?;
            Value::String(serde_json::to_string(&args[0])?)
        }
        "default" => {
            arity(2)?;
            if truthy(&args[1]) {
                args[1].clone()
            } else {
                args[0].clone()
            }
        }
        "required" => {
            arity(2)?;
            if !truthy(&args[1]) {
                bail!("{}", print(&args[0], p)?);
            }
            args[1].clone()
        }
        _ => bail!("helm stand-in: unsupported function `{f}` in `{p}`"),
    })
}

/// `.A.B` looked up from the root, or a `"string"` / number literal.
fn operand(w: &str, root: &Value) -> Result<Value> {
    if let Some(s) = w.strip_prefix('"') {
        return Ok(Value::String(s.trim_end_matches('"').to_string()));
    }
    if let Some(path) = w.strip_prefix('.') {
        let mut v = root;
        for key in path.split('.').filter(|k| !k.is_empty()) {
            match v.get(key) {
                Some(next) => v = next,
                None => return Ok(Value::Null),
            }
        }
        return Ok(v.clone());
    }
    if let Ok(n) = w.parse::<i64>() {
        return Ok(Value::Number(n.into()));
    }
    bail!("helm stand-in: unsupported operand `{w}`")
}

/// Words of a stage, a `"quoted string"` kept whole.
fn split_words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            let mut w = String::from(chars.next().unwrap_or('"'));
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(ch) => w.push(ch),
                    None => bail!("unterminated string in `{s}`"),
                }
            }
            w.push('"');
            out.push(w);
        } else {
            let mut w = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                w.push(ch);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(values: &str) -> Value {
        let t = TemplateArgs {
            release: "cilium".into(),
            namespace: "kube-system".into(),
            kube_version: "v1.33.1".into(),
            ..TemplateArgs::default()
        };
        let chart: Value = serde_yaml::from_str("name: cilium\nversion: 1.18.4\n").unwrap();
        scope(&t, &chart, serde_yaml::from_str(values).unwrap())
    }

    #[test]
    fn values_release_and_pipelines_render() {
        let r = root("host: 10.0.0.5\nport: 6443\ncidrs: [10.244.0.0/16]\nempty: \"\"\n");
        let out = render(
            "ns: {{ .Release.Namespace }}\nhost: {{ .Values.host | quote }}\nport: {{ .Values.port }}\n\
             cidrs: {{ .Values.cidrs | toJson }}\nv: {{ .Values.empty | default \"x\" }}\n\
             k: {{ .Capabilities.KubeVersion.Version }}\n",
            &r,
        )
        .unwrap();
        assert_eq!(
            out,
            "ns: kube-system\nhost: \"10.0.0.5\"\nport: 6443\ncidrs: [\"10.244.0.0/16\"]\nv: x\nk: v1.33.1\n"
        );
    }

    #[test]
    fn if_else_and_trimming_follow_go() {
        let r = root("on: true\noff: false\n");
        let t = "a:\n{{- if .Values.on }}\n  yes\n{{- else }}\n  no\n{{- end }}\nb:\n{{- if .Values.off }}\n  yes\n{{- else }}\n  no\n{{- end }}\n";
        assert_eq!(render(t, &r).unwrap(), "a:\n  yes\nb:\n  no\n");
    }

    #[test]
    fn strictness_fails_the_render() {
        let r = root("list: [a]\n");
        for (t, why) in [
            (
                "{{ required \"k8sServiceHost is required\" .Values.host }}",
                "k8sServiceHost is required",
            ),
            ("{{ .Values.list }}", "toJson"),
            ("{{ include \"x\" . }}", "unsupported action"),
            ("{{ .Values.x | b64enc }}", "unsupported function"),
            ("{{ if .Values.x }}open", "without `end`"),
        ] {
            let e = format!("{:#}", render(t, &r).unwrap_err());
            assert!(e.contains(why), "{t}: {e}");
        }
    }

    #[test]
    fn values_files_merge_over_the_chart_defaults() {
        let mut base: Value =
            serde_yaml::from_str("ipam: {mode: kubernetes, x: 1}\nk: a\n").unwrap();
        merge(
            &mut base,
            serde_yaml::from_str("ipam: {mode: cluster-pool}\n").unwrap(),
        );
        assert_eq!(
            base,
            serde_yaml::from_str::<Value>("ipam: {mode: cluster-pool, x: 1}\nk: a\n").unwrap()
        );
    }

    #[test]
    fn command_lines_parse_as_helm_takes_them() {
        let a: Vec<String> =
            "cilium /c.tgz --namespace kube-system --values /v.yaml --kube-version=v1.33.1"
                .split(' ')
                .map(String::from)
                .collect();
        let t = TemplateArgs::parse(&a).unwrap();
        assert_eq!(t.release, "cilium");
        assert_eq!(t.chart, PathBuf::from("/c.tgz"));
        assert_eq!(t.values, vec![PathBuf::from("/v.yaml")]);
        assert_eq!(t.kube_version, "v1.33.1");
        assert!(TemplateArgs::parse(&["c".into(), "--set".into(), "a=b".into()]).is_err());
    }
}
