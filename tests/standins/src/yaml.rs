//! YAML helpers (serde_yaml is deprecated; keep its use behind this module).

use anyhow::{Context, Result};
use serde::Deserialize;

pub type Value = serde_yaml::Value;

/// Every document of a multi-document YAML stream (empty documents skipped).
pub fn documents(text: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).context("invalid YAML")?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(|x| x.as_str())
}

pub fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    (!cur.is_null()).then_some(cur)
}

pub fn strings_at(v: &Value, path: &[&str]) -> Vec<String> {
    match at(v, path) {
        Some(Value::Sequence(s)) => s
            .iter()
            .filter_map(|x| match x {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => vec![],
    }
}

pub fn bool_at(v: &Value, path: &[&str]) -> Option<bool> {
    at(v, path).and_then(|x| x.as_bool())
}
