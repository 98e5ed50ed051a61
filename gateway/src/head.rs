//! The upstream request head as the request lifecycle ([`crate::http`]) edits it.
//!
//! The **upstream request** phase removes, sets and adds fields and may change the target.
//! Both engines run that phase on [`EditHead`]: the Pingora engine on the `RequestHeader`
//! Pingora hands it, the fast engine on an [`UpstreamHead`] — the client's head, untouched, plus
//! the edits — which its HTTP/1 client writes straight to the wire ([`UpstreamHead::write_h1`])
//! without copying the client's head into a second header map.

use std::borrow::Cow;

use bytes::{BufMut, Bytes};
use http::header::{HeaderName, HeaderValue};
use pingora::http::{IntoCaseHeaderName, RequestHeader};
use pingora::Result;

/// A field name ferry sets, and how it is spelled on the wire (`None`: as Pingora spells it,
/// title case for the common fields, else lower case).
#[derive(Clone, Debug)]
pub struct Name {
    pub name: HeaderName,
    pub spelling: Option<&'static str>,
}

impl Name {
    /// `name` (lower case) spelled `spelling` on the wire.
    pub const fn spelled(name: &'static str, spelling: &'static str) -> Name {
        Name { name: HeaderName::from_static(name), spelling: Some(spelling) }
    }

    /// How the name goes on the wire.
    fn wire(&self) -> Cow<'_, [u8]> {
        match self.spelling {
            Some(s) => Cow::Borrowed(s.as_bytes()),
            None => Cow::Owned((&self.name).into_case_header_name().as_slice().to_vec()),
        }
    }
}

impl From<&HeaderName> for Name {
    fn from(name: &HeaderName) -> Name {
        Name { name: name.clone(), spelling: None }
    }
}

/// The operations of the upstream request phase on a request head.
pub trait EditHead {
    /// The first value of `name`.
    fn get(&self, name: &HeaderName) -> Option<&HeaderValue>;
    /// Every value of `name`.
    fn get_all<'s>(&'s self, name: &'s HeaderName) -> impl Iterator<Item = &'s HeaderValue> + 's;
    fn contains(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }
    /// The names of the fields (a name may come more than once).
    fn names(&self) -> impl Iterator<Item = &HeaderName>;
    /// Replaces every field `name` with one (where the first was, if there was one).
    fn insert(&mut self, name: Name, value: HeaderValue) -> Result<()>;
    /// Adds a field `name`, keeping those there are.
    fn append(&mut self, name: Name, value: HeaderValue) -> Result<()>;
    /// Removes every field `name`.
    fn remove(&mut self, name: &HeaderName);
    /// The request target as it goes upstream.
    fn raw_path(&self) -> &[u8];
    fn set_raw_path(&mut self, path: &[u8]) -> Result<()>;
    /// The authority of an absolute-form target.
    fn authority(&self) -> Option<&str>;
    /// The head with the edits made, as a `RequestHeader` (a copy for an [`UpstreamHead`]).
    fn to_request_header(&self) -> Cow<'_, RequestHeader>;
}

impl EditHead for RequestHeader {
    fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.headers.get(name)
    }

    fn get_all<'s>(&'s self, name: &'s HeaderName) -> impl Iterator<Item = &'s HeaderValue> + 's {
        self.headers.get_all(name).iter()
    }

    fn contains(&self, name: &HeaderName) -> bool {
        self.headers.contains_key(name)
    }

    fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers.keys()
    }

    fn insert(&mut self, name: Name, value: HeaderValue) -> Result<()> {
        match name.spelling {
            Some(s) => self.insert_header(s, value),
            None => self.insert_header(name.name, value),
        }
    }

    fn append(&mut self, name: Name, value: HeaderValue) -> Result<()> {
        match name.spelling {
            Some(s) => self.append_header(s, value),
            None => self.append_header(name.name, value),
        }
        .map(drop)
    }

    fn remove(&mut self, name: &HeaderName) {
        if self.headers.contains_key(name) {
            self.remove_header(name);
        }
    }

    fn raw_path(&self) -> &[u8] {
        RequestHeader::raw_path(self)
    }

    fn set_raw_path(&mut self, path: &[u8]) -> Result<()> {
        RequestHeader::set_raw_path(self, path)
    }

    fn authority(&self) -> Option<&str> {
        self.uri.authority().map(|a| a.as_str())
    }

    fn to_request_header(&self) -> Cow<'_, RequestHeader> {
        Cow::Borrowed(self)
    }
}

/// The client's request head and the edits that make it the upstream one.
pub struct UpstreamHead<'a> {
    base: &'a RequestHeader,
    /// Names whose fields in `base` are not sent (removed, or replaced).
    dropped: Vec<HeaderName>,
    /// Fields that replace a name of `base`, each where that name's first field was.
    replaced: Vec<(Name, HeaderValue)>,
    /// Fields after `base`'s.
    added: Vec<(Name, HeaderValue)>,
    path: Option<Bytes>,
}

impl<'a> UpstreamHead<'a> {
    pub fn new(base: &'a RequestHeader) -> UpstreamHead<'a> {
        // Room for the fields every request gains (request id, trace context, forwarding).
        UpstreamHead { base, dropped: Vec::new(), replaced: Vec::new(), added: Vec::with_capacity(8), path: None }
    }

    /// The client's head.
    pub fn base(&self) -> &RequestHeader {
        self.base
    }

    fn in_base(&self, name: &HeaderName) -> bool {
        !self.dropped.contains(name) && self.base.headers.contains_key(name)
    }

    /// The head in HTTP/1 wire form (request line, fields, blank line) appended to `out`: the
    /// client's fields in their order and spelling, each replaced one in the place of the
    /// first field of its name, then the added ones.
    pub fn write_h1(&self, out: &mut impl BufMut) {
        let base = self.base;
        out.put_slice(base.method.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.raw_path());
        out.put_slice(if base.version == http::Version::HTTP_10 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
        let mut field = |name: &[u8], value: &HeaderValue| {
            out.put_slice(name);
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        };
        // Which replaced fields have been written (at most 64 are tracked; the rest go last).
        let mut written = 0u64;
        let mut base_field = |spelled: &[u8], value: &HeaderValue| {
            let dropped = self.dropped.iter().find(|d| d.as_str().as_bytes().eq_ignore_ascii_case(spelled));
            let Some(dropped) = dropped else { return field(spelled, value) };
            if let Some(i) = self.replaced.iter().position(|(n, _)| n.name == *dropped).filter(|i| *i < 64) {
                if written & (1 << i) == 0 {
                    written |= 1 << i;
                    let (n, v) = &self.replaced[i];
                    field(&n.wire(), v);
                }
            }
        };
        if base.has_case() {
            for (name, value) in base.case_header_iter() {
                base_field(name.as_slice(), value);
            }
        } else {
            for (name, value) in base.headers.iter() {
                base_field(name.into_case_header_name().as_slice(), value);
            }
        }
        for (i, (n, v)) in self.replaced.iter().enumerate() {
            if i >= 64 || written & (1 << i) == 0 {
                field(&n.wire(), v);
            }
        }
        for (n, v) in &self.added {
            field(&n.wire(), v);
        }
        out.put_slice(b"\r\n");
    }
}

impl EditHead for UpstreamHead<'_> {
    fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        if let Some((_, v)) = self.replaced.iter().find(|(n, _)| n.name == *name) {
            return Some(v);
        }
        if self.in_base(name) {
            return self.base.headers.get(name);
        }
        self.added.iter().find(|(n, _)| n.name == *name).map(|(_, v)| v)
    }

    fn get_all<'s>(&'s self, name: &'s HeaderName) -> impl Iterator<Item = &'s HeaderValue> + 's {
        let replaced = self.replaced.iter().filter(move |(n, _)| n.name == *name).map(|(_, v)| v);
        let base = self.in_base(name).then(|| self.base.headers.get_all(name).iter()).into_iter().flatten();
        let added = self.added.iter().filter(move |(n, _)| n.name == *name).map(|(_, v)| v);
        replaced.chain(base).chain(added)
    }

    fn names(&self) -> impl Iterator<Item = &HeaderName> {
        let base = self.base.headers.keys().filter(|k| !self.dropped.contains(k));
        base.chain(self.replaced.iter().map(|(n, _)| &n.name)).chain(self.added.iter().map(|(n, _)| &n.name))
    }

    fn insert(&mut self, name: Name, value: HeaderValue) -> Result<()> {
        self.added.retain(|(n, _)| n.name != name.name);
        if let Some(at) = self.replaced.iter().position(|(n, _)| n.name == name.name) {
            self.replaced[at] = (name, value);
        } else if self.in_base(&name.name) {
            self.dropped.push(name.name.clone());
            self.replaced.push((name, value));
        } else {
            self.added.push((name, value));
        }
        Ok(())
    }

    fn append(&mut self, name: Name, value: HeaderValue) -> Result<()> {
        self.added.push((name, value));
        Ok(())
    }

    fn remove(&mut self, name: &HeaderName) {
        if self.in_base(name) {
            self.dropped.push(name.clone());
        }
        self.replaced.retain(|(n, _)| n.name != *name);
        self.added.retain(|(n, _)| n.name != *name);
    }

    fn raw_path(&self) -> &[u8] {
        self.path.as_deref().unwrap_or_else(|| self.base.raw_path())
    }

    fn set_raw_path(&mut self, path: &[u8]) -> Result<()> {
        self.path = Some(Bytes::copy_from_slice(path));
        Ok(())
    }

    fn authority(&self) -> Option<&str> {
        self.base.uri.authority().map(|a| a.as_str())
    }

    fn to_request_header(&self) -> Cow<'_, RequestHeader> {
        let mut head = self.base.clone();
        for name in &self.dropped {
            head.remove_header(name);
        }
        for (name, value) in self.replaced.iter().chain(&self.added) {
            // Replaced names were removed above, so appending puts each field back once.
            let _ = head.append(name.clone(), value.clone());
        }
        if let Some(path) = &self.path {
            let _ = head.set_raw_path(path);
        }
        Cow::Owned(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn client_head() -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/a?b", None).unwrap();
        for (n, v) in [("Host", "a.test"), ("x-Forwarded-For", "6.6.6.6"), ("Accept", "*/*"), ("Keep-Alive", "5")] {
            req.append_header(n.to_string(), v).unwrap();
        }
        req
    }

    fn wire(head: &UpstreamHead) -> String {
        let mut out = Vec::new();
        head.write_h1(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// The same edits on an `UpstreamHead` and on a copy of the client's `RequestHeader`.
    fn edit(h: &mut impl EditHead) {
        h.remove(&HeaderName::from_static("keep-alive"));
        h.insert(Name::spelled("x-forwarded-for", "X-Forwarded-For"), HeaderValue::from_static("10.0.0.1")).unwrap();
        h.insert(Name::spelled("x-request-id", "X-Request-Id"), HeaderValue::from_static("id")).unwrap();
        h.append(Name::from(&header::ACCEPT), HeaderValue::from_static("text/html")).unwrap();
        h.set_raw_path(b"/rewritten").unwrap();
    }

    #[test]
    fn edits_go_on_the_wire_in_the_clients_order_and_spelling() {
        let req = client_head();
        let mut head = UpstreamHead::new(&req);
        edit(&mut head);
        assert_eq!(
            wire(&head),
            "GET /rewritten HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n\
             X-Request-Id: id\r\naccept: text/html\r\n\r\n"
        );
        // The client's head is untouched; reads see the edits.
        assert_eq!(req.headers.get("x-forwarded-for").unwrap(), "6.6.6.6");
        assert_eq!(head.get(&HeaderName::from_static("x-forwarded-for")).unwrap(), "10.0.0.1");
        assert_eq!(head.get_all(&header::ACCEPT).count(), 2);
        assert!(!head.contains(&HeaderName::from_static("keep-alive")));
        assert_eq!(head.raw_path(), b"/rewritten");
    }

    #[test]
    fn both_forms_of_the_head_agree() {
        let req = client_head();
        let mut overlay = UpstreamHead::new(&req);
        edit(&mut overlay);
        let mut copy = req.clone();
        edit(&mut copy);
        let fields = |h: &RequestHeader| {
            let mut f: Vec<(String, String)> =
                h.headers.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string())).collect();
            f.sort();
            f
        };
        let made = overlay.to_request_header();
        assert_eq!(fields(&made), fields(&copy));
        assert_eq!(made.raw_path(), copy.raw_path());
        // Removing what was set, setting what was removed.
        overlay.remove(&HeaderName::from_static("x-request-id"));
        overlay.insert(Name::spelled("keep-alive", "Keep-Alive"), HeaderValue::from_static("9")).unwrap();
        assert!(!wire(&overlay).contains("X-Request-Id"));
        assert!(wire(&overlay).ends_with("Keep-Alive: 9\r\n\r\n"), "{}", wire(&overlay));
    }
}
