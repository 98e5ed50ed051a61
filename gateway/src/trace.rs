//! W3C Trace Context (`traceparent`): ferry joins the client's trace as one hop, or starts one.
//!
//! A valid incoming `traceparent` keeps its trace id and flags and gets ferry's own span id as
//! the parent the upstream sees; without one (or with a malformed one) a new trace id is made,
//! not sampled (ferry exports no spans itself). `tracestate` passes through untouched.

use http::header::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits.
    pub trace_id: String,
    /// ferry's span: 16 lower-case hex digits.
    pub span_id: String,
    pub sampled: bool,
}

impl TraceContext {
    pub fn of(req: &RequestHeader) -> TraceContext {
        let span_id = format!("{:016x}", fastrand::u64(1..));
        match req.headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(parse) {
            Some((trace_id, flags)) => {
                TraceContext { trace_id: trace_id.to_string(), span_id, sampled: flags & 1 == 1 }
            }
            None => TraceContext {
                trace_id: format!("{:016x}{:016x}", fastrand::u64(1..), fastrand::u64(..)),
                span_id,
                sampled: false,
            },
        }
    }

    /// The `traceparent` the upstream gets.
    pub fn header(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }

    pub fn set_on(&self, upstream: &mut RequestHeader) -> pingora::Result<()> {
        let v = HeaderValue::from_str(&self.header())
            .map_err(|_| pingora::Error::new(pingora::ErrorType::InternalError))?;
        upstream.insert_header(TRACEPARENT.clone(), v)
    }
}

/// `version-traceid-parentid-flags`; returns the trace id and flags when valid.
fn parse(v: &str) -> Option<(&str, u8)> {
    let mut parts = v.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || zero(trace) || !hex(parent, 16) || zero(parent) {
        return None;
    }
    // Version 00 has exactly four fields; later versions may append more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let flags = u8::from_str_radix(flags.get(..2)?, 16).ok()?;
    Some((trace, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(tp: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(tp) = tp {
            r.insert_header("traceparent", tp).unwrap();
        }
        r
    }

    #[test]
    fn joins_a_valid_trace_and_starts_one_otherwise() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::of(&req(Some(incoming)));
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.sampled);
        assert_ne!(t.span_id, "00f067aa0ba902b7", "ferry is a new hop");
        assert!(t.header().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && t.header().ends_with("-01"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let t = TraceContext::of(&req(Some(bad)));
            assert_ne!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert!(!t.sampled);
        }
        let fresh = TraceContext::of(&req(None));
        assert_eq!((fresh.trace_id.len(), fresh.span_id.len()), (32, 16));
        assert!(fresh.header().ends_with("-00"));
    }
}
