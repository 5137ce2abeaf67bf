//! Planning, a pure function: what a PostgreSQL database holds for one principal (observed)
//! against what a grant asks for (desired) gives the ordered, idempotent steps that make them
//! agree. No IO here: `sql.rs` observes and runs the steps.
//!
//! Rules the plan keeps:
//! - the principal is matched by Entra object id, never by name; a role of the wanted name
//!   mapped to another object id (or not an Entra role at all) is a conflict, never reused;
//! - every grant is recorded on the login role (its comment) before it is made, and only
//!   what the record names is ever revoked;
//! - the login role is dropped only when dbgrant created it and no record entry is left.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::api::TablePrivilege;

/// One privilege dbgrant gives a login role in a database.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Grantable {
    /// Membership in a platform-owned role.
    Member(String),
    /// USAGE on a schema.
    SchemaUsage(String),
    /// A privilege on every table of a schema.
    Tables {
        /// The schema.
        schema: String,
        /// The privilege.
        privilege: TablePrivilege,
    },
}

/// What dbgrant has given one login role, kept as the role's comment so that it survives
/// restarts and is shared by every operator replica: per database, per dbgrant role, the
/// grantables, and whether dbgrant created the login role itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Whether dbgrant created the login role (only then may it drop it).
    pub created: bool,
    /// database → dbgrant role → what was given for it.
    pub grants: BTreeMap<String, BTreeMap<String, BTreeSet<Grantable>>>,
}

/// Prefix marking a role comment as dbgrant's record.
const RECORD_PREFIX: &str = "dbgrant:";

impl Record {
    /// The comment text that stores the record.
    pub fn to_comment(&self) -> String {
        // Serialising plain maps, sets and strings cannot fail.
        format!(
            "{RECORD_PREFIX}{}",
            serde_json::to_string(self).unwrap_or_default()
        )
    }

    /// The record in a role's comment, if it holds one (anything else was not written by us).
    pub fn from_comment(comment: &str) -> Option<Self> {
        serde_json::from_str(comment.strip_prefix(RECORD_PREFIX)?).ok()
    }

    /// What the record names for `role` in `database`.
    pub fn entry(&self, database: &str, role: &str) -> Option<&BTreeSet<Grantable>> {
        self.grants.get(database)?.get(role)
    }

    /// Everything recorded in `database` for roles other than `role`: still wanted there.
    fn others(&self, database: &str, role: &str) -> BTreeSet<Grantable> {
        self.grants
            .get(database)
            .into_iter()
            .flatten()
            .filter(|(r, _)| r.as_str() != role)
            .flat_map(|(_, g)| g.iter().cloned())
            .collect()
    }

    fn with_entry(&self, database: &str, role: &str, grants: BTreeSet<Grantable>) -> Self {
        let mut next = self.clone();
        next.grants
            .entry(database.to_string())
            .or_default()
            .insert(role.to_string(), grants);
        next
    }

    fn without_entry(&self, database: &str, role: &str) -> Self {
        let mut next = self.clone();
        if let Some(roles) = next.grants.get_mut(database) {
            roles.remove(role);
            if roles.is_empty() {
                next.grants.remove(database);
            }
        }
        next
    }

    /// Whether no database entry is left.
    pub fn is_empty(&self) -> bool {
        self.grants.values().all(BTreeMap::is_empty)
    }
}

/// Who owns the role name dbgrant wants, when a role of that name exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameOwner {
    /// An Entra role mapped to this object id.
    Entra(String),
    /// A role that is not Entra-mapped (a password role, a group role).
    NotEntra,
}

/// The principal's state on the server and in the database, read in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The name of the Entra role mapped to the principal's object id, if there is one.
    pub login: Option<String>,
    /// Who holds the name dbgrant would create, if anyone.
    pub name_owner: Option<NameOwner>,
    /// dbgrant's record on the login role, if it has one.
    pub record: Option<Record>,
    /// The grantables the login role has in the database now.
    pub present: BTreeSet<Grantable>,
}

/// What one holding asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Entra object id of the workload identity.
    pub object_id: String,
    /// Name of the login role when dbgrant creates it.
    pub login: String,
    /// The database.
    pub database: String,
    /// dbgrant role name (`reader`, ...).
    pub role: String,
    /// What the role means in the database.
    pub grantables: BTreeSet<Grantable>,
}

/// One idempotent step, in the order it must run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `pgaadauth_create_principal_with_oid(login, object_id, 'service', false, false)` in the
    /// `postgres` database, and the record written in the same transaction.
    CreatePrincipal {
        /// Role name.
        login: String,
        /// Entra object id.
        object_id: String,
        /// The record the new role starts with.
        record: Record,
    },
    /// Replace the record on `login`.
    WriteRecord {
        /// Role name.
        login: String,
        /// The new record.
        record: Record,
    },
    /// Give `grantable` to `login` in the database.
    Grant {
        /// Role name.
        login: String,
        /// What to give.
        grantable: Grantable,
    },
    /// Take `grantable` from `login` in the database.
    Revoke {
        /// Role name.
        login: String,
        /// What to take.
        grantable: Grantable,
    },
    /// `DROP ROLE login` (fails with SQLSTATE 2BP01 while it owns objects or holds
    /// privileges dbgrant did not give).
    DropRole {
        /// Role name.
        login: String,
    },
}

/// Why a plan cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The role name is taken by another principal (or a non-Entra role).
    #[error(
        "a role named {login} already exists {owner} and is not the login of object id {object_id}; dbgrant never takes over a role: drop or rename it"
    )]
    NameTaken {
        /// The name.
        login: String,
        /// The principal the grant is for.
        object_id: String,
        /// Who holds it, for the message.
        owner: String,
    },
}

/// The steps that give `desired`: create (or adopt, by object id) the login role, record what
/// will be given, give what is missing, take what was recorded for this role but is no
/// longer part of it (unless another recorded role in the database still gives it), and
/// record the result.
///
/// # Errors
/// [`Conflict::NameTaken`] when no role is mapped to the object id and the name is taken.
pub fn plan_grant(desired: &Desired, observed: &Observed) -> Result<Vec<Step>, Conflict> {
    let mut steps = Vec::new();
    let (login, record, present) = match &observed.login {
        Some(login) => (
            login.clone(),
            observed.record.clone().unwrap_or_default(),
            observed.present.clone(),
        ),
        None => {
            if let Some(owner) = &observed.name_owner {
                return Err(Conflict::NameTaken {
                    login: desired.login.clone(),
                    object_id: desired.object_id.clone(),
                    owner: match owner {
                        NameOwner::Entra(oid) => format!("for Entra object id {oid}"),
                        NameOwner::NotEntra => "that is not an Entra role".to_string(),
                    },
                });
            }
            let record = Record {
                created: true,
                grants: BTreeMap::new(),
            };
            steps.push(Step::CreatePrincipal {
                login: desired.login.clone(),
                object_id: desired.object_id.clone(),
                record: record.clone(),
            });
            // A fresh role holds nothing yet, whatever was read for another.
            (desired.login.clone(), record, BTreeSet::new())
        }
    };
    let (database, role) = (desired.database.as_str(), desired.role.as_str());
    let before = record.entry(database, role).cloned().unwrap_or_default();
    let others = record.others(database, role);
    // Record the union first: a crash mid-way leaves a record naming everything given.
    let union: BTreeSet<Grantable> = before.union(&desired.grantables).cloned().collect();
    if record.entry(database, role) != Some(&union) {
        steps.push(Step::WriteRecord {
            login: login.clone(),
            record: record.with_entry(database, role, union.clone()),
        });
    }
    for grantable in desired.grantables.difference(&present) {
        steps.push(Step::Grant {
            login: login.clone(),
            grantable: grantable.clone(),
        });
    }
    let dropped: Vec<&Grantable> = before
        .difference(&desired.grantables)
        .filter(|g| !others.contains(g))
        .collect();
    for grantable in &dropped {
        if revocable(grantable, &present) {
            steps.push(Step::Revoke {
                login: login.clone(),
                grantable: (*grantable).clone(),
            });
        }
    }
    if union != desired.grantables {
        steps.push(Step::WriteRecord {
            login,
            record: record.with_entry(database, role, desired.grantables.clone()),
        });
    }
    Ok(steps)
}

/// Whether a recorded grantable needs a REVOKE: memberships are observed exactly, so only a
/// present one; a table privilege reads absent unless every table carries it (a partly
/// granted one included), and REVOKE of a privilege not held is a no-op, so always.
fn revocable(grantable: &Grantable, present: &BTreeSet<Grantable>) -> bool {
    match grantable {
        Grantable::Member(_) => present.contains(grantable),
        _ => true,
    }
}

/// The steps that end what dbgrant recorded for `role` of `object_id` in `database`: take
/// what only that entry gives, remove the entry, and drop the login role when dbgrant created
/// it and nothing else is recorded on it. Nothing dbgrant did not record is touched.
pub fn plan_revoke(database: &str, role: &str, observed: &Observed) -> Vec<Step> {
    let Some(login) = &observed.login else {
        return Vec::new();
    };
    let Some(record) = &observed.record else {
        // Not ours: a role someone else made and dbgrant never recorded a grant on.
        return Vec::new();
    };
    let mut steps = Vec::new();
    let mut left = record.clone();
    if let Some(entry) = record.entry(database, role) {
        let others = record.others(database, role);
        for grantable in entry.difference(&others) {
            if revocable(grantable, &observed.present) {
                steps.push(Step::Revoke {
                    login: login.clone(),
                    grantable: grantable.clone(),
                });
            }
        }
        left = record.without_entry(database, role);
        steps.push(Step::WriteRecord {
            login: login.clone(),
            record: left.clone(),
        });
    }
    // Also when the entry went earlier and only the drop failed (2BP01, say): retried here.
    if left.created && left.is_empty() {
        steps.push(Step::DropRole {
            login: login.clone(),
        });
    }
    steps
}

#[cfg(test)]
mod tests;
