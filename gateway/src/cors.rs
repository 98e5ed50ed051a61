//! CORS for a route (`ferry.dev/cors-*`): preflight requests are answered by ferry; responses to
//! allowed origins get the `Access-Control-*` headers.

use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins (`scheme://host[:port]`, lower-case; a `*` in one stands for any
    /// characters, `https://*.example.com`); empty or `*` = any.
    pub origins: Vec<String>,
    /// `*`: any method (the requested one is named when credentials are allowed).
    pub methods: String,
    /// `*`: any header (the requested ones are named when credentials are allowed).
    pub headers: String,
    pub expose: Option<String>,
    pub credentials: bool,
    pub max_age: u32,
}

static ACRM: HeaderName = HeaderName::from_static("access-control-request-method");
static ACRH: HeaderName = HeaderName::from_static("access-control-request-headers");

/// The `Access-Control-Allow-*` values of an answer to a preflight: origin, methods, headers.
pub type PreflightAnswer = (HeaderValue, HeaderValue, HeaderValue);

/// Whether origin `pattern` (lower-case, `*` = any characters) admits `origin`.
fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.eq_ignore_ascii_case(origin),
        Some((head, tail)) => {
            // `*` stands for host labels only: never `/`, `@`, `:` or anything that would make
            // the origin a different one.
            origin.len() > head.len() + tail.len()
                && origin[..head.len()].eq_ignore_ascii_case(head)
                && origin[origin.len() - tail.len()..].eq_ignore_ascii_case(tail)
                && origin[head.len()..origin.len() - tail.len()]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
    }
}

impl Cors {
    fn any_origin(&self) -> bool {
        self.origins.is_empty() || self.origins.iter().any(|o| o == "*")
    }

    /// The value for `Access-Control-Allow-Origin` if the request's `Origin` is allowed. With
    /// credentials the origin itself is echoed (`*` is not allowed with credentials).
    pub fn allow_origin(&self, req: &RequestHeader) -> Option<HeaderValue> {
        let origin = req.headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        if self.any_origin() {
            return Some(if self.credentials { origin.clone() } else { HeaderValue::from_static("*") });
        }
        self.origins.iter().any(|o| origin_matches(o, text)).then(|| origin.clone())
    }

    /// The answer to a preflight from an allowed origin (`None`: not allowed, no CORS headers).
    pub fn preflight(&self, req: &RequestHeader) -> Option<PreflightAnswer> {
        let origin = self.allow_origin(req)?;
        // With credentials a browser does not take `*`: name what was asked for.
        let named = |configured: &str, asked: Option<&HeaderValue>| -> HeaderValue {
            match (configured, asked) {
                ("*", Some(v)) if self.credentials => v.clone(),
                _ => HeaderValue::from_str(configured).unwrap_or_else(|_| HeaderValue::from_static("")),
            }
        };
        Some((origin, named(&self.methods, req.headers.get(&ACRM)), named(&self.headers, req.headers.get(&ACRH))))
    }

    /// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
    pub fn is_preflight(req: &RequestHeader) -> bool {
        req.method == http::Method::OPTIONS
            && req.headers.contains_key(header::ORIGIN)
            && req.headers.contains_key(&ACRM)
    }

    /// Adds the headers of an answer to an allowed origin (`preflight`: the methods and headers
    /// allowed, for an answer to a preflight).
    pub fn apply(
        &self,
        resp: &mut ResponseHeader,
        allow: HeaderValue,
        preflight: Option<(&HeaderValue, &HeaderValue)>,
    ) -> pingora::Result<()> {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow)?;
        if self.credentials {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
        }
        if !self.any_origin() || self.credentials {
            resp.append_header(header::VARY, "Origin")?;
        }
        if let Some((methods, headers)) = preflight {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, methods.clone())?;
            if !headers.is_empty() {
                resp.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, headers.clone())?;
            }
            resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, self.max_age)?;
        }
        if let Some(expose) = &self.expose {
            resp.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::origin_matches;

    #[test]
    fn origin_patterns() {
        assert!(origin_matches("https://www.foo.com", "https://WWW.foo.com"));
        assert!(origin_matches("https://*.bar.com", "https://www.bar.com"));
        assert!(origin_matches("https://*.bar.com", "https://xpto.www.bar.com"));
        assert!(!origin_matches("https://*.bar.com", "https://bar.com"));
        assert!(!origin_matches("https://*.bar.com", "http://www.bar.com"));
        assert!(!origin_matches("https://www.foo.com", "https://www.foo.com.evil"));
        assert!(!origin_matches("https://*.ok.example", "https://evil.example/.ok.example"));
        assert!(!origin_matches("https://*.ok.example", "https://a@evil.example:1.ok.example"));
    }
}
