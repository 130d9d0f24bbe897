//! The one place that turns a refusal into an HTTP status and an RFC 9457 problem+json body.
//!
//! Modules return their own error types; [`Refusal`] classifies them by type. 4xx bodies may
//! say what was wrong with the client's request; 403 and 5xx bodies stay generic (the detail
//! goes to the audit record and the log). Every body carries the request's `decision_id`.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::auth::AuthError;
use crate::policy::DenyReason;
use crate::routes::PathError;

/// Why a request was not forwarded, or why forwarding failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request header block is over `limits.max_header_bytes`.
    HeadersTooLarge,
    BadPath(PathError),
    /// A malformed request other than its path; the text is a fixed code.
    BadRequest(&'static str),
    Auth(AuthError),
    NoRoute,
    Denied(DenyReason),
    UpstreamUnavailable,
    UpstreamTimeout,
    /// The audit trail cannot make the request's record durable (spool full or unwritable,
    /// queue full): refused rather than passed unaudited.
    AuditUnavailable,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::BadPath(_) | Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::Auth(AuthError::DuplicateHeader | AuthError::TokenInQueryAndHeader) => {
                StatusCode::BAD_REQUEST
            }
            Refusal::Auth(_) => StatusCode::UNAUTHORIZED,
            Refusal::NoRoute | Refusal::Denied(_) => StatusCode::FORBIDDEN,
            Refusal::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The audit `reason` (a fixed vocabulary, also a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::HeadersTooLarge => "headers_too_large",
            Refusal::BadPath(_) => "bad_path",
            Refusal::BadRequest(code) => code,
            Refusal::Auth(e) => e.reason(),
            Refusal::NoRoute => "no_route",
            Refusal::Denied(r) => r.as_str(),
            Refusal::UpstreamUnavailable => "upstream_unavailable",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::AuditUnavailable => "audit_unavailable",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Refusal::HeadersTooLarge => "Request header fields too large",
            Refusal::BadPath(_) | Refusal::BadRequest(_) => "Bad request",
            Refusal::Auth(AuthError::DuplicateHeader | AuthError::TokenInQueryAndHeader) => {
                "Bad request"
            }
            Refusal::Auth(_) => "Unauthorized",
            Refusal::NoRoute | Refusal::Denied(_) => "Forbidden",
            Refusal::UpstreamUnavailable => "Bad gateway",
            Refusal::UpstreamTimeout => "Gateway timeout",
            Refusal::AuditUnavailable => "Service unavailable",
        }
    }

    /// What the client may be told: only about its own request.
    fn detail(&self) -> Option<String> {
        match self {
            Refusal::BadPath(e) => Some(e.to_string()),
            Refusal::BadRequest(code) => Some((*code).to_owned()),
            Refusal::Auth(e) => Some(e.to_string()),
            _ => None,
        }
    }

    /// The problem+json response for this refusal.
    pub fn response(&self, decision_id: &str) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": self.title(),
            "status": status.as_u16(),
            "decision_id": decision_id,
        });
        if let (Some(d), Some(obj)) = (self.detail(), body.as_object_mut()) {
            obj.insert("detail".into(), serde_json::Value::String(d));
        }
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        if *self == Refusal::AuditUnavailable {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Refusal::Auth(e) = self {
            let challenge = match e {
                AuthError::Missing | AuthError::OtherScheme => Some(r#"Bearer realm="wardgate""#),
                AuthError::Invalid(_) => Some(r#"Bearer realm="wardgate", error="invalid_token""#),
                AuthError::DuplicateHeader | AuthError::TokenInQueryAndHeader => None,
            };
            if let Some(c) = challenge {
                h.insert(WWW_AUTHENTICATE, HeaderValue::from_static(c));
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenError;

    fn parts(r: &Refusal) -> (u16, Option<String>) {
        let resp: Response<Full<Bytes>> = r.response("d-1");
        (
            resp.status().as_u16(),
            resp.headers()
                .get(WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap_or("").to_owned()),
        )
    }

    #[test]
    fn statuses_and_challenges() {
        assert_eq!(
            parts(&Refusal::Auth(AuthError::Missing)),
            (401, Some(r#"Bearer realm="wardgate""#.into()))
        );
        assert_eq!(
            parts(&Refusal::Auth(AuthError::Invalid(TokenError::Expired))),
            (
                401,
                Some(r#"Bearer realm="wardgate", error="invalid_token""#.into())
            )
        );
        assert_eq!(
            parts(&Refusal::Auth(AuthError::DuplicateHeader)),
            (400, None)
        );
        assert_eq!(parts(&Refusal::BadPath(PathError::DotSegment)).0, 400);
        assert_eq!(parts(&Refusal::NoRoute).0, 403);
        assert_eq!(parts(&Refusal::Denied(DenyReason::Policy)).0, 403);
        assert_eq!(parts(&Refusal::UpstreamUnavailable).0, 502);
        assert_eq!(parts(&Refusal::UpstreamTimeout).0, 504);
        assert_eq!(parts(&Refusal::AuditUnavailable).0, 503);
        assert_eq!(parts(&Refusal::HeadersTooLarge).0, 431);
    }

    #[test]
    fn forbidden_body_says_nothing_about_policies() {
        let resp: Response<Full<Bytes>> =
            Refusal::Denied(DenyReason::EvaluationError).response("d-9");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/problem+json");
        let body = format!("{:?}", resp.body());
        assert!(!body.contains("evaluation"), "{body}");
    }
}
