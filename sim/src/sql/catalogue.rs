//! A database's catalogue as the stand-in keeps it: principals (with their SID and dbgrant's
//! extended property), role memberships, schema permission rows (GRANT/DENY) and schemas,
//! plus the rights questions the engine answers from them (db_owner membership, followed
//! through nested roles). A fresh database has what SQL Server puts in one: dbo, guest,
//! public, the fixed database roles and the built-in schemas.

use std::collections::BTreeSet;

use uuid::Uuid;

/// `sys.database_principals.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalType {
    /// `E`: an Entra user, service principal or managed identity.
    EntraUser,
    /// `X`: an Entra group (older app users show as this too).
    EntraGroup,
    /// `R`: a database role.
    Role,
    /// `S`: a SQL user (dbo, guest).
    SqlUser,
}

impl PrincipalType {
    /// The catalogue's one-letter code.
    pub fn code(self) -> char {
        match self {
            Self::EntraUser => 'E',
            Self::EntraGroup => 'X',
            Self::Role => 'R',
            Self::SqlUser => 'S',
        }
    }

    fn is_entra(self) -> bool {
        matches!(self, Self::EntraUser | Self::EntraGroup)
    }
}

/// A row of `sys.database_principals`, with dbgrant's extended property on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub id: i32,
    pub name: String,
    pub kind: PrincipalType,
    pub sid: Option<Vec<u8>>,
    /// The extended property `dbgrant` (class 4), when set.
    pub record: Option<String>,
}

impl Principal {
    /// The first 16 bytes of the SID read as a GUID, as `CONVERT(uniqueidentifier, ...)`.
    pub fn entra_id(&self) -> Option<Uuid> {
        let sid = self.sid.as_ref()?;
        let bytes: [u8; 16] = sid.get(..16)?.try_into().ok()?;
        Some(Uuid::from_bytes_le(bytes))
    }

    /// Whether the SID's first 16 bytes are `id`'s (in `uniqueidentifier` byte order).
    pub fn has_sid_of(&self, id: &Uuid) -> bool {
        self.sid
            .as_ref()
            .is_some_and(|sid| sid.get(..16) == Some(&id.to_bytes_le()[..]))
    }
}

/// A row of `sys.database_permissions` on a schema (class 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub schema: String,
    pub grantee: i32,
    pub permission: String,
    /// `G`, `W` or `D`.
    pub state: char,
}

/// A row of `sys.schemas`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    pub name: String,
    pub owner: i32,
}

/// One database.
#[derive(Clone, Debug)]
pub struct Database {
    pub name: String,
    pub principals: Vec<Principal>,
    /// (role id, member id).
    pub members: BTreeSet<(i32, i32)>,
    pub permissions: Vec<Permission>,
    pub schemas: Vec<Schema>,
    next_id: i32,
}

/// The fixed database roles, with their principal ids.
const FIXED_ROLES: [(&str, i32); 9] = [
    ("db_owner", 16384),
    ("db_accessadmin", 16385),
    ("db_securityadmin", 16386),
    ("db_ddladmin", 16387),
    ("db_backupoperator", 16389),
    ("db_datareader", 16390),
    ("db_datawriter", 16391),
    ("db_denydatareader", 16392),
    ("db_denydatawriter", 16393),
];

/// dbo's principal id.
pub const DBO: i32 = 1;

impl Database {
    /// An empty database as SQL Server creates it.
    pub fn new(name: &str) -> Self {
        let principal = |id, name: &str, kind, sid: Option<Vec<u8>>| Principal {
            id,
            name: name.to_string(),
            kind,
            sid,
            record: None,
        };
        let mut principals = vec![
            principal(0, "public", PrincipalType::Role, None),
            principal(DBO, "dbo", PrincipalType::SqlUser, Some(vec![1])),
            principal(2, "guest", PrincipalType::SqlUser, Some(vec![0])),
        ];
        for (role, id) in FIXED_ROLES {
            principals.push(principal(id, role, PrincipalType::Role, None));
        }
        let schema = |name: &str, owner| Schema {
            name: name.to_string(),
            owner,
        };
        Self {
            name: name.to_string(),
            principals,
            members: [(16384, DBO)].into(),
            permissions: Vec::new(),
            schemas: vec![
                schema("dbo", DBO),
                schema("guest", 2),
                schema("INFORMATION_SCHEMA", 3),
                schema("sys", 4),
            ],
            next_id: 5,
        }
    }

    /// The principal named `name` (names compare case-insensitively, as under a CI collation).
    pub fn principal(&self, name: &str) -> Option<&Principal> {
        self.principals
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// The principal with id `id`.
    pub fn by_id(&self, id: i32) -> Option<&Principal> {
        self.principals.iter().find(|p| p.id == id)
    }

    /// The Entra principal whose SID is `id`'s.
    pub fn by_sid(&self, id: &Uuid) -> Option<&Principal> {
        self.principals
            .iter()
            .find(|p| p.kind.is_entra() && p.has_sid_of(id))
    }

    /// The schema named `name`.
    pub fn schema(&self, name: &str) -> Option<&Schema> {
        self.schemas
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// Add a principal; returns its id.
    pub fn add_principal(
        &mut self,
        name: &str,
        kind: PrincipalType,
        sid: Option<Vec<u8>>,
        record: Option<String>,
    ) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        self.principals.push(Principal {
            id,
            name: name.to_string(),
            kind,
            sid,
            record,
        });
        id
    }

    /// Add a schema owned by `owner`.
    pub fn add_schema(&mut self, name: &str, owner: i32) {
        self.schemas.push(Schema {
            name: name.to_string(),
            owner,
        });
    }

    /// Remove a principal and everything hanging off it (memberships, permission rows, its
    /// extended property, which lives on it).
    pub fn drop_principal(&mut self, id: i32) {
        self.principals.retain(|p| p.id != id);
        self.members.retain(|(r, m)| *r != id && *m != id);
        self.permissions.retain(|p| p.grantee != id);
    }

    /// Whether `member` is in `role`, directly or through roles that are members of it.
    pub fn is_member(&self, member: i32, role: i32) -> bool {
        let mut seen = BTreeSet::new();
        let mut frontier = vec![member];
        while let Some(next) = frontier.pop() {
            for (r, m) in &self.members {
                if *m == next && seen.insert(*r) {
                    if *r == role {
                        return true;
                    }
                    frontier.push(*r);
                }
            }
        }
        false
    }

    /// The roles `member` is directly in.
    pub fn roles_of(&self, member: i32) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, m)| *m == member)
            .filter_map(|(r, _)| self.by_id(*r).map(|p| p.name.clone()))
            .collect()
    }

    fn fixed(&self, name: &str) -> Option<i32> {
        FIXED_ROLES
            .iter()
            .find(|(r, _)| r.eq_ignore_ascii_case(name))
            .map(|(_, id)| *id)
    }

    /// Whether `who` is dbo or in db_owner.
    pub fn is_owner(&self, who: i32) -> bool {
        who == DBO || self.is_member(who, 16384)
    }

    /// ALTER ANY USER: db_owner and db_accessadmin have it.
    pub fn may_alter_users(&self, who: i32) -> bool {
        self.is_owner(who) || self.is_member(who, 16385)
    }

    /// ALTER on a role: db_owner; db_securityadmin for roles other than the fixed ones
    /// (changing a fixed role's members needs db_owner).
    pub fn may_alter_role(&self, who: i32, role: &str) -> bool {
        self.is_owner(who) || (self.fixed(role).is_none() && self.is_member(who, 16386))
    }

    /// CONTROL on a schema: db_owner, or the schema's owner.
    pub fn controls_schema(&self, who: i32, schema: &str) -> bool {
        self.is_owner(who) || self.schema(schema).is_some_and(|s| s.owner == who)
    }

    /// Principals `who` may see in the catalogue views: all for db_owner, otherwise
    /// itself and the roles (metadata visibility).
    pub fn visible(&self, who: i32, principal: &Principal) -> bool {
        self.is_owner(who) || principal.id == who || principal.kind == PrincipalType::Role
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_follows_nested_roles_and_drops_take_everything_along() {
        let mut db = Database::new("appdb");
        let app_role = db.add_principal("app_role", PrincipalType::Role, None, None);
        let cid = Uuid::new_v4();
        let user = db.add_principal(
            "u",
            PrincipalType::EntraUser,
            Some(cid.to_bytes_le().to_vec()),
            Some("{}".into()),
        );
        db.members.insert((16390, app_role));
        db.members.insert((app_role, user));
        assert!(db.is_member(user, 16390), "through app_role");
        assert!(!db.is_member(user, 16391));
        assert_eq!(db.by_sid(&cid).map(|p| p.id), Some(user));
        assert_eq!(db.by_sid(&cid).and_then(Principal::entra_id), Some(cid));
        db.permissions.push(Permission {
            schema: "dbo".into(),
            grantee: user,
            permission: "SELECT".into(),
            state: 'G',
        });
        db.drop_principal(user);
        assert!(db.by_sid(&cid).is_none());
        assert!(db.permissions.is_empty());
        assert!(!db.members.iter().any(|(_, m)| *m == user));
    }

    #[test]
    fn fixed_roles_need_db_owner_and_dbo_is_owner() {
        let mut db = Database::new("appdb");
        let admin = db.add_principal("secadmin", PrincipalType::EntraUser, None, None);
        db.members.insert((16386, admin));
        db.add_principal("custom", PrincipalType::Role, None, None);
        assert!(db.may_alter_role(admin, "custom"));
        assert!(!db.may_alter_role(admin, "db_datareader"));
        assert!(db.is_owner(DBO));
        assert!(db.may_alter_role(DBO, "db_datareader"));
    }
}
