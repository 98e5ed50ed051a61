//! Request conditions and header edits of Gateway API rules: what a request must carry besides
//! its host and path to take a rule (method, headers, query parameters), and the header changes
//! a rule's filters make on the way up or down.
//!
//! Conditions are checked only for rules that have them: an Ingress path, and a Gateway API
//! rule that matches on path alone, never reach this module.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// How a header or query parameter value is compared.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// Byte for byte (case-sensitive).
    Exact(Box<str>),
    /// The whole value matches the expression (it is anchored at both ends when compiled).
    Regex(regex::Regex),
}

impl ValueMatch {
    /// `pattern` compiled to match a whole value.
    pub fn regex(pattern: &str) -> Result<ValueMatch, regex::Error> {
        regex::Regex::new(&format!("^(?:{pattern})$")).map(ValueMatch::Regex)
    }

    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(want) => value == want.as_bytes(),
            ValueMatch::Regex(re) => std::str::from_utf8(value).is_ok_and(|v| re.is_match(v)),
        }
    }

    fn describe(&self) -> String {
        match self {
            ValueMatch::Exact(v) => format!("={v}"),
            ValueMatch::Regex(re) => {
                let s = re.as_str();
                format!("~{}", s.strip_prefix("^(?:").and_then(|s| s.strip_suffix(")$")).unwrap_or(s))
            }
        }
    }
}

/// What a request must carry, besides host and path, to take a rule. Empty: every request.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub method: Option<Method>,
    /// Header name (any case in the request) and value; all must match.
    pub headers: Box<[(HeaderName, ValueMatch)]>,
    /// Query parameter name (exact case) and value as sent (not decoded); all must match.
    pub query: Box<[(Box<str>, ValueMatch)]>,
}

impl Conditions {
    pub fn is_empty(&self) -> bool {
        self.method.is_none() && self.headers.is_empty() && self.query.is_empty()
    }

    /// Whether the request meets every condition. A header sent several times matches when
    /// one of its values does; a query parameter sent several times is judged by its first.
    pub fn matches(&self, method: &Method, headers: &HeaderMap, query: Option<&str>) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        let headers_ok =
            self.headers.iter().all(|(name, want)| headers.get_all(name).iter().any(|v| want.matches(v.as_bytes())));
        headers_ok
            && self
                .query
                .iter()
                .all(|(name, want)| query_param(query.unwrap_or(""), name).is_some_and(|v| want.matches(v)))
    }

    /// A short text form for `/routes`, e.g. `GET header:x-env=canary query:v~[0-9]+`.
    pub fn describe(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        if let Some(m) = &self.method {
            parts.push(m.to_string());
        }
        parts.extend(self.headers.iter().map(|(n, v)| format!("header:{n}{}", v.describe())));
        parts.extend(self.query.iter().map(|(n, v)| format!("query:{n}{}", v.describe())));
        Some(parts.join(" "))
    }
}

/// The first value of query parameter `name` (`a=1&b=2`; a name without `=` has an empty value).
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q [u8]> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name).then_some(v.as_bytes())
    })
}

/// A filter's header changes: set (replace), add (append), remove — applied in that order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the edits to `target` through the engine's own header calls (`set`, `append`,
    /// `remove`), so its wire-order bookkeeping stays in step.
    pub fn apply<T, E>(
        &self,
        target: &mut T,
        set: fn(&mut T, &HeaderName, &HeaderValue) -> Result<(), E>,
        append: fn(&mut T, &HeaderName, &HeaderValue) -> Result<(), E>,
        remove: fn(&mut T, &HeaderName),
    ) -> Result<(), E> {
        for (n, v) in &self.set {
            set(target, n, v)?;
        }
        for (n, v) in &self.add {
            append(target, n, v)?;
        }
        for n in &self.remove {
            remove(target, n);
        }
        Ok(())
    }

    /// Text form for `/routes`.
    pub fn describe(&self) -> String {
        let pairs = |l: &[(HeaderName, HeaderValue)]| {
            l.iter().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?"))).collect::<Vec<_>>().join(", ")
        };
        let mut parts = Vec::new();
        if !self.set.is_empty() {
            parts.push(format!("set [{}]", pairs(&self.set)));
        }
        if !self.add.is_empty() {
            parts.push(format!("add [{}]", pairs(&self.add)));
        }
        if !self.remove.is_empty() {
            let names: Vec<&str> = self.remove.iter().map(HeaderName::as_str).collect();
            parts.push(format!("remove [{}]", names.join(", ")));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in list {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn method_headers_and_query_must_all_match() {
        let c = Conditions {
            method: Some(Method::POST),
            headers: vec![(HeaderName::from_static("version"), ValueMatch::Exact("two".into()))].into(),
            query: vec![("animal".into(), ValueMatch::regex("wh.le").unwrap())].into(),
        };
        let h = headers(&[("Version", "two")]);
        assert!(c.matches(&Method::POST, &h, Some("animal=whale")));
        assert!(!c.matches(&Method::GET, &h, Some("animal=whale")));
        assert!(!c.matches(&Method::POST, &headers(&[("version", "TWO")]), Some("animal=whale")));
        assert!(!c.matches(&Method::POST, &h, Some("animal=whales")), "regex is anchored");
        assert!(!c.matches(&Method::POST, &h, Some("Animal=whale")), "parameter names are case-sensitive");
        assert!(!c.matches(&Method::POST, &h, None));
        assert!(c.matches(&Method::POST, &headers(&[("version", "one"), ("version", "two")]), Some("x&animal=whale")));
        assert!(!c.matches(&Method::POST, &h, Some("animal=dolphin&animal=whale")), "first value decides");
        assert_eq!(c.describe().unwrap(), "POST header:version=two query:animal~wh.le");
        assert!(Conditions::default().matches(&Method::GET, &HeaderMap::new(), None));
    }

    #[test]
    fn edits_apply_in_order() {
        let mut h = headers(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let name = |s: &str| HeaderName::from_bytes(s.as_bytes()).unwrap();
        let e = HeaderEdits {
            set: vec![(name("a"), HeaderValue::from_static("one"))],
            add: vec![(name("b"), HeaderValue::from_static("two")), (name("d"), HeaderValue::from_static("4"))],
            remove: vec![name("c")],
        };
        e.apply::<_, ()>(
            &mut h,
            |h, n, v| {
                h.insert(n.clone(), v.clone());
                Ok(())
            },
            |h, n, v| {
                h.append(n.clone(), v.clone());
                Ok(())
            },
            |h, n| {
                h.remove(n);
            },
        )
        .unwrap();
        assert_eq!(h.get("a").unwrap(), "one");
        assert_eq!(h.get_all("b").iter().count(), 2);
        assert!(h.get("c").is_none());
        assert_eq!(h.get("d").unwrap(), "4");
        assert_eq!(e.describe(), "set [a: one]; add [b: two, d: 4]; remove [c]");
    }
}
