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

/// The diagnostics of a build filed by object: those of each Ingress under its
/// `namespace/name`, the rest together. A partial build replaces the lists of the Ingresses it
/// recompiled and shares every other (a clone copies a pointer per shard), so a change costs
/// its own diagnostics, not every diagnostic of the cluster.
#[derive(Debug, Clone, Default)]
pub struct Filed {
    /// Diagnostics of objects other than Ingresses (whole builds make them).
    others: std::sync::Arc<Vec<Diagnostic>>,
    by_ingress: gateway::sharded::ShardedMap<std::sync::Arc<Vec<Diagnostic>>>,
    /// How many are errors and warnings.
    counts: [usize; 2],
}

impl Filed {
    /// Files every diagnostic of a whole build.
    pub fn new(all: Vec<Diagnostic>) -> Filed {
        let mut filed = Filed::default();
        for d in &all {
            filed.counts[d.severity as usize] += 1;
        }
        let mut lists = gateway::FastMap::default();
        filed.others = std::sync::Arc::new(Filed::group(all, &mut lists));
        for (key, list) in lists {
            filed.by_ingress.insert(&key, std::sync::Arc::new(list));
        }
        filed
    }

    /// Adds each Ingress's diagnostics to its list in `lists` (by [`Filed::key`]); returns the
    /// others.
    pub fn group(
        all: impl IntoIterator<Item = Diagnostic>,
        lists: &mut gateway::FastMap<String, Vec<Diagnostic>>,
    ) -> Vec<Diagnostic> {
        let mut others = Vec::new();
        for d in all {
            match d.object.kind == "Ingress" {
                true => lists.entry(Filed::key(&d.object.namespace, &d.object.name)).or_default().push(d),
                false => others.push(d),
            }
        }
        others
    }

    /// The key an Ingress's diagnostics are filed under.
    pub fn key(namespace: &str, name: &str) -> String {
        format!("{namespace}/{name}")
    }

    /// The diagnostics of the Ingress filed under `key`.
    pub fn ingress(&self, key: &str) -> &[Diagnostic] {
        self.by_ingress.get(key).map_or(&[], |l| l.as_slice())
    }

    /// Replaces the diagnostics of the Ingress filed under `key`.
    pub fn set_ingress(&mut self, key: &str, list: Vec<Diagnostic>) {
        let old: Vec<Severity> = self.ingress(key).iter().map(|d| d.severity).collect();
        for severity in old {
            self.counts[severity as usize] -= 1;
        }
        for d in &list {
            self.counts[d.severity as usize] += 1;
        }
        match list.is_empty() {
            true => self.by_ingress.remove(key),
            false => self.by_ingress.insert(key, std::sync::Arc::new(list)),
        };
    }

    /// Every diagnostic, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.others.iter().chain(self.by_ingress.values().flat_map(|l| l.iter()))
    }

    /// Every diagnostic, sorted.
    pub fn to_vec(&self) -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> = self.iter().cloned().collect();
        all.sort();
        all
    }

    pub fn len(&self) -> usize {
        self.counts.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many diagnostics have `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.counts[severity as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filed_diagnostics_are_replaced_ingress_by_ingress() {
        let ing = |name: &str| ObjectRef::new("Ingress", "ns", name);
        let all = vec![
            Diagnostic::error(&ing("a"), "spec", "one"),
            Diagnostic::warning(&ing("a"), "spec", "two"),
            Diagnostic::warning(&ing("b"), "spec", "three"),
            Diagnostic::error(&ObjectRef::new("L4Route", "ns", "l"), "spec", "four"),
        ];
        let mut filed = Filed::new(all.clone());
        assert_eq!(filed.to_vec(), {
            let mut a = all.clone();
            a.sort();
            a
        });
        assert_eq!((filed.count(Severity::Error), filed.count(Severity::Warning)), (2, 2));
        assert_eq!(filed.ingress(&Filed::key("ns", "a")).len(), 2);

        let before = filed.clone();
        filed.set_ingress(&Filed::key("ns", "a"), vec![Diagnostic::warning(&ing("a"), "spec", "five")]);
        filed.set_ingress(&Filed::key("ns", "b"), Vec::new());
        assert_eq!((filed.count(Severity::Error), filed.count(Severity::Warning)), (1, 1));
        assert_eq!(filed.len(), filed.iter().count());
        assert!(filed.ingress(&Filed::key("ns", "b")).is_empty());
        assert_eq!(before.len(), 4, "a clone keeps what it had");
        assert_eq!(before.ingress(&Filed::key("ns", "a"))[0].reason, "one");
    }
}
