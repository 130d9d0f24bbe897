//! The route table and the path rules: METHOD + request target → action, resource type and id.
//!
//! The path that is authorized is the path that is forwarded, byte for byte, so nothing here
//! normalizes: a target that a backend could read differently from wardgate (dot segments,
//! empty segments, encoded `/` `\` `.` `%` `;` or control characters, `\`, `;` matrix
//! parameters, bad percent-encoding or escapes that are not UTF-8, Unicode look-alikes of
//! `/` `\` `.` `%` `;` that a normalizing backend would fold, segments that end in `.` or
//! begin or end in a space, anything but origin-form) is refused before matching.
//!
//! Matching compares percent-decoded segments, so `/p%61tients` is `/patients` — as RFC 3986
//! normalization (and the backend) would read it.

use serde::Deserialize;

/// One `routes[]` entry as written in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    method: String,
    path: String,
    action: String,
    resource: RawResource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    #[serde(rename = "type")]
    type_name: String,
    id: String,
}

/// A compile error, with the index of the route at fault.
#[derive(Debug)]
pub struct RouteTableError {
    pub index: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ResourceId {
    Literal(String),
    /// Index of the path segment that carries the id.
    Segment(usize),
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: http::Method,
    pub path: String,
    pub action: String,
    pub resource_type: String,
    segments: Vec<Segment>,
    resource_id: ResourceId,
}

/// The ordered route table; the first match wins.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// What a request target matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'t> {
    pub index: usize,
    pub action: &'t str,
    pub resource_type: &'t str,
    pub resource_id: String,
}

/// Why a request target was refused before matching (all answer 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request target is not origin-form")]
    NotOriginForm,
    #[error("path holds a dot segment")]
    DotSegment,
    #[error("path holds an empty segment")]
    EmptySegment,
    #[error("path holds a forbidden character")]
    ForbiddenChar,
    #[error("path holds a forbidden encoded character")]
    ForbiddenEncoding,
    #[error("path holds bad percent-encoding")]
    BadEncoding,
    #[error("path segment ends in a dot or begins or ends in a space")]
    AmbiguousSegment,
}

impl RouteTable {
    /// Compiles the routes, collecting every error.
    pub fn compile(raw: Vec<RawRoute>) -> Result<RouteTable, Vec<RouteTableError>> {
        let mut errors = Vec::new();
        let mut routes = Vec::new();
        if raw.is_empty() {
            errors.push(RouteTableError {
                index: 0,
                message: "at least one route is required".into(),
            });
        }
        for (index, r) in raw.into_iter().enumerate() {
            match compile_route(r) {
                Ok(route) => routes.push(route),
                Err(message) => errors.push(RouteTableError { index, message }),
            }
        }
        if errors.is_empty() {
            Ok(RouteTable { routes })
        } else {
            Err(errors)
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the first route for `method` and an already-checked `path`.
    pub fn find(&self, method: &http::Method, path: &str) -> Option<RouteMatch<'_>> {
        let method = if method == http::Method::HEAD {
            &http::Method::GET
        } else {
            method
        };
        // The leading `/` yields one empty first piece; skip it.
        let segs = || path.split('/').skip(1);
        let n = segs().count();
        'routes: for (index, route) in self.routes.iter().enumerate() {
            if route.method != *method || route.segments.len() != n {
                continue;
            }
            for (want, got) in route.segments.iter().zip(segs()) {
                match want {
                    Segment::Literal(l) if !literal_matches(l, got) => continue 'routes,
                    Segment::Param(_) if got.is_empty() => continue 'routes,
                    _ => {}
                }
            }
            let resource_id = match &route.resource_id {
                ResourceId::Literal(l) => l.clone(),
                ResourceId::Segment(i) => match segs().nth(*i).and_then(decode_segment) {
                    Some(id) => id,
                    // Not UTF-8 after decoding: nothing this route can name.
                    None => continue 'routes,
                },
            };
            return Some(RouteMatch {
                index,
                action: &route.action,
                resource_type: &route.resource_type,
                resource_id,
            });
        }
        None
    }
}

fn compile_route(r: RawRoute) -> Result<Route, String> {
    let method: http::Method = r
        .method
        .parse()
        .ok()
        .filter(|m: &http::Method| m.as_str().bytes().all(|b| b.is_ascii_uppercase()))
        .ok_or_else(|| format!("`method`: `{}` is not an upper-case HTTP method", r.method))?;
    if !r.path.starts_with('/') {
        return Err(format!("`path`: `{}` must start with `/`", r.path));
    }
    if r.path != "/" {
        check_path(&r.path).map_err(|e| format!("`path`: `{}`: {e}", r.path))?;
    }
    let mut segments = Vec::new();
    if r.path != "/" {
        for s in r.path.split('/').skip(1) {
            if let Some(name) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if !crate::config::is_identifier(name) {
                    return Err(format!("`path`: `{{{name}}}` is not a parameter name"));
                }
                if segments.contains(&Segment::Param(name.to_owned())) {
                    return Err(format!("`path`: `{{{name}}}` appears twice"));
                }
                segments.push(Segment::Param(name.to_owned()));
            } else if s.contains('{') || s.contains('}') {
                return Err(format!(
                    "`path`: segment `{s}` must be a literal or a whole `{{param}}`"
                ));
            } else {
                segments.push(Segment::Literal(s.to_owned()));
            }
        }
    } else {
        segments.push(Segment::Literal(String::new()));
    }
    if r.action.is_empty() {
        return Err("`action` must not be empty".into());
    }
    if !crate::config::is_identifier(&r.resource.type_name) {
        return Err(format!(
            "`resource.type`: `{}` is not a Cedar type name",
            r.resource.type_name
        ));
    }
    let resource_id = match r
        .resource
        .id
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
    {
        Some(name) => {
            let pos = segments
                .iter()
                .position(|s| s == &Segment::Param(name.to_owned()))
                .ok_or_else(|| {
                    format!("`resource.id`: `{{{name}}}` is not a parameter of the path")
                })?;
            ResourceId::Segment(pos)
        }
        None if r.resource.id.is_empty() => return Err("`resource.id` must not be empty".into()),
        None => ResourceId::Literal(r.resource.id),
    };
    Ok(Route {
        method,
        path: r.path,
        action: r.action,
        resource_type: r.resource.type_name,
        segments,
        resource_id,
    })
}

/// Checks a request target; returns the path to authorize (and forward unchanged).
pub fn check_target(uri: &http::Uri) -> Result<&str, PathError> {
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(PathError::NotOriginForm);
    }
    let path = uri.path();
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    if path == "/" {
        return Ok(path);
    }
    check_path(path)?;
    Ok(path)
}

fn check_path(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' | b';' => return Err(PathError::ForbiddenChar),
            0..=0x20 | 0x7f.. => return Err(PathError::ForbiddenChar),
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|c| hex(*c));
                let lo = bytes.get(i + 2).and_then(|c| hex(*c));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEncoding);
                };
                // `/`, `\`, `.`, `%` (double encoding), `;` and control characters must never hide
                // in an escape.
                if matches!(
                    hi << 4 | lo,
                    b'/' | b'\\' | b'.' | b'%' | b';' | 0..=0x1f | 0x7f
                ) {
                    return Err(PathError::ForbiddenEncoding);
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    for seg in path.split('/').skip(1) {
        match seg {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
        let decoded = decode_segment(seg).ok_or(PathError::BadEncoding)?;
        if decoded.chars().any(is_lookalike) {
            return Err(PathError::ForbiddenEncoding);
        }
        if decoded.ends_with('.') || decoded.starts_with(' ') || decoded.ends_with(' ') {
            return Err(PathError::AmbiguousSegment);
        }
    }
    Ok(())
}

/// Characters that Unicode compatibility normalization (NFKC) or a "best fit" code page folds
/// into `.`, `/`, `\`, `%` or `;`: a backend that normalizes would see a separator or an escape
/// where wardgate saw a plain character.
fn is_lookalike(c: char) -> bool {
    matches!(
        c,
        '\u{2024}' // one dot leader → .
            | '\u{2025}' // two dot leader → ..
            | '\u{2026}' // horizontal ellipsis → ...
            | '\u{FE52}' // small full stop
            | '\u{FF0E}' // fullwidth full stop
            | '\u{FF0F}' // fullwidth solidus
            | '\u{2215}' // division slash
            | '\u{2044}' // fraction slash
            | '\u{FF3C}' // fullwidth reverse solidus
            | '\u{FE68}' // small reverse solidus
            | '\u{29F5}' // reverse solidus operator
            | '\u{FF05}' // fullwidth percent sign
            | '\u{FE6A}' // small percent sign
            | '\u{FF1B}' // fullwidth semicolon
            | '\u{FE54}' // small semicolon
    )
}

/// A route's literal segment equals a request segment once that is percent-decoded.
fn literal_matches(literal: &str, got: &str) -> bool {
    if got.contains('%') {
        decode_segment(got).is_some_and(|d| d == literal)
    } else {
        literal == got
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one checked segment; `None` when the result is not UTF-8.
fn decode_segment(seg: &str) -> Option<String> {
    if !seg.contains('%') {
        return Some(seg.to_owned());
    }
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let raw: Vec<RawRoute> = serde_yaml::from_str(yaml).expect("yaml");
        RouteTable::compile(raw).expect("compiles")
    }

    fn clinic() -> RouteTable {
        table(
            r#"
- { method: GET,  path: "/patients",            action: ListPatients, resource: { type: PatientList, id: "all" } }
- { method: GET,  path: "/patients/{id}",       action: ReadPatient,  resource: { type: Patient, id: "{id}" } }
- { method: GET,  path: "/patients/{id}/notes", action: ReadNotes,    resource: { type: Patient, id: "{id}" } }
- { method: POST, path: "/patients/{id}/notes", action: WriteNote,    resource: { type: Patient, id: "{id}" } }
"#,
        )
    }

    fn target(t: &str) -> Result<String, PathError> {
        let uri: http::Uri = t.parse().map_err(|_| PathError::BadEncoding)?;
        check_target(&uri).map(str::to_owned)
    }

    #[test]
    fn first_match_wins_and_params_are_extracted() {
        let t = clinic();
        let m = t.find(&http::Method::GET, "/patients/p-1").expect("match");
        assert_eq!(
            (m.action, m.resource_type, m.resource_id.as_str()),
            ("ReadPatient", "Patient", "p-1")
        );
        let m = t
            .find(&http::Method::POST, "/patients/p-1/notes")
            .expect("match");
        assert_eq!(m.action, "WriteNote");
        let m = t.find(&http::Method::GET, "/patients").expect("match");
        assert_eq!(
            (m.resource_type, m.resource_id.as_str()),
            ("PatientList", "all")
        );
    }

    #[test]
    fn head_matches_get_and_case_matters() {
        let t = clinic();
        assert_eq!(
            t.find(&http::Method::HEAD, "/patients/x").map(|m| m.action),
            Some("ReadPatient")
        );
        assert!(t.find(&http::Method::GET, "/Patients/x").is_none());
        assert!(t.find(&http::Method::DELETE, "/patients/x").is_none());
        assert!(t.find(&http::Method::GET, "/patients/x/notes/y").is_none());
    }

    #[test]
    fn ids_are_percent_decoded() {
        let t = clinic();
        let m = t
            .find(&http::Method::GET, "/patients/a%20b")
            .expect("match");
        assert_eq!(m.resource_id, "a b");
    }

    #[test]
    fn hostile_targets_are_refused() {
        for (t, want) in [
            ("/patients/../admin", PathError::DotSegment),
            ("/patients/./p-1", PathError::DotSegment),
            ("/patients//p-1", PathError::EmptySegment),
            ("/patients/", PathError::EmptySegment),
            ("/patients/p-1%2fnotes", PathError::ForbiddenEncoding),
            ("/patients/p-1%2Fnotes", PathError::ForbiddenEncoding),
            ("/patients/%2e%2e", PathError::ForbiddenEncoding),
            ("/patients/p%5c1", PathError::ForbiddenEncoding),
            ("/patients/p%001", PathError::ForbiddenEncoding),
            ("/patients/p%252e", PathError::ForbiddenEncoding),
            ("/patients/p-1;x=y", PathError::ForbiddenChar),
            ("/patients/p%zz", PathError::BadEncoding),
            ("/patients/p%2", PathError::BadEncoding),
            ("http://evil/patients/p-1", PathError::NotOriginForm),
            ("*", PathError::NotOriginForm),
        ] {
            assert_eq!(target(t), Err(want), "{t}");
        }
        assert_eq!(
            target("/patients/p-1?x=/../y").as_deref(),
            Ok("/patients/p-1")
        );
        assert_eq!(target("/").as_deref(), Ok("/"));
    }

    #[test]
    fn encodings_a_backend_could_fold_are_refused() {
        for (t, want) in [
            ("/patients/p%0a1", PathError::ForbiddenEncoding),
            ("/patients/p%0D1", PathError::ForbiddenEncoding),
            ("/patients/p%091", PathError::ForbiddenEncoding),
            ("/patients/p%7f", PathError::ForbiddenEncoding),
            ("/patients/%C0%AE%C0%AE", PathError::BadEncoding),
            ("/patients/%ff", PathError::BadEncoding),
            ("/patients/%EF%BC%8F", PathError::ForbiddenEncoding),
            ("/patients/%EF%BC%8E%EF%BC%8E", PathError::ForbiddenEncoding),
            ("/patients/%E2%80%A5", PathError::ForbiddenEncoding),
            ("/patients/p-1.", PathError::AmbiguousSegment),
            ("/patients/p-1%20", PathError::AmbiguousSegment),
            ("/patients/%20p-1", PathError::AmbiguousSegment),
        ] {
            assert_eq!(target(t), Err(want), "{t}");
        }
        for ok in [
            "/patients/%C3%A9",
            "/patients/a%20b",
            "/patients/.well",
            "/p%61tients",
        ] {
            assert!(target(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn literals_match_percent_decoded_segments() {
        let t = clinic();
        let m = t
            .find(&http::Method::GET, "/p%61tients/p%2D1/not%65s")
            .expect("match");
        assert_eq!((m.action, m.resource_id.as_str()), ("ReadNotes", "p-1"));
        assert!(t.find(&http::Method::GET, "/p%41tients/p-1").is_none());
    }

    #[test]
    fn bad_routes_are_refused() {
        for (yaml, want) in [
            (
                r#"[{ method: get, path: "/a", action: A, resource: { type: T, id: x } }]"#,
                "upper-case",
            ),
            (
                r#"[{ method: GET, path: "a", action: A, resource: { type: T, id: x } }]"#,
                "must start with",
            ),
            (
                r#"[{ method: GET, path: "/a/{id}", action: A, resource: { type: T, id: "{pid}" } }]"#,
                "not a parameter",
            ),
            (
                r#"[{ method: GET, path: "/a/x{id}", action: A, resource: { type: T, id: x } }]"#,
                "whole",
            ),
            (
                r#"[{ method: GET, path: "/a", action: A, resource: { type: "T::U", id: x } }]"#,
                "type name",
            ),
        ] {
            let raw: Vec<RawRoute> = serde_yaml::from_str(yaml).expect("yaml");
            let errs = RouteTable::compile(raw).expect_err("must fail");
            assert!(
                errs[0].message.contains(want),
                "{yaml}: {}",
                errs[0].message
            );
        }
    }
}
