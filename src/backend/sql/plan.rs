//! Planning, a pure function: what a T-SQL database holds for one workload identity
//! (observed) against what a grant asks for (desired) gives the ordered, idempotent steps that
//! make them agree. No IO here: `tsql.rs` renders the observation and the steps.
//!
//! Rules the plan keeps:
//! - the contained user is matched by SID (the client id), never by name: a user of the
//!   wanted name with another SID is a conflict, never adopted or overwritten; a user with the
//!   SID under another name is adopted as it is (no rename);
//! - what dbgrant gives is recorded on the user itself, in an extended property named
//!   `dbgrant` (see [`Record`]), before or with the change, and only what the record names is
//!   ever revoked or dropped;
//! - DENY rows are the admin's: never granted over (a GRANT would replace the DENY) nor
//!   revoked (a REVOKE would lift it); they are reported instead;
//! - the user is dropped only when dbgrant created it and no role entry is left on it, so a
//!   user shared by several grants (several roles) is dropped by the last.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::{DeletionPolicy, SqlPermission};

/// One thing dbgrant gives a contained user in a database.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Grantable {
    /// Membership in a database role (fixed, like `db_datareader`, or the platform's own).
    Member(String),
    /// A permission on a whole schema.
    Schema {
        /// The schema.
        schema: String,
        /// The permission.
        permission: SqlPermission,
    },
}

/// What dbgrant has given one contained user, kept on the user as the extended property
/// `dbgrant` (JSON). Why there: it lives and dies with the user (a `DROP USER` takes it
/// along, so no orphan rows), needs no schema or table of dbgrant's in the app's database,
/// is written with the same rights that create users, is shared by every operator replica
/// and survives restarts; and only principals that may alter the user can change it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Whether dbgrant created the user (only then may it drop it).
    pub created: bool,
    /// The Entra object id of the identity, when known (for reports; the SID is the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// dbgrant role → what was given for it.
    #[serde(default)]
    pub roles: BTreeMap<String, BTreeSet<Grantable>>,
}

/// The extended property's name.
pub const RECORD_PROPERTY: &str = "dbgrant";

/// The longest record an extended property holds (`sql_variant`, 7500 bytes of nvarchar).
pub const MAX_RECORD_CHARS: usize = 3750;

impl Record {
    /// The JSON stored in the extended property.
    pub fn to_json(&self) -> String {
        // Plain maps, sets and strings always serialise.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The record in a property value (anything unparsable was not written by dbgrant).
    pub fn from_json(value: &str) -> Option<Self> {
        serde_json::from_str(value).ok()
    }

    /// Everything recorded for roles other than `role`: still wanted.
    fn others(&self, role: &str) -> BTreeSet<Grantable> {
        self.roles
            .iter()
            .filter(|(r, _)| r.as_str() != role)
            .flat_map(|(_, g)| g.iter().cloned())
            .collect()
    }

    fn with_entry(&self, role: &str, grants: BTreeSet<Grantable>) -> Self {
        let mut next = self.clone();
        next.roles.insert(role.to_string(), grants);
        next
    }

    fn without_entry(&self, role: &str) -> Self {
        let mut next = self.clone();
        next.roles.remove(role);
        next
    }
}

/// A schema permission row's state (`sys.database_permissions.state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermState {
    /// `G`: granted.
    Grant,
    /// `W`: granted with grant option.
    GrantWithGrantOption,
    /// `D`: denied.
    Deny,
}

impl PermState {
    /// From the catalogue's one-letter state (`R`, revoke, never appears as a row).
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "G" => Some(Self::Grant),
            "W" => Some(Self::GrantWithGrantOption),
            "D" => Some(Self::Deny),
            _ => None,
        }
    }

    fn grants(self) -> bool {
        self != Self::Deny
    }
}

/// A database principal found by SID or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Its name.
    pub name: String,
    /// The first 16 bytes of its SID read as a GUID (an Entra principal's client or object
    /// id); `None` when the SID is not 16 bytes or more.
    pub sid: Option<Uuid>,
    /// dbgrant's record on it, if it carries one.
    pub record: Option<Record>,
}

/// The identity's state in the database, read in one batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The principal whose SID is the client id.
    pub by_sid: Option<Principal>,
    /// The principal holding the name dbgrant would create, if any.
    pub by_name: Option<Principal>,
    /// The database roles the SID's principal is directly a member of.
    pub members: BTreeSet<String>,
    /// The schema permission rows of the SID's principal.
    pub permissions: BTreeMap<(String, SqlPermission), PermState>,
}

impl Observed {
    fn holds(&self, grantable: &Grantable) -> bool {
        match grantable {
            Grantable::Member(role) => self.members.contains(role),
            Grantable::Schema { schema, permission } => self
                .permissions
                .get(&(schema.clone(), *permission))
                .is_some_and(|s| s.grants()),
        }
    }

    fn denies(&self, grantable: &Grantable) -> bool {
        match grantable {
            Grantable::Member(_) => false,
            Grantable::Schema { schema, permission } => {
                self.permissions.get(&(schema.clone(), *permission)) == Some(&PermState::Deny)
            }
        }
    }
}

/// How role membership is changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `ALTER ROLE ... ADD/DROP MEMBER` (SQL Database, Managed Instance, Synapse serverless).
    AlterRole,
    /// `sp_addrolemember` / `sp_droprolemember` (Synapse dedicated pools).
    SpAddRoleMember,
}

/// The `CREATE USER` form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Creation {
    /// `WITH SID = <client id>, TYPE = E`.
    Sid,
    /// `FROM EXTERNAL PROVIDER WITH OBJECT_ID = '<object id>'`.
    ObjectId(Uuid),
    /// `FROM EXTERNAL PROVIDER` (by display name).
    ExternalProvider,
}

/// What one holding asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The workload identity's client id: its SID.
    pub client_id: Uuid,
    /// Its Entra object id, for the record.
    pub object_id: Option<String>,
    /// The user's name when dbgrant creates it.
    pub user: String,
    /// dbgrant role name.
    pub role: String,
    /// What the role means in the database.
    pub grantables: BTreeSet<Grantable>,
    /// How the user is created.
    pub creation: Creation,
    /// How memberships change.
    pub dialect: Dialect,
}

/// One idempotent step, in the order it must run. Each carries what its batch needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create the user (if no principal has the SID) and store `record` on it, in one
    /// transaction; for the forms that resolve a name in Entra, the SID is checked to be the
    /// client id before committing.
    CreateUser {
        /// The user's name.
        user: String,
        /// Its SID.
        client_id: Uuid,
        /// The form.
        creation: Creation,
        /// The record it starts with.
        record: Record,
    },
    /// Replace the record on the user.
    WriteRecord {
        /// The user.
        user: String,
        /// The new record.
        record: Record,
    },
    /// Remove the record from a user dbgrant did not create, once nothing is left on it.
    ForgetUser {
        /// The user.
        user: String,
    },
    /// Make the user a member of `role`.
    AddMember {
        /// The database role.
        role: String,
        /// The user.
        user: String,
        /// How.
        dialect: Dialect,
    },
    /// Take the user out of `role`.
    DropMember {
        /// The database role.
        role: String,
        /// The user.
        user: String,
        /// How.
        dialect: Dialect,
    },
    /// `GRANT <permission> ON SCHEMA::<schema> TO <user>` (unless a row exists, DENY too).
    Grant {
        /// The schema.
        schema: String,
        /// The permission.
        permission: SqlPermission,
        /// The user.
        user: String,
    },
    /// `REVOKE <permission> ON SCHEMA::<schema> FROM <user>` (only a GRANT row).
    Revoke {
        /// The schema.
        schema: String,
        /// The permission.
        permission: SqlPermission,
        /// The user.
        user: String,
    },
    /// `DROP USER`, only while the name still has the SID (fails with 15138 while the user
    /// owns a schema).
    DropUser {
        /// The user.
        user: String,
        /// Its SID.
        client_id: Uuid,
    },
}

/// The steps, and what an admin's DENY keeps from being given (reported, not fought).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The steps in order.
    pub steps: Vec<Step>,
    /// Schema permissions the grant asks for that a DENY row refuses.
    pub denied: Vec<(String, SqlPermission)>,
}

/// Why a plan cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The name is taken by a principal with another SID (or none).
    #[error(
        "a database principal named {user} already exists with another SID ({holder}) and is not the user of client id {client_id}; dbgrant never takes over or overwrites a user: drop or rename it"
    )]
    NameTaken {
        /// The name.
        user: String,
        /// The client id the grant is for.
        client_id: Uuid,
        /// The holder's SID, for the message.
        holder: String,
    },
    /// dbgrant's own user of this name now stands for another identity: the managed identity
    /// was deleted and recreated under the same name, so it has a new client id.
    #[error(
        "user {user} was created by dbgrant for client id {old}, but the identity now has client id {client_id} (it was recreated); the old user keeps failing logins: drop it (DROP USER {quoted}) and dbgrant creates the user anew"
    )]
    StaleSid {
        /// The name.
        user: String,
        /// The current client id.
        client_id: Uuid,
        /// The SID the old user has.
        old: Uuid,
        /// The name quoted, for the statement.
        quoted: String,
    },
    /// The record would not fit in the extended property.
    #[error(
        "the record of what dbgrant gave user {user} exceeds {MAX_RECORD_CHARS} characters: declare fewer or shorter roles and schemas"
    )]
    RecordTooLarge {
        /// The user.
        user: String,
    },
}

/// The steps that give `desired`: create (or adopt, by SID) the user, record what will be
/// given, give what is missing, take what was recorded for this role but no longer belongs
/// to it (unless another recorded role still gives it), and record the result.
///
/// # Errors
/// [`Conflict`] when the name is taken by another SID, or dbgrant's own user of the name has
/// a stale SID.
pub fn plan_grant(desired: &Desired, observed: &Observed) -> Result<Plan, Conflict> {
    let mut plan = Plan::default();
    let role = desired.role.as_str();
    let (user, record, fresh) = match &observed.by_sid {
        Some(found) => (
            found.name.clone(),
            found.record.clone().unwrap_or_default(),
            false,
        ),
        None => {
            if let Some(holder) = &observed.by_name {
                return Err(taken(desired, holder));
            }
            let record = Record {
                created: true,
                object_id: desired.object_id.clone(),
                roles: BTreeMap::new(),
            };
            (desired.user.clone(), record, true)
        }
    };
    let empty = Observed::default();
    // A user about to be created holds nothing, whatever was read for another.
    let present = if fresh { &empty } else { observed };
    let before = record.roles.get(role).cloned().unwrap_or_default();
    let others = record.others(role);
    // Record the union first: a crash part-way leaves a record naming everything given.
    let union: BTreeSet<Grantable> = before.union(&desired.grantables).cloned().collect();
    let mut with_union = record.with_entry(role, union.clone());
    if with_union.object_id.is_none() {
        with_union.object_id.clone_from(&desired.object_id);
    }
    check_size(&desired.user, &with_union)?;
    if fresh {
        plan.steps.push(Step::CreateUser {
            user: user.clone(),
            client_id: desired.client_id,
            creation: desired.creation.clone(),
            record: with_union.clone(),
        });
    } else if record.roles.get(role) != Some(&union) || observed.by_sid_record_missing() {
        plan.steps.push(Step::WriteRecord {
            user: user.clone(),
            record: with_union.clone(),
        });
    }
    for grantable in desired.grantables.iter() {
        if present.holds(grantable) {
            continue;
        }
        match grantable {
            Grantable::Member(role) => plan.steps.push(Step::AddMember {
                role: role.clone(),
                user: user.clone(),
                dialect: desired.dialect,
            }),
            Grantable::Schema { schema, permission } => {
                if present.denies(grantable) {
                    plan.denied.push((schema.clone(), *permission));
                } else {
                    plan.steps.push(Step::Grant {
                        schema: schema.clone(),
                        permission: *permission,
                        user: user.clone(),
                    });
                }
            }
        }
    }
    for grantable in before
        .difference(&desired.grantables)
        .filter(|g| !others.contains(g))
    {
        if let Some(step) = take(grantable, &user, desired.dialect, present) {
            plan.steps.push(step);
        }
    }
    if union != desired.grantables {
        plan.steps.push(Step::WriteRecord {
            user,
            record: with_union.with_entry(role, desired.grantables.clone()),
        });
    }
    Ok(plan)
}

impl Observed {
    /// Whether the SID's principal carries no record yet (adopted: the record must be written
    /// before anything is given, so it is known to be dbgrant's).
    fn by_sid_record_missing(&self) -> bool {
        self.by_sid.as_ref().is_some_and(|p| p.record.is_none())
    }
}

fn taken(desired: &Desired, holder: &Principal) -> Conflict {
    match (&holder.record, holder.sid) {
        (Some(record), Some(old)) if record.created => Conflict::StaleSid {
            user: desired.user.clone(),
            client_id: desired.client_id,
            old,
            quoted: super::quote_ident(&desired.user).unwrap_or_default(),
        },
        _ => Conflict::NameTaken {
            user: desired.user.clone(),
            client_id: desired.client_id,
            holder: holder
                .sid
                .map_or_else(|| "not an Entra SID".to_string(), |s| s.to_string()),
        },
    }
}

fn check_size(user: &str, record: &Record) -> Result<(), Conflict> {
    if record.to_json().chars().count() > MAX_RECORD_CHARS {
        return Err(Conflict::RecordTooLarge {
            user: user.to_string(),
        });
    }
    Ok(())
}

/// The step taking one recorded grantable away, when it is there to take: a membership held,
/// a permission granted (never a DENY: revoking would lift it).
fn take(grantable: &Grantable, user: &str, dialect: Dialect, present: &Observed) -> Option<Step> {
    if !present.holds(grantable) {
        return None;
    }
    Some(match grantable {
        Grantable::Member(role) => Step::DropMember {
            role: role.clone(),
            user: user.to_string(),
            dialect,
        },
        Grantable::Schema { schema, permission } => Step::Revoke {
            schema: schema.clone(),
            permission: *permission,
            user: user.to_string(),
        },
    })
}

/// The steps that end what dbgrant recorded for `role` on the identity's user: nothing under
/// `Retain`; otherwise take what only that entry gives, remove the entry, and drop the user
/// when dbgrant created it and no entry is left (a user dbgrant adopted loses only its
/// record). Nothing dbgrant did not record is touched.
pub fn plan_revoke(
    client_id: Uuid,
    role: &str,
    dialect: Dialect,
    policy: DeletionPolicy,
    observed: &Observed,
) -> Plan {
    let mut plan = Plan::default();
    if policy == DeletionPolicy::Retain {
        return plan;
    }
    let Some(found) = &observed.by_sid else {
        return plan;
    };
    let Some(record) = &found.record else {
        // Not dbgrant's: a user someone else made and dbgrant never recorded anything on.
        return plan;
    };
    let user = found.name.clone();
    let mut left = record.clone();
    if let Some(entry) = record.roles.get(role) {
        let others = record.others(role);
        for grantable in entry.difference(&others) {
            if let Some(step) = take(grantable, &user, dialect, observed) {
                plan.steps.push(step);
            }
        }
        left = record.without_entry(role);
    }
    if !left.roles.is_empty() {
        if record.roles.contains_key(role) {
            plan.steps.push(Step::WriteRecord { user, record: left });
        }
    } else if left.created {
        // Also when the entry went earlier and only the drop failed (15138, say).
        plan.steps.push(Step::DropUser { user, client_id });
    } else {
        plan.steps.push(Step::ForgetUser { user });
    }
    plan
}

#[cfg(test)]
mod tests;
