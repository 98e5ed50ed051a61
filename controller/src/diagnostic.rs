//! Diagnostics: why an object, or part of one, was not compiled as written.
//!
//! One value feeds logs, metrics, `ferry check` and (in Kubernetes mode) Events, so each carries
//! the object, the field path inside it, where it came from (file and document) and a reason.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Compiled, but not quite as written (normalised value, ignored field).
    Warning,
    /// The object or a part of it was skipped, or serves 503.
    Error,
}

/// A Kubernetes object by kind, namespace and name (`namespace` empty for cluster-scoped kinds;
/// for a file that failed to parse, kind `File` and the path as name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        ObjectRef { kind: kind.to_string(), namespace: namespace.to_string(), name: name.to_string() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `file#document` the object was read from, when known; set by the source after the build
    /// (`ManifestSource::annotate`), since `build()` only sees objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    pub object: ObjectRef,
    /// Field path inside the object, e.g. `spec.rules[0].http.paths[1].path`.
    pub field: String,
    pub reason: String,
}

impl Diagnostic {
    pub fn error(object: &ObjectRef, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            origin: None,
            object: object.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn warning(object: &ObjectRef, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Self::error(object, field, reason) }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{sev}: ")?;
        if let Some(o) = &self.origin {
            write!(f, "{o}: ")?;
        }
        write!(f, "{}", self.object)?;
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Where in an object a diagnostic would point, formatted only when one is made: a build visits
/// every field of every object, and few of them get a diagnostic.
#[derive(Clone, Copy)]
pub enum Field<'a> {
    Str(&'a str),
    Lazy(&'a dyn Fn() -> String),
}

impl Field<'_> {
    pub fn path(&self) -> String {
        match self {
            Field::Str(s) => s.to_string(),
            Field::Lazy(f) => f(),
        }
    }
}

impl<'a> From<&'a str> for Field<'a> {
    fn from(s: &'a str) -> Self {
        Field::Str(s)
    }
}
