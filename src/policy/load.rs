//! Loading a policy set from disk into an immutable [`PolicySnapshot`]: the schema, every
//! `*.cedar` file of `policies.dir`, the optional entities file; strict validation; and
//! diagnostics that name file, line and column with the offending text.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Entities, EntityTypeName, EntityUid, PolicyId, PolicySet, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use sha2::{Digest, Sha256};

use super::{Candidate, PolicySnapshot};
use crate::config::PolicyFiles;
use crate::routes::RouteTable;

/// One finding, already rendered as `file:line:col: severity: message` plus context lines.
#[derive(Debug, Clone)]
pub struct Finding {
    pub file: PathBuf,
    pub severity: Severity,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A policy set that could not be loaded; every finding is listed.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.findings))]
pub struct LoadError {
    pub findings: Vec<Finding>,
}

fn render(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| f.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A loaded set and the warnings found on the way.
pub struct Loaded {
    pub snapshot: PolicySnapshot,
    pub warnings: Vec<Finding>,
}

struct Source {
    path: PathBuf,
    text: String,
}

/// Loads and strictly validates the policy set named by `files`, and its candidate set when
/// `candidate_dir` is set (same schema and entities; an invalid candidate fails the load too).
/// Also checks that every route's action and resource type exist in the schema.
pub fn load(files: &PolicyFiles, routes: &RouteTable) -> Result<Loaded, LoadError> {
    let mut loaded = load_set(files, routes)?;
    if let Some(cfiles) = files.candidate() {
        let cand = load_set(&cfiles, routes)?;
        loaded.warnings.extend(cand.warnings);
        loaded.snapshot.candidate = Some(Candidate {
            index: cand.snapshot.index,
            version: cand.snapshot.version,
        });
    }
    Ok(loaded)
}

fn load_set(files: &PolicyFiles, routes: &RouteTable) -> Result<Loaded, LoadError> {
    let mut findings = Vec::new();
    let mut hasher = Sha256::new();

    let schema_src = match read(&files.schema) {
        Ok(s) => s,
        Err(f) => return Err(LoadError { findings: vec![f] }),
    };
    hasher.update(schema_src.text.as_bytes());
    let schema = match Schema::from_cedarschema_str(&schema_src.text) {
        Ok((schema, warnings)) => {
            for w in warnings {
                findings.push(finding(&schema_src, Severity::Warning, &w));
            }
            schema
        }
        Err(e) => {
            findings.push(finding(&schema_src, Severity::Error, &e));
            return Err(LoadError { findings });
        }
    };

    // Policies, one file at a time so that spans stay relative to their file.
    let paths = match cedar_files(&files.dir) {
        Ok(p) => p,
        Err(e) => {
            return Err(LoadError {
                findings: vec![plain(&files.dir, format!("cannot read folder: {e}"))],
            })
        }
    };
    if paths.is_empty() {
        findings.push(plain(
            &files.dir,
            "no `*.cedar` file in the policy folder".into(),
        ));
    }
    let mut sources = Vec::new();
    let mut policies = PolicySet::new();
    let mut ids: HashMap<PolicyId, usize> = HashMap::new();
    for path in paths {
        let src = match read(&path) {
            Ok(s) => s,
            Err(f) => {
                findings.push(f);
                continue;
            }
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(src.text.as_bytes());
        let index = sources.len();
        match PolicySet::from_str(&src.text) {
            Ok(set) => {
                if set.templates().next().is_some() {
                    findings.push(plain(
                        &path,
                        "templates are not supported; write static policies".into(),
                    ));
                }
                let mut parsed: Vec<_> = set.policies().collect();
                // Cedar numbers a file's policies `policy0`, `policy1`, … in source order.
                parsed.sort_by_key(|p| {
                    p.id()
                        .to_string()
                        .trim_start_matches("policy")
                        .parse::<usize>()
                        .unwrap_or(usize::MAX)
                });
                for (n, p) in parsed.into_iter().enumerate() {
                    let id = match p.annotation("id") {
                        Some(id) if !id.is_empty() => id.to_owned(),
                        _ => format!("{name}:policy{n}"),
                    };
                    let pid = PolicyId::new(&id);
                    if ids.contains_key(&pid) {
                        findings.push(plain(&path, format!("policy id `{id}` is used twice")));
                        continue;
                    }
                    if let Err(e) = policies.add(p.new_id(pid.clone())) {
                        findings.push(plain(&path, e.to_string()));
                        continue;
                    }
                    ids.insert(pid, index);
                }
            }
            Err(e) => findings.push(finding(&src, Severity::Error, &e)),
        }
        sources.push(src);
    }

    // Strict validation against the schema.
    let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
    for e in result.validation_errors() {
        let src = ids.get(e.policy_id()).and_then(|i| sources.get(*i));
        findings.push(match src {
            Some(src) => finding(src, Severity::Error, e),
            None => plain(&files.dir, e.to_string()),
        });
    }
    for w in result.validation_warnings() {
        let src = ids.get(w.policy_id()).and_then(|i| sources.get(*i));
        findings.push(match src {
            Some(src) => finding(src, Severity::Warning, w),
            None => Finding {
                file: files.dir.clone(),
                severity: Severity::Warning,
                text: format!("{}: warning: {w}", files.dir.display()),
            },
        });
    }

    // Static entities.
    let mut static_entities = Entities::empty();
    if let Some(path) = &files.entities {
        match read(path) {
            Ok(src) => {
                hasher.update(src.text.as_bytes());
                match Entities::from_json_str(&src.text, Some(&schema)) {
                    Ok(es) => static_entities = es,
                    Err(e) => findings.push(plain(path, chain(&e))),
                }
            }
            Err(f) => findings.push(f),
        }
    }

    // Routes must name what the schema declares.
    let ns = &files.namespace;
    let types: HashSet<String> = schema.entity_types().map(ToString::to_string).collect();
    let actions: HashSet<String> = schema.actions().map(ToString::to_string).collect();
    let mut action_uids = HashMap::new();
    for route in routes.routes() {
        let action = format!("{ns}::Action::{}", quote(&route.action));
        if !actions.contains(&action) {
            findings.push(plain(
                &files.schema,
                format!(
                    "route `{} {}`: action `{action}` is not declared in the schema",
                    route.method, route.path
                ),
            ));
        }
        let ty = format!("{ns}::{}", route.resource_type);
        if !types.contains(&ty) {
            findings.push(plain(
                &files.schema,
                format!(
                    "route `{} {}`: resource type `{ty}` is not declared in the schema",
                    route.method, route.path
                ),
            ));
        }
        if let Ok(uid) = EntityUid::from_str(&action) {
            action_uids.insert(route.action.clone(), uid);
        }
    }
    let mut type_names = HashMap::new();
    for t in routes
        .routes()
        .iter()
        .map(|r| r.resource_type.as_str())
        .chain(["User", "Role"])
    {
        match EntityTypeName::from_str(&format!("{ns}::{t}")) {
            Ok(n) => {
                type_names.insert(t.to_owned(), n);
            }
            Err(e) => findings.push(plain(&files.schema, format!("type `{ns}::{t}`: {e}"))),
        }
    }
    for t in ["User", "Role"] {
        if !types.contains(&format!("{ns}::{t}")) {
            findings.push(plain(
                &files.schema,
                format!("entity type `{ns}::{t}` is not declared in the schema (wardgate builds principals from it)"),
            ));
        }
    }

    let (errors, warnings): (Vec<_>, Vec<_>) = findings
        .into_iter()
        .partition(|f| f.severity == Severity::Error);
    if !errors.is_empty() {
        return Err(LoadError { findings: errors });
    }
    let version = format!("sha256:{}", hex::encode(hasher.finalize()));
    let (user_type, role_type) = match (type_names.get("User"), type_names.get("Role")) {
        (Some(u), Some(r)) => (u.clone(), r.clone()),
        _ => {
            return Err(LoadError {
                findings: vec![plain(&files.schema, "missing `User` or `Role` type".into())],
            })
        }
    };
    let policy_count = ids.len();
    Ok(Loaded {
        snapshot: PolicySnapshot {
            index: super::index::PolicyIndex::new(&policies, &schema, &role_type),
            schema,
            static_entities,
            version,
            action_uids,
            type_names,
            user_type,
            role_type,
            policy_count,
            generation: 1,
            candidate: None,
        },
        warnings,
    })
}

/// The `*.cedar` files of a folder (not recursive), sorted.
pub(crate) fn cedar_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar") && p.is_file())
        .collect();
    paths.sort();
    Ok(paths)
}

/// A Cedar string literal for an id (`"…"` with escapes).
pub(crate) fn quote(id: &str) -> String {
    format!("{:?}", id)
}

fn read(path: &Path) -> Result<Source, Finding> {
    std::fs::read_to_string(path)
        .map(|text| Source {
            path: path.to_path_buf(),
            text,
        })
        .map_err(|e| plain(path, format!("cannot read file: {e}")))
}

fn plain(path: &Path, message: String) -> Finding {
    Finding {
        file: path.to_path_buf(),
        severity: Severity::Error,
        text: format!("{}: error: {message}", path.display()),
    }
}

/// The error and its causes, joined with `: `.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let _ = write!(s, ": {c}");
        cur = c.source();
    }
    s
}

/// Renders a miette diagnostic against its file: one `file:line:col` line per label (or the
/// file alone when the diagnostic has no position), the source line and a caret.
fn finding(src: &Source, severity: Severity, d: &dyn Diagnostic) -> Finding {
    let sev = match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let message = chain(d);
    let mut text = String::new();
    let labels: Vec<_> = d.labels().map(Iterator::collect).unwrap_or_default();
    // Related diagnostics (a parse error often carries several) are rendered in turn.
    let related: Vec<&dyn Diagnostic> = d.related().map(Iterator::collect).unwrap_or_default();
    match labels.first() {
        Some(label) => {
            let (line, col, line_text) = position(&src.text, label.offset());
            let _ = write!(
                text,
                "{}:{line}:{col}: {sev}: {message}",
                src.path.display()
            );
            let len = label
                .len()
                .max(1)
                .min(line_text.len().saturating_sub(col - 1).max(1));
            let _ = write!(
                text,
                "\n    {line_text}\n    {}{}",
                " ".repeat(col - 1),
                "^".repeat(len)
            );
            if let Some(l) = label.label() {
                let _ = write!(text, " {l}");
            }
        }
        None => {
            let _ = write!(text, "{}: {sev}: {message}", src.path.display());
        }
    }
    if let Some(help) = d.help() {
        let _ = write!(text, "\n    help: {help}");
    }
    for r in related {
        let f = finding(src, severity, r);
        let _ = write!(text, "\n{}", f.text);
    }
    Finding {
        file: src.path.clone(),
        severity,
        text,
    }
}

/// 1-based line and column (in characters) of a byte offset, and that line's text.
fn position(text: &str, offset: usize) -> (usize, usize, &str) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let end = text
        .get(start..)
        .and_then(|t| t.find('\n'))
        .map_or(text.len(), |i| start + i);
    let col = text.get(start..offset).map_or(0, |s| s.chars().count()) + 1;
    (line, col, text.get(start..end).unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let t = "ab\ncdef\n";
        assert_eq!(position(t, 0), (1, 1, "ab"));
        assert_eq!(position(t, 5), (2, 3, "cdef"));
    }
}
