//! The policy set indexed at load time by what each policy's scope can match, so that a request
//! meets only the policies that could apply to it.
//!
//! Cedar evaluates every policy of a set for every request. Here each policy is filed under the
//! actions its action scope admits (action groups resolved through the schema) and, when its
//! principal scope is `in` a role (`principal in NS::Role::"r"`, `principal is T in
//! NS::Role::"r"`), under that role. A request takes the policies filed under its action for
//! the roles its principal is `in` (the token's roles and their ancestors in the static
//! entities), plus the policies of its action that are not role-scoped.
//!
//! Leaving out a policy whose scope is false for the request changes nothing: Cedar checks the
//! scope before the conditions, so such a policy can neither apply nor report an error. The
//! answers are therefore those of the whole set; `tests::indexed_equals_unindexed` checks this
//! on random sets and requests.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use cedar_policy::{
    ActionConstraint, Entities, EntityTypeName, EntityUid, Policy, PolicySet, PrincipalConstraint,
    Schema,
};

/// Slices of a policy set by action and role, built on demand and kept.
pub struct PolicyIndex {
    by_action: HashMap<EntityUid, ActionPolicies>,
    /// Role sets seen so far → the slice for them, per action.
    slices: Mutex<HashMap<SliceKey, Arc<PolicySet>>>,
    /// For an action the index does not know (not in the schema): every policy.
    everything: Arc<PolicySet>,
}

/// An action and the (sorted) roles a principal is `in`.
type SliceKey = (EntityUid, Vec<EntityUid>);

#[derive(Default)]
struct ActionPolicies {
    /// Policies for this action whose principal scope names no role.
    any_principal: Vec<Policy>,
    /// Role-scoped policies for this action, by role.
    by_role: HashMap<EntityUid, Vec<Policy>>,
}

/// At most this many distinct (action, role set) slices are kept; past it, slices are built
/// per request (correct, only slower) rather than growing without bound.
const MAX_SLICES: usize = 4096;

impl PolicyIndex {
    /// Files every policy of `set` under the schema's actions.
    pub fn new(set: &PolicySet, schema: &Schema, role_type: &EntityTypeName) -> PolicyIndex {
        let actions: Vec<EntityUid> = schema.actions().cloned().collect();
        let action_entities = schema
            .action_entities()
            .unwrap_or_else(|_| Entities::empty());
        let mut by_action: HashMap<EntityUid, ActionPolicies> = actions
            .iter()
            .map(|a| (a.clone(), ActionPolicies::default()))
            .collect();
        for policy in set.policies() {
            let role = match policy.principal_constraint() {
                PrincipalConstraint::In(uid) | PrincipalConstraint::IsIn(_, uid)
                    if uid.type_name() == role_type =>
                {
                    Some(uid)
                }
                _ => None,
            };
            let constraint = policy.action_constraint();
            for action in &actions {
                let applies = match &constraint {
                    ActionConstraint::Any => true,
                    ActionConstraint::Eq(a) => a == action,
                    ActionConstraint::In(list) => {
                        list.contains(action)
                            || action_entities
                                .ancestors(action)
                                .is_some_and(|mut up| up.any(|g| list.contains(g)))
                    }
                };
                if !applies {
                    continue;
                }
                let Some(slot) = by_action.get_mut(action) else {
                    continue;
                };
                match &role {
                    Some(r) => slot
                        .by_role
                        .entry(r.clone())
                        .or_default()
                        .push(policy.clone()),
                    None => slot.any_principal.push(policy.clone()),
                }
            }
        }
        PolicyIndex {
            by_action,
            slices: Mutex::new(HashMap::new()),
            everything: Arc::new(set.clone()),
        }
    }

    /// The policies that can apply to `action` for a principal `in` exactly `roles` (sorted,
    /// deduplicated: the token's roles and their ancestors).
    pub fn slice(&self, action: &EntityUid, roles: &[EntityUid]) -> Arc<PolicySet> {
        let Some(slot) = self.by_action.get(action) else {
            return self.everything.clone();
        };
        let key = (action.clone(), roles.to_vec());
        if let Some(hit) = self.slices.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return hit;
        }
        let mut set = PolicySet::new();
        let role_policies = roles.iter().filter_map(|r| slot.by_role.get(r)).flatten();
        for p in slot.any_principal.iter().chain(role_policies) {
            // A policy can sit under two of the roles; the second add is a harmless duplicate.
            let _ = set.add(p.clone());
        }
        let set = Arc::new(set);
        if let Ok(mut m) = self.slices.lock() {
            if m.len() < MAX_SLICES {
                m.insert(key, set.clone());
            }
        }
        set
    }
}

/// The roles a principal is `in`: its own, and their ancestors among the static entities.
pub fn role_closure(roles: &[EntityUid], static_entities: &Entities) -> Vec<EntityUid> {
    let mut out: BTreeSet<EntityUid> = roles.iter().cloned().collect();
    for r in roles {
        if let Some(up) = static_entities.ancestors(r) {
            out.extend(up.cloned());
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::{Authorizer, Context, Entity, Request};
    use std::collections::HashSet;
    use std::str::FromStr;

    const SCHEMA: &str = r#"
namespace NS {
  entity Role in [Role];
  entity User in [Role] { level: Long };
  entity Doc { owner: User, secret: Bool };
  action Read, Write, Delete appliesTo { principal: User, resource: Doc };
  action Admin in [Read];
  action Everything appliesTo { principal: User, resource: Doc };
}
"#;

    /// A tiny deterministic generator (no extra dependency).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }

    fn random_policy(rng: &mut Rng, n: usize) -> String {
        let effect = if rng.next() % 4 == 0 {
            "forbid"
        } else {
            "permit"
        };
        let principal = rng.pick(&[
            "principal",
            "principal in NS::Role::\"r0\"",
            "principal in NS::Role::\"r1\"",
            "principal in NS::Role::\"r2\"",
            "principal in NS::Role::\"boss\"",
            "principal is NS::User in NS::Role::\"r1\"",
            "principal == NS::User::\"u0\"",
            "principal is NS::User",
        ]);
        let action = rng.pick(&[
            "action",
            "action == NS::Action::\"Read\"",
            "action == NS::Action::\"Write\"",
            "action in [NS::Action::\"Read\", NS::Action::\"Delete\"]",
            "action in NS::Action::\"Read\"",
            "action == NS::Action::\"Admin\"",
        ]);
        let when = rng.pick(&[
            "",
            " when { resource.owner == principal }",
            " when { resource.secret }",
            " unless { resource.secret }",
            " when { principal.level > 2 }",
            // Errors for some requests: the resource may lack the attribute.
            " when { resource has owner && resource.owner.level > 1 }",
            " when { context.n > 0 }",
        ]);
        format!("@id(\"p{n}\")\n{effect}({principal}, {action}, resource){when};\n")
    }

    #[test]
    fn indexed_equals_unindexed() {
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA).unwrap();
        let role_type = EntityTypeName::from_str("NS::Role").unwrap();
        let statics = Entities::from_json_str(
            r#"[{"uid":{"type":"NS::Role","id":"r2"},"attrs":{},"parents":[{"type":"NS::Role","id":"boss"}]}]"#,
            None,
        )
        .unwrap();
        let authorizer = Authorizer::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut decisions = HashSet::new();
        for round in 0..40 {
            let text: String = (0..(5 + round * 3))
                .map(|n| random_policy(&mut rng, n))
                .collect();
            let set = PolicySet::from_str(&text).unwrap();
            let index = PolicyIndex::new(&set, &schema, &role_type);
            for _ in 0..30 {
                let roles: Vec<EntityUid> = ["r0", "r1", "r2", "r3"]
                    .iter()
                    .filter(|_| rng.next() % 2 == 0)
                    .map(|r| EntityUid::from_str(&format!("NS::Role::\"{r}\"")).unwrap())
                    .collect();
                let user =
                    EntityUid::from_str(&format!("NS::User::\"u{}\"", rng.next() % 2)).unwrap();
                let action = EntityUid::from_str(&format!(
                    "NS::Action::\"{}\"",
                    rng.pick(&["Read", "Write", "Delete", "Admin", "Everything"])
                ))
                .unwrap();
                let doc = EntityUid::from_str("NS::Doc::\"d\"").unwrap();
                let level = (rng.next() % 5) as i64;
                let user_entity = Entity::new(
                    user.clone(),
                    [(
                        "level".to_owned(),
                        cedar_policy::RestrictedExpression::new_long(level),
                    )]
                    .into(),
                    roles.iter().cloned().collect(),
                )
                .unwrap();
                let mut es = vec![user_entity];
                if rng.next() % 3 != 0 {
                    es.push(
                        Entity::new(
                            doc.clone(),
                            [
                                (
                                    "owner".to_owned(),
                                    cedar_policy::RestrictedExpression::new_entity_uid(
                                        user.clone(),
                                    ),
                                ),
                                (
                                    "secret".to_owned(),
                                    cedar_policy::RestrictedExpression::new_bool(
                                        rng.next() % 2 == 0,
                                    ),
                                ),
                            ]
                            .into(),
                            HashSet::new(),
                        )
                        .unwrap(),
                    );
                }
                es.extend(statics.iter().cloned());
                let entities = Entities::from_entities(es, None).unwrap();
                let ctx = if rng.next() % 2 == 0 {
                    Context::from_json_str(r#"{"n": 1}"#, None).unwrap()
                } else {
                    Context::empty()
                };
                let req = Request::new(user, action.clone(), doc, ctx, None).unwrap();
                let closure = role_closure(&roles, &statics);
                let whole = authorizer.is_authorized(&req, &set, &entities);
                let sliced =
                    authorizer.is_authorized(&req, &index.slice(&action, &closure), &entities);
                let summary = |r: &cedar_policy::Response| {
                    let mut reasons: Vec<String> =
                        r.diagnostics().reason().map(ToString::to_string).collect();
                    reasons.sort();
                    let mut errors: Vec<String> =
                        r.diagnostics().errors().map(ToString::to_string).collect();
                    errors.sort();
                    (r.decision(), reasons, errors)
                };
                assert_eq!(
                    summary(&whole),
                    summary(&sliced),
                    "round {round}\n{text}\n{req:?}"
                );
                decisions.insert(format!("{:?}", whole.decision()));
            }
        }
        // The generator reached both answers.
        assert_eq!(decisions.len(), 2, "{decisions:?}");
    }

    #[test]
    fn a_slice_holds_only_what_can_apply() {
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA).unwrap();
        let role_type = EntityTypeName::from_str("NS::Role").unwrap();
        let mut text = String::new();
        for i in 0..200 {
            let action = ["Read", "Write", "Delete"][i % 3];
            text.push_str(&format!(
                "permit(principal in NS::Role::\"role{i}\", action == NS::Action::\"{action}\", resource);\n"
            ));
        }
        text.push_str("permit(principal, action, resource) when { resource.secret };\n");
        let set = PolicySet::from_str(&text).unwrap();
        let index = PolicyIndex::new(&set, &schema, &role_type);
        let read = EntityUid::from_str("NS::Action::\"Read\"").unwrap();
        let role3 = EntityUid::from_str("NS::Role::\"role3\"").unwrap();
        let role4 = EntityUid::from_str("NS::Role::\"role4\"").unwrap();
        // role3's Read policy and the unscoped one.
        assert_eq!(
            index
                .slice(&read, std::slice::from_ref(&role3))
                .policies()
                .count(),
            2
        );
        // role4's policy is a Write: only the unscoped one.
        assert_eq!(index.slice(&read, &[role4]).policies().count(), 1);
        // `Admin in [Read]`: Read's policies apply to it too.
        let admin = EntityUid::from_str("NS::Action::\"Admin\"").unwrap();
        assert_eq!(index.slice(&admin, &[role3]).policies().count(), 1);
    }
}
