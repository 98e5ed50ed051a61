//! The request head as its raw lines say, read naively (split on LF, a trailing CR dropped, name
//! before the first `:`, value trimmed): the oracle's own view of which framing and `Host` fields
//! a request carried, independent of Pingora's header map and of `gateway::safety`.

pub struct RawHead<'a> {
    /// Field lines as (name, value); the request line is not among them.
    pub fields: Vec<(&'a [u8], &'a [u8])>,
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

impl<'a> RawHead<'a> {
    pub fn parse(head: &'a [u8]) -> Self {
        let mut fields = Vec::new();
        let lines = head.split(|b| *b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line));
        // Empty lines before the request line are ignored (RFC 9112 §2.2), then the request line.
        for line in lines.skip_while(|line| line.is_empty()).skip(1) {
            if line.is_empty() {
                break;
            }
            if let Some(colon) = line.iter().position(|b| *b == b':') {
                fields.push((trim(&line[..colon]), trim(&line[colon + 1..])));
            }
        }
        RawHead { fields }
    }

    /// Every value of the fields named `name` (any case).
    pub fn values(&self, name: &str) -> Vec<&'a [u8]> {
        self.fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| *v).collect()
    }

    /// The non-empty elements of the comma-separated lists in every field named `name`.
    pub fn list(&self, name: &str) -> Vec<&'a [u8]> {
        self.values(name)
            .into_iter()
            .flat_map(|v| v.split(|b| *b == b','))
            .map(trim)
            .filter(|e| !e.is_empty())
            .collect()
    }
}

/// What is wrong with the framing of a request head ferry accepted, if anything (RFC 9112 §6 as
/// ferry's rules state it: one `Content-Length` of digits, or `Transfer-Encoding` of exactly one
/// `chunked` and no `Content-Length`).
pub fn accepted_framing_problem(raw: &RawHead<'_>, http10: bool) -> Option<String> {
    let lengths = raw.values("content-length");
    let codings = raw.list("transfer-encoding");
    let has_te = !raw.values("transfer-encoding").is_empty();
    if lengths.len() > 1 {
        return Some(format!("accepted {} Content-Length fields", lengths.len()));
    }
    if let Some(v) = lengths.first() {
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Some(format!("accepted Content-Length {:?}", String::from_utf8_lossy(v)));
        }
    }
    if has_te {
        if !lengths.is_empty() {
            return Some("accepted Content-Length with Transfer-Encoding".into());
        }
        if http10 {
            return Some("accepted Transfer-Encoding on HTTP/1.0".into());
        }
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case(b"chunked") {
            let list: Vec<_> = codings.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            return Some(format!("accepted Transfer-Encoding {list:?}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_after_the_request_line() {
        let raw = RawHead::parse(b"\r\n\nGET / HTTP/1.1\r\nHost: a \r\nX:y\nContent-Length:\t5\r\n\r\nHost: b\r\n");
        assert_eq!(raw.values("host"), [b"a"]);
        assert_eq!(raw.values("content-length"), [b"5"]);
        assert_eq!(raw.list("x"), [b"y"]);
    }
}
