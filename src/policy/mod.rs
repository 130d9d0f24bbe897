//! Authorization: the [`PolicyEngine`] over an immutable [`PolicySnapshot`].
//!
//! A request loads the current snapshot once, builds the Cedar principal, action, resource and
//! context as the SPEC's entity model says, validates them against the schema and evaluates.
//! Fail closed: anything that does not fit the schema, an unavailable resource, or any error
//! in Cedar's evaluation diagnostics is a deny (Cedar itself skips an erroring `forbid`).
//! Cedar types stay inside this folder; the rest of wardgate sees [`Decision`].

pub mod entities;
pub mod index;
pub mod load;
pub mod reload;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request,
    RestrictedExpression, Schema,
};

use crate::auth::{AttrValue, Principal};
use crate::config::PolicyFiles;
use crate::metrics::Metrics;
use crate::routes::{RouteMatch, RouteTable};
pub use entities::EntityResolver;
pub use load::{Finding, LoadError, Severity};

/// A validated policy set with everything a decision needs, never changed once built.
pub struct PolicySnapshot {
    /// The policies, by action and role: a request is evaluated against its slice only.
    pub(crate) index: index::PolicyIndex,
    pub(crate) schema: Schema,
    pub(crate) static_entities: Entities,
    /// `sha256:` over the schema, every policy file (name and text) and the entities file.
    pub version: String,
    pub(crate) action_uids: HashMap<String, EntityUid>,
    pub(crate) type_names: HashMap<String, EntityTypeName>,
    pub(crate) user_type: EntityTypeName,
    pub(crate) role_type: EntityTypeName,
    pub policy_count: usize,
    /// Which load this is (1 at start, +1 per reload); keys the decision cache.
    pub generation: u64,
    /// The candidate set (`policies.candidate_dir`), decided beside this one, never enforced.
    pub candidate: Option<Candidate>,
}

/// A policy set under trial: evaluated on live traffic with the same request and entities.
pub struct Candidate {
    pub(crate) index: index::PolicyIndex,
    pub version: String,
}

/// What the request looked like, for the context record.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub client_ip: IpAddr,
    /// The `X-Break-Glass` reason, when one was given.
    pub break_glass_reason: Option<&'a str>,
}

/// Why a decision denied; the text is the audit `reason` and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No permit applied, or a forbid did.
    Policy,
    /// Cedar reported an evaluation error.
    EvaluationError,
    /// The principal, resource or context does not fit the schema.
    InvalidRequest,
    /// The resource's entities could not be fetched from `entities_url`.
    EntitiesUnavailable,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Policy => "policy",
            DenyReason::EvaluationError => "evaluation_error",
            DenyReason::InvalidRequest => "invalid_request",
            DenyReason::EntitiesUnavailable => "entities_unavailable",
        }
    }
}

/// The outcome of one authorization, in wardgate's own types.
#[derive(Debug, Clone)]
pub struct Decision {
    /// `None` is allow.
    pub deny: Option<DenyReason>,
    pub principal: String,
    pub action: String,
    pub resource: String,
    /// Ids of the determining policies.
    pub policies: Vec<String>,
    /// Evaluation and validation errors, for the audit record and logs (never the client).
    pub errors: Vec<String>,
    /// What the candidate set decided (`Some(true)` allow), when there is one and the request
    /// reached evaluation.
    pub candidate_allowed: Option<bool>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.deny.is_none()
    }
}

/// The Cedar request behind a decision, for people (`wardgate explain`).
#[derive(Debug, Default)]
pub struct Explanation {
    /// Every entity the request was evaluated with, as Cedar JSON.
    pub entities: serde_json::Value,
    /// The context record as built (`client_ip` is an `ipaddr` in Cedar).
    pub context: serde_json::Value,
}

/// Holds the policy set in force and decides requests against it.
pub struct PolicyEngine {
    current: ArcSwap<PolicySnapshot>,
    files: PolicyFiles,
    routes: RouteTable,
    resolver: Option<EntityResolver>,
    authorizer: Authorizer,
    metrics: Metrics,
    /// Decisions already made (see [`DecisionKey`]); `None` when disabled.
    decisions: Option<moka::sync::Cache<DecisionKey, Arc<Decision>>>,
    /// Numbers snapshots, so that a reload makes every cached decision unreachable.
    generations: std::sync::atomic::AtomicU64,
    /// `ip("…")` expressions by client address: cedar-policy builds each one by running its
    /// policy parser on the name `ip` (about 4 µs, a quarter of a decision); a sidecar sees
    /// few client addresses.
    client_ips: moka::sync::Cache<IpAddr, RestrictedExpression>,
}

/// Everything a decision depends on besides the snapshot's own files: the principal (the very
/// verified token, by identity), the request's method, path, client address and break-glass
/// reason (the route, action and resource follow from method and path). Cedar has no clock, so
/// the same key under the same snapshot gets the same answer; resource entities from
/// `entities_url` are the one outside input, so with it an entry lives no longer than the
/// entity cache's TTL.
#[derive(Clone)]
struct DecisionKey {
    generation: u64,
    principal: Arc<Principal>,
    method: http::Method,
    path: String,
    client_ip: IpAddr,
    break_glass_reason: Option<String>,
}

impl PartialEq for DecisionKey {
    fn eq(&self, o: &Self) -> bool {
        self.generation == o.generation
            && Arc::ptr_eq(&self.principal, &o.principal)
            && self.method == o.method
            && self.path == o.path
            && self.client_ip == o.client_ip
            && self.break_glass_reason == o.break_glass_reason
    }
}

impl Eq for DecisionKey {}

impl std::hash::Hash for DecisionKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.generation.hash(h);
        std::ptr::hash(Arc::as_ptr(&self.principal), h);
        self.method.hash(h);
        self.path.hash(h);
        self.client_ip.hash(h);
        self.break_glass_reason.hash(h);
    }
}

impl PolicyEngine {
    /// Loads the set; an invalid set is an error (wardgate does not start on one).
    pub fn new(
        files: PolicyFiles,
        routes: RouteTable,
        resolver: Option<EntityResolver>,
        metrics: Metrics,
    ) -> Result<(Self, Vec<Finding>), LoadError> {
        let loaded = load::load(&files, &routes)?;
        metrics.policy_reload("ok");
        metrics.policy_version(&loaded.snapshot.version);
        Ok((
            Self {
                current: ArcSwap::from_pointee(loaded.snapshot),
                files,
                routes,
                resolver,
                authorizer: Authorizer::new(),
                metrics,
                decisions: None,
                generations: std::sync::atomic::AtomicU64::new(1),
                client_ips: moka::sync::Cache::new(4096),
            },
            loaded.warnings,
        ))
    }

    /// Keeps up to `entries` decisions for `ttl` (see [`DecisionKey`]); 0 keeps none.
    pub fn with_decision_cache(mut self, entries: u64, ttl: std::time::Duration) -> Self {
        self.decisions = (entries > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(entries)
                .time_to_live(ttl)
                .build()
        });
        self
    }

    /// A decision for a verified principal, from the decision cache when the same principal
    /// made the same request under the same snapshot.
    pub async fn decide_cached(
        &self,
        snap: &PolicySnapshot,
        principal: &Arc<Principal>,
        route: &RouteMatch<'_>,
        facts: &RequestFacts<'_>,
    ) -> Arc<Decision> {
        let Some(cache) = &self.decisions else {
            return Arc::new(self.decide(snap, principal, route, facts).await);
        };
        let key = DecisionKey {
            generation: snap.generation,
            principal: principal.clone(),
            method: facts.method.parse().unwrap_or(http::Method::GET),
            path: facts.path.to_owned(),
            client_ip: facts.client_ip,
            break_glass_reason: facts.break_glass_reason.map(str::to_owned),
        };
        if let Some(hit) = cache.get(&key) {
            self.metrics.decision_cache(true);
            return hit;
        }
        self.metrics.decision_cache(false);
        let d = Arc::new(self.decide(snap, principal, route, facts).await);
        // A failed entity fetch may succeed next time: never kept.
        if d.deny != Some(DenyReason::EntitiesUnavailable) {
            cache.insert(key, d.clone());
        }
        d
    }

    /// The client address as a Cedar `ipaddr` expression.
    fn ip_expression(&self, ip: IpAddr) -> RestrictedExpression {
        self.client_ips
            .get_with(ip, || RestrictedExpression::new_ip(ip.to_string()))
    }

    /// The snapshot in force; a request takes it once and uses it throughout.
    pub fn snapshot(&self) -> Arc<PolicySnapshot> {
        self.current.load_full()
    }

    /// Loads the files again and swaps the new set in only if it is valid.
    pub fn reload(&self) -> Result<Arc<PolicySnapshot>, LoadError> {
        match load::load(&self.files, &self.routes) {
            Ok(mut loaded) => {
                loaded.snapshot.generation = self
                    .generations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                let snap = Arc::new(loaded.snapshot);
                self.current.store(snap.clone());
                if let Some(r) = &self.resolver {
                    r.clear();
                }
                self.metrics.policy_reload("ok");
                self.metrics.policy_version(&snap.version);
                Ok(snap)
            }
            Err(e) => {
                self.metrics.policy_reload("error");
                Err(e)
            }
        }
    }

    /// Decides one request.
    pub async fn decide(
        &self,
        snap: &PolicySnapshot,
        principal: &Principal,
        route: &RouteMatch<'_>,
        facts: &RequestFacts<'_>,
    ) -> Decision {
        self.evaluate(snap, principal, route, facts, None).await
    }

    /// Decides one request like [`PolicyEngine::decide`] and also returns the Cedar request
    /// that was built (`wardgate explain`).
    pub async fn explain(
        &self,
        snap: &PolicySnapshot,
        principal: &Principal,
        route: &RouteMatch<'_>,
        facts: &RequestFacts<'_>,
    ) -> (Decision, Explanation) {
        let mut ex = Explanation::default();
        let d = self
            .evaluate(snap, principal, route, facts, Some(&mut ex))
            .await;
        (d, ex)
    }

    async fn evaluate(
        &self,
        snap: &PolicySnapshot,
        principal: &Principal,
        route: &RouteMatch<'_>,
        facts: &RequestFacts<'_>,
        explain: Option<&mut Explanation>,
    ) -> Decision {
        let principal_uid = EntityUid::from_type_name_and_id(
            snap.user_type.clone(),
            EntityId::new(&principal.subject),
        );
        let action_uid = snap.action_uids.get(route.action).cloned();
        let resource_uid = snap.type_names.get(route.resource_type).map(|t| {
            EntityUid::from_type_name_and_id(t.clone(), EntityId::new(&route.resource_id))
        });
        let mut decision = Decision {
            deny: Some(DenyReason::InvalidRequest),
            principal: principal_uid.to_string(),
            action: action_uid
                .as_ref()
                .map_or_else(|| route.action.to_owned(), ToString::to_string),
            resource: resource_uid
                .as_ref()
                .map_or_else(|| route.resource_id.clone(), ToString::to_string),
            policies: Vec::new(),
            errors: Vec::new(),
            candidate_allowed: None,
        };
        let (Some(action_uid), Some(resource_uid)) = (action_uid, resource_uid) else {
            decision
                .errors
                .push("route names an action or type the schema lacks".into());
            return decision;
        };

        let fetched = match &self.resolver {
            Some(r) => match r
                .resolve(snap, route.resource_type, &route.resource_id)
                .await
            {
                Ok(es) => Some(es),
                Err(e) => {
                    decision.deny = Some(DenyReason::EntitiesUnavailable);
                    decision.errors.push(e.to_string());
                    return decision;
                }
            },
            None => None,
        };

        let role_uids: Vec<EntityUid> = principal
            .roles
            .iter()
            .map(|r| EntityUid::from_type_name_and_id(snap.role_type.clone(), EntityId::new(r)))
            .collect();
        let entities = match request_entities(
            snap,
            principal,
            &principal_uid,
            &role_uids,
            &resource_uid,
            fetched.as_ref().map(|v| v.as_slice()),
        ) {
            Ok(e) => e,
            Err(e) => {
                decision.errors.push(e);
                return decision;
            }
        };
        let request = match context(facts, principal.mfa, self.ip_expression(facts.client_ip))
            .and_then(|ctx| {
                // The scope's types (and an enum type's ids) and the context, against the
                // action's `appliesTo`.
                Request::new(
                    principal_uid,
                    action_uid.clone(),
                    resource_uid,
                    ctx,
                    Some(&snap.schema),
                )
                .map_err(|e| format!("request does not fit the schema: {}", load::chain(&e)))
            }) {
            Ok(r) => r,
            Err(e) => {
                decision.errors.push(e);
                return decision;
            }
        };

        if let Some(ex) = explain {
            ex.entities = entities.to_json_value().unwrap_or_default();
            ex.context = serde_json::json!({
                "method": facts.method,
                "path": facts.path,
                "mfa": principal.mfa,
                "break_glass": facts.break_glass_reason.is_some(),
                "break_glass_reason": facts.break_glass_reason,
                "client_ip": facts.client_ip.to_string(),
            });
        }
        // Only the policies whose scope can match this action and these roles (see `index`).
        let roles_in = index::role_closure(&role_uids, &snap.static_entities);
        let slice = snap.index.slice(&action_uid, &roles_in);
        let response = self.authorizer.is_authorized(&request, &slice, &entities);
        let diag = response.diagnostics();
        let mut policies: Vec<String> = diag.reason().map(ToString::to_string).collect();
        policies.sort();
        decision.policies = policies;
        decision.errors = diag.errors().map(ToString::to_string).collect();
        decision.deny = if !decision.errors.is_empty() {
            Some(DenyReason::EvaluationError)
        } else if response.decision() == cedar_policy::Decision::Allow {
            None
        } else {
            Some(DenyReason::Policy)
        };
        if let Some(cand) = &snap.candidate {
            // Same request, same entities; errors deny here too.
            let r = self.authorizer.is_authorized(
                &request,
                &cand.index.slice(&action_uid, &roles_in),
                &entities,
            );
            let allowed = r.decision() == cedar_policy::Decision::Allow
                && r.diagnostics().errors().next().is_none();
            decision.candidate_allowed = Some(allowed);
        }
        decision
    }
}

/// The entities of one request: the principal built from the token, the resource and its
/// ancestors (fetched, else static), and any static role entities with their ancestors.
fn request_entities(
    snap: &PolicySnapshot,
    principal: &Principal,
    principal_uid: &EntityUid,
    role_uids: &[EntityUid],
    resource_uid: &EntityUid,
    fetched: Option<&[Entity]>,
) -> Result<Entities, String> {
    let mut attrs = HashMap::with_capacity(principal.attributes.len() + 2);
    attrs.insert(
        "roles".to_owned(),
        RestrictedExpression::new_set(
            principal
                .roles
                .iter()
                .cloned()
                .map(RestrictedExpression::new_string),
        ),
    );
    attrs.insert(
        "issuer".to_owned(),
        RestrictedExpression::new_string(principal.issuer.clone()),
    );
    for (name, value) in &principal.attributes {
        attrs.insert(name.clone(), restricted(value));
    }

    let mut out: HashMap<EntityUid, Entity> = HashMap::new();
    let add_static = |uid: &EntityUid, out: &mut HashMap<EntityUid, Entity>| {
        if let Some(e) = snap.static_entities.get(uid) {
            out.entry(uid.clone()).or_insert_with(|| e.clone());
            if let Some(ancestors) = snap.static_entities.ancestors(uid) {
                for a in ancestors {
                    if let Some(e) = snap.static_entities.get(a) {
                        out.entry(a.clone()).or_insert_with(|| e.clone());
                    }
                }
            }
        }
    };
    for r in role_uids {
        add_static(r, &mut out);
    }
    match fetched {
        Some(list) => {
            for e in list {
                out.insert(e.uid(), e.clone());
            }
            if !out.contains_key(resource_uid) {
                add_static(resource_uid, &mut out);
            }
        }
        None => add_static(resource_uid, &mut out),
    }
    // The principal comes from the token alone.
    out.remove(principal_uid);
    let parents: HashSet<EntityUid> = role_uids.iter().cloned().collect();
    let principal_entity = Entity::new(principal_uid.clone(), attrs, parents)
        .map_err(|e| format!("principal does not fit the schema: {e}"))?;
    // The principal is the one entity built from request input, so it alone is checked against
    // the schema here (static entities were checked when loaded, fetched ones when fetched;
    // checking them again per request cost most of a decision). The schema also supplies the
    // action entities.
    let fit = |e: cedar_policy::entities_errors::EntitiesError| {
        format!("entities do not fit the schema: {}", load::chain(&e))
    };
    Entities::from_entities(std::iter::once(principal_entity), Some(&snap.schema))
        .map_err(fit)?
        .add_entities(out.into_values(), None)
        .map_err(fit)
}

fn restricted(v: &AttrValue) -> RestrictedExpression {
    match v {
        AttrValue::String(s) => RestrictedExpression::new_string(s.clone()),
        AttrValue::Long(n) => RestrictedExpression::new_long(*n),
        AttrValue::Bool(b) => RestrictedExpression::new_bool(*b),
        AttrValue::Set(items) => RestrictedExpression::new_set(items.iter().map(restricted)),
    }
}

fn context(
    facts: &RequestFacts<'_>,
    mfa: bool,
    client_ip: RestrictedExpression,
) -> Result<Context, String> {
    let mut pairs = vec![
        (
            "method".to_owned(),
            RestrictedExpression::new_string(facts.method.to_owned()),
        ),
        (
            "path".to_owned(),
            RestrictedExpression::new_string(facts.path.to_owned()),
        ),
        ("mfa".to_owned(), RestrictedExpression::new_bool(mfa)),
        (
            "break_glass".to_owned(),
            RestrictedExpression::new_bool(facts.break_glass_reason.is_some()),
        ),
        ("client_ip".to_owned(), client_ip),
    ];
    if let Some(reason) = facts.break_glass_reason {
        pairs.push((
            "break_glass_reason".to_owned(),
            RestrictedExpression::new_string(reason.to_owned()),
        ));
    }
    Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))
}

/// The principal's Cedar uid as text (`NS::User::"sub"`), for records of requests denied
/// before evaluation.
pub fn principal_display(snap: &PolicySnapshot, subject: &str) -> String {
    EntityUid::from_type_name_and_id(snap.user_type.clone(), EntityId::new(subject)).to_string()
}
