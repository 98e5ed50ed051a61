//! CORS for a route (`ferry.dev/cors-*`): preflight requests are answered by ferry; responses to
//! allowed origins get the `Access-Control-*` headers.

use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins (`scheme://host[:port]`, lower-case); empty = any (`*`).
    pub origins: Vec<String>,
    pub methods: String,
    pub headers: String,
    pub expose: Option<String>,
    pub credentials: bool,
    pub max_age: u32,
}

static ACRM: HeaderName = HeaderName::from_static("access-control-request-method");

impl Cors {
    /// The value for `Access-Control-Allow-Origin` if the request's `Origin` is allowed. With
    /// credentials the origin itself is echoed (`*` is not allowed with credentials).
    pub fn allow_origin(&self, req: &RequestHeader) -> Option<HeaderValue> {
        let origin = req.headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        if self.origins.is_empty() {
            return Some(if self.credentials { origin.clone() } else { HeaderValue::from_static("*") });
        }
        self.origins.iter().any(|o| o.eq_ignore_ascii_case(text)).then(|| origin.clone())
    }

    /// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
    pub fn is_preflight(req: &RequestHeader) -> bool {
        req.method == http::Method::OPTIONS
            && req.headers.contains_key(header::ORIGIN)
            && req.headers.contains_key(&ACRM)
    }

    /// Adds the headers of an answer to an allowed origin (`preflight` adds the request side).
    pub fn apply(&self, resp: &mut ResponseHeader, allow: HeaderValue, preflight: bool) -> pingora::Result<()> {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow)?;
        if self.credentials {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
        }
        if !self.origins.is_empty() || self.credentials {
            resp.append_header(header::VARY, "Origin")?;
        }
        if preflight {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.as_str())?;
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, self.headers.as_str())?;
            resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, self.max_age)?;
        } else if let Some(expose) = &self.expose {
            resp.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.as_str())?;
        }
        Ok(())
    }
}
