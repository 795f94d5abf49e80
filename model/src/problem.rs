//! Problems found in a spec: an error or a warning, located by file, line, column and field path.

use serde::Serialize;
use std::fmt;

/// Where in the spec file a problem is: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding: what is wrong, where, and how to fix it when that is obvious.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub file: String,
    pub location: Location,
    /// Dotted field path, e.g. `spec.network.nodes[2].mac`.
    pub field: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {sev}: {}: {}",
            self.file, self.location.line, self.location.column, self.field, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Every problem a spec has, collected in one pass so a user fixes them all at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Problems {
    pub items: Vec<Problem>,
}

impl Problems {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.items.iter().filter(|p| p.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.items
            .iter()
            .filter(|p| p.severity == Severity::Warning)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// Sorted by position so the output reads top to bottom like the file.
    pub fn sort(&mut self) {
        self.items
            .sort_by(|a, b| (a.location, &a.field).cmp(&(b.location, &b.field)));
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.items {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The error a spec load returns: all problems, at least one of them an error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {count} problem(s) in the cluster spec\n{problems}", count = problems.errors().count())]
pub struct SpecError {
    pub file: String,
    pub problems: Problems,
}
