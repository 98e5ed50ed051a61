//! W3C Trace Context (`traceparent`): ferry joins the client's trace as one hop, or starts one.
//!
//! A valid incoming `traceparent` keeps its trace id and flags and gets ferry's own span id as
//! the parent the upstream sees; without one (or with a malformed one) a new trace id is made,
//! sampled with the OTLP exporter's ratio (never when export is off). `tracestate` passes
//! through untouched.

use http::header::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lower-case hex digits (inline: no allocation per request).
    trace_id: [u8; 32],
    /// ferry's span id.
    span_id: u64,
    /// The client's span id, when the request carried a valid `traceparent`.
    parent: Option<u64>,
    pub sampled: bool,
}

impl TraceContext {
    /// The request's trace; a new one is sampled with probability `sample_ratio`.
    pub fn of(req: &RequestHeader, sample_ratio: f64) -> TraceContext {
        let span_id = fastrand::u64(1..);
        match req.headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(parse) {
            Some((trace_id, parent, flags)) => {
                TraceContext { trace_id, span_id, parent: Some(parent), sampled: flags & 1 == 1 }
            }
            None => {
                let mut id = [0u8; 32];
                hex_u64(&mut id[..16], fastrand::u64(1..));
                hex_u64(&mut id[16..], fastrand::u64(..));
                let sampled = sample_ratio > 0.0 && fastrand::f64() < sample_ratio;
                TraceContext { trace_id: id, span_id, parent: None, sampled }
            }
        }
    }

    /// The trace id: 32 lower-case hex digits.
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).unwrap_or_default()
    }

    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    pub fn parent_id(&self) -> Option<u64> {
        self.parent
    }

    /// The `traceparent` the upstream gets: `00-<trace id>-<ferry's span id>-<flags>`.
    /// Written by hand: `format!` costs more than the rest of this module per request.
    fn header_bytes(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        out[3..35].copy_from_slice(&self.trace_id);
        hex_u64(&mut out[36..52], self.span_id);
        out[54] = if self.sampled { b'1' } else { b'0' };
        out
    }

    pub fn header(&self) -> String {
        String::from_utf8_lossy(&self.header_bytes()).into_owned()
    }

    pub fn set_on(&self, upstream: &mut impl crate::head::EditHead) -> pingora::Result<()> {
        let v = HeaderValue::from_bytes(&self.header_bytes())
            .map_err(|_| pingora::Error::new(pingora::ErrorType::InternalError))?;
        upstream.insert(crate::head::Name::spelled("traceparent", "traceparent"), v)
    }
}

/// Writes `v` as 16 lower-case hex digits into `out` (exactly 16 bytes).
pub fn hex_u64(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate().take(16) {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// `version-traceid-parentid-flags`; returns the trace id, parent id and flags when valid.
fn parse(v: &str) -> Option<([u8; 32], u64, u8)> {
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
    let trace: [u8; 32] = trace.as_bytes().try_into().ok()?;
    Some((trace, u64::from_str_radix(parent, 16).ok()?, flags))
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
        let t = TraceContext::of(&req(Some(incoming)), 0.0);
        assert_eq!(t.parent_id(), Some(0x00f0_67aa_0ba9_02b7));
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.sampled);
        assert!(!t.header().contains("00f067aa0ba902b7"), "ferry is a new hop");
        assert!(t.header().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && t.header().ends_with("-01"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let t = TraceContext::of(&req(Some(bad)), 0.0);
            assert_ne!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert!(!t.sampled);
        }
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!TraceContext::of(&req(Some(unsampled)), 1.0).sampled, "the client's decision stands");
        assert!(TraceContext::of(&req(None), 1.0).sampled);
        let fresh = TraceContext::of(&req(None), 0.0);
        assert_eq!(fresh.parent_id(), None);
        assert_eq!(fresh.trace_id().len(), 32);
        assert!(fresh.trace_id().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let mut buf = [0u8; 16];
        hex_u64(&mut buf, 0x0123_4567_89ab_cdef);
        assert_eq!(&buf, b"0123456789abcdef");
        assert!(fresh.header().ends_with("-00"));
    }
}
