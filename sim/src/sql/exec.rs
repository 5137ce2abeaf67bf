//! What each known statement does to a database's catalogue, as the engine would: the
//! guards written in the batch (`IF NOT EXISTS ...`), then the DDL with the engine's rights
//! checks and its real error numbers and messages. Each statement is all-or-nothing, as the
//! batches' transactions and `XACT_ABORT` make it on the server.

use uuid::Uuid;

use super::catalogue::{Database, Permission, PrincipalType};
use super::statements::{Creation, Dialect, PERMISSIONS, Shape};
use super::tokens::{Cell, Column};
use super::wire::Value;

/// A server error: number, state, class (severity) and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlError {
    pub number: u32,
    pub state: u8,
    pub class: u8,
    pub message: String,
}

impl SqlError {
    /// A statement-level error (severity 16), state 1.
    pub fn new(number: u32, message: impl Into<String>) -> Self {
        Self {
            number,
            state: 1,
            class: 16,
            message: message.into(),
        }
    }

    /// The engine's error for `number` with a plausible message, for scripted faults.
    pub fn scripted(number: u32) -> Self {
        let message = match number {
            18456 => "Login failed for user '<token-identified principal>'.",
            4060 => "Cannot open database \"appdb\" requested by the login. The login failed.",
            33130 => "Principal 'app' could not be found or this principal type is not supported.",
            33131 => {
                "Principal 'app' has a duplicate display name. Make the display name unique in Azure Active Directory and execute this statement again."
            }
            33134 => {
                "Principal 'app' could not be resolved. Error message: 'Server identity is not configured. Please follow the steps in \"Assign an Azure AD identity to your server and add Directory Reader permission to your identity\" (https://aka.ms/sqlaadsetup)'"
            }
            37353 => {
                "Server identity does not have the Microsoft Entra Directory Readers permission."
            }
            37545 => "'' is not a valid object id for '' or you do not have permission.",
            33159 => {
                "Principal 'app' could not be created. Only connections established with Active Directory accounts can create other Active Directory users."
            }
            15023 => "User, group, or role 'app' already exists in the current database.",
            15151 => {
                "Cannot alter the role 'db_datareader', because it does not exist or you do not have permission."
            }
            15138 => "The database principal owns a schema in the database, and cannot be dropped.",
            15247 => "User does not have permission to perform this action.",
            40615 => {
                "Cannot open server 'stand-in' requested by the login. Client with IP address '127.0.0.1' is not allowed to access the server."
            }
            1205 => {
                "Transaction (Process ID 51) was deadlocked on lock resources with another process and has been chosen as the deadlock victim. Rerun the transaction."
            }
            40613 => {
                "Database 'appdb' on server 'stand-in' is not currently available. Please retry the connection later."
            }
            229 => {
                "The SELECT permission was denied on the object 'database_principals', database 'mssqlsystemresource', schema 'sys'."
            }
            297 => "The user does not have permission to perform this action.",
            _ => "Scripted error (dbgrant SQL stand-in).",
        };
        Self::new(number, message)
    }
}

/// One result set: its columns and rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<(&'static str, Column)>,
    pub rows: Vec<Vec<Cell>>,
}

/// Who runs the statement: a principal of the database (dbo for the server's Entra admin),
/// and the login name `SUSER_SNAME()` gives.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: i32,
    pub login: String,
}

fn text(params: &[Value], i: usize) -> Option<String> {
    match params.get(i) {
        Some(Value::Text(s)) => Some(s.clone()),
        _ => None,
    }
}

fn guid(params: &[Value], i: usize) -> Option<Uuid> {
    match params.get(i) {
        Some(Value::Guid(g)) => Some(*g),
        _ => None,
    }
}

/// `QUOTENAME` returns NULL past 128 UTF-16 units (and for NULL).
fn quotable(name: &Option<String>) -> bool {
    name.as_ref()
        .is_some_and(|n| n.encode_utf16().count() <= 128)
}

const NAME_GUARD: &str =
    "dbgrant: a name is not a valid T-SQL identifier (more than 128 characters)";

fn int(b: bool) -> Cell {
    Cell::Int(i32::from(b))
}

fn opt_text(s: Option<&String>) -> Cell {
    s.map_or(Cell::Null, |s| Cell::Text(s.clone()))
}

/// Run `shape` with `params` as `caller` in `db`.
///
/// # Errors
/// The engine's error, with nothing changed.
pub fn execute(
    db: &mut Database,
    caller: &Caller,
    shape: Shape,
    params: &[Value],
) -> Result<Vec<ResultSet>, SqlError> {
    let who = caller.principal;
    let p1 = text(params, 0);
    match shape {
        Shape::Observe => {
            let cid = guid(params, 1);
            let sid_matches =
                |p: &super::catalogue::Principal| cid.as_ref().is_some_and(|c| p.has_sid_of(c));
            let mut principals = ResultSet {
                columns: vec![
                    ("name", Column::Text),
                    ("entra_id", Column::Guid),
                    ("record", Column::Text),
                    ("by_sid", Column::Int),
                ],
                rows: Vec::new(),
            };
            for p in db.principals.iter().filter(|p| db.visible(who, p)) {
                let by_name = p1.as_ref().is_some_and(|n| p.name.eq_ignore_ascii_case(n));
                if sid_matches(p) || by_name {
                    principals.rows.push(vec![
                        Cell::Text(p.name.clone()),
                        p.entra_id().map_or(Cell::Null, Cell::Guid),
                        opt_text(p.record.as_ref()),
                        int(sid_matches(p)),
                    ]);
                }
            }
            let holders: Vec<i32> = db
                .principals
                .iter()
                .filter(|p| matches!(p.kind, PrincipalType::EntraUser | PrincipalType::EntraGroup))
                .filter(|p| sid_matches(p) && db.visible(who, p))
                .map(|p| p.id)
                .collect();
            let roles = ResultSet {
                columns: vec![("name", Column::Text)],
                rows: holders
                    .iter()
                    .flat_map(|h| db.roles_of(*h))
                    .map(|r| vec![Cell::Text(r)])
                    .collect(),
            };
            let permissions = ResultSet {
                columns: vec![
                    ("name", Column::Text),
                    ("permission_name", Column::Text),
                    ("state", Column::Text),
                ],
                rows: db
                    .permissions
                    .iter()
                    .filter(|p| holders.contains(&p.grantee))
                    .map(|p| {
                        vec![
                            Cell::Text(p.schema.clone()),
                            Cell::Text(p.permission.clone()),
                            Cell::Text(p.state.to_string()),
                        ]
                    })
                    .collect(),
            };
            Ok(vec![principals, roles, permissions])
        }
        Shape::RecordedUsers => Ok(vec![ResultSet {
            columns: vec![
                ("name", Column::Text),
                ("entra_id", Column::Guid),
                ("record", Column::Text),
            ],
            rows: db
                .principals
                .iter()
                .filter(|p| matches!(p.kind, PrincipalType::EntraUser | PrincipalType::EntraGroup))
                .filter(|p| p.record.is_some() && db.visible(who, p))
                .map(|p| {
                    vec![
                        Cell::Text(p.name.clone()),
                        p.entra_id().map_or(Cell::Null, Cell::Guid),
                        opt_text(p.record.as_ref()),
                    ]
                })
                .collect(),
        }]),
        Shape::Preflight => Ok(vec![ResultSet {
            columns: vec![
                ("is_owner", Column::Int),
                ("alter_any_user", Column::Int),
                ("login_name", Column::Text),
                ("database_name", Column::Text),
            ],
            rows: vec![vec![
                int(db.is_owner(who)),
                int(db.may_alter_users(who)),
                Cell::Text(caller.login.clone()),
                Cell::Text(db.name.clone()),
            ]],
        }]),
        Shape::PreflightNames => {
            let role = p1.filter(|r| !r.is_empty());
            let schema = text(params, 1).filter(|s| !s.is_empty());
            let role_exists = role.as_ref().is_none_or(|r| db.principal(r).is_some());
            let role_alter = role.as_ref().is_none_or(|r| {
                db.principal(r)
                    .is_some_and(|p| p.kind == PrincipalType::Role)
                    && db.may_alter_role(who, r)
            });
            let schema_exists = schema.as_ref().is_none_or(|s| db.schema(s).is_some());
            let schema_control = schema
                .as_ref()
                .is_none_or(|s| db.schema(s).is_some() && db.controls_schema(who, s));
            Ok(vec![ResultSet {
                columns: vec![
                    ("role_exists", Column::Int),
                    ("role_alter", Column::Int),
                    ("schema_exists", Column::Int),
                    ("schema_control", Column::Int),
                ],
                rows: vec![vec![
                    int(role_exists),
                    int(role_alter),
                    int(schema_exists),
                    int(schema_control),
                ]],
            }])
        }
        Shape::WorkloadMembership => {
            let role = p1.as_deref().and_then(|r| db.principal(r));
            let member =
                role.is_some_and(|r| r.kind == PrincipalType::Role && db.is_member(who, r.id));
            Ok(vec![ResultSet {
                columns: vec![("is_member", Column::Int)],
                rows: vec![vec![int(member)]],
            }])
        }
        Shape::CreateUser(creation) => {
            create_user(db, who, creation, &p1, guid(params, 1), text(params, 2))?;
            Ok(Vec::new())
        }
        Shape::WriteRecord => {
            let record = text(params, 1).unwrap_or_default();
            if record.chars().count() > 3750 {
                return Err(SqlError::new(50003, "dbgrant: record too long"));
            }
            let name = p1.unwrap_or_default();
            let Some(id) = db.principal(&name).map(|p| p.id) else {
                return Err(SqlError::new(
                    15135,
                    format!(
                        "Object is invalid. Extended properties are not permitted on '{name}', or the object does not exist."
                    ),
                ));
            };
            if !db.may_alter_users(who) {
                return Err(SqlError::new(
                    15247,
                    "User does not have permission to perform this action.",
                ));
            }
            set_record(db, id, Some(record));
            Ok(Vec::new())
        }
        Shape::ForgetUser => {
            let name = p1.unwrap_or_default();
            if let Some(id) = db
                .principal(&name)
                .filter(|p| p.record.is_some())
                .map(|p| p.id)
            {
                if !db.may_alter_users(who) {
                    return Err(SqlError::new(
                        15247,
                        "User does not have permission to perform this action.",
                    ));
                }
                set_record(db, id, None);
            }
            Ok(Vec::new())
        }
        Shape::Member { add, dialect } => {
            member(db, who, add, dialect, &p1, &text(params, 1))?;
            Ok(Vec::new())
        }
        Shape::SchemaPermission { grant, permission } => {
            schema_permission(
                db,
                who,
                grant,
                PERMISSIONS[permission],
                &p1,
                &text(params, 1),
            )?;
            Ok(Vec::new())
        }
        Shape::DropUser => {
            if !quotable(&p1) {
                return Err(SqlError::new(50001, NAME_GUARD));
            }
            let name = p1.unwrap_or_default();
            let cid = guid(params, 1);
            let Some(id) = db
                .principals
                .iter()
                .find(|p| {
                    p.name.eq_ignore_ascii_case(&name) && cid.is_some_and(|c| p.has_sid_of(&c))
                })
                .map(|p| p.id)
            else {
                return Ok(Vec::new());
            };
            if !db.may_alter_users(who) {
                return Err(SqlError::new(
                    15151,
                    format!(
                        "Cannot drop the user '{name}', because it does not exist or you do not have permission."
                    ),
                ));
            }
            if db.schemas.iter().any(|s| s.owner == id) {
                return Err(SqlError::new(
                    15138,
                    "The database principal owns a schema in the database, and cannot be dropped.",
                ));
            }
            db.drop_principal(id);
            Ok(Vec::new())
        }
    }
}

fn set_record(db: &mut Database, id: i32, record: Option<String>) {
    if let Some(p) = db.principals.iter_mut().find(|p| p.id == id) {
        p.record = record;
    }
}

fn create_user(
    db: &mut Database,
    who: i32,
    creation: Creation,
    name: &Option<String>,
    client_id: Option<Uuid>,
    record: Option<String>,
) -> Result<(), SqlError> {
    if !quotable(name) {
        return Err(SqlError::new(50001, NAME_GUARD));
    }
    let record = record.unwrap_or_default();
    if record.chars().count() > 3750 {
        return Err(SqlError::new(50003, "dbgrant: record too long"));
    }
    let (Some(name), Some(client_id)) = (name, client_id) else {
        return Err(SqlError::new(
            515,
            "Cannot insert the value NULL into column 'sid'.",
        ));
    };
    if db.by_sid(&client_id).is_some() {
        return Ok(());
    }
    if !db.may_alter_users(who) {
        return Err(SqlError::new(
            15247,
            "User does not have permission to perform this action.",
        ));
    }
    if creation != Creation::Sid {
        // The stand-in has no directory to resolve names or object ids in: it behaves as a
        // server without an identity that may read Microsoft Graph.
        return Err(SqlError::new(
            33134,
            format!(
                "Principal '{name}' could not be resolved. Error message: 'Server identity is not configured. Please follow the steps in \"Assign an Azure AD identity to your server and add Directory Reader permission to your identity\" (https://aka.ms/sqlaadsetup)'"
            ),
        ));
    }
    if db.principal(name).is_some() {
        return Err(SqlError::new(
            15023,
            format!("User, group, or role '{name}' already exists in the current database."),
        ));
    }
    db.add_principal(
        name,
        PrincipalType::EntraUser,
        Some(client_id.to_bytes_le().to_vec()),
        Some(record),
    );
    Ok(())
}

fn member(
    db: &mut Database,
    who: i32,
    add: bool,
    dialect: Dialect,
    role: &Option<String>,
    user: &Option<String>,
) -> Result<(), SqlError> {
    let too_long = |n: &Option<String>| n.as_ref().is_some_and(|n| n.chars().count() > 128);
    let guard_fails = match dialect {
        Dialect::AlterRole => !quotable(role) || !quotable(user),
        Dialect::SpAddRoleMember => too_long(role) || too_long(user),
    };
    if guard_fails {
        return Err(SqlError::new(50001, NAME_GUARD));
    }
    let (role, user) = (
        role.clone().unwrap_or_default(),
        user.clone().unwrap_or_default(),
    );
    let role_row = db
        .principal(&role)
        .filter(|p| p.kind == PrincipalType::Role)
        .map(|p| p.id);
    let user_row = db.principal(&user).map(|p| p.id);
    let present =
        matches!((role_row, user_row), (Some(r), Some(u)) if db.members.contains(&(r, u)));
    if present == add {
        return Ok(());
    }
    let verb = if add { "add" } else { "drop" };
    match dialect {
        Dialect::AlterRole => {
            let (Some(r), true) = (role_row, db.may_alter_role(who, &role)) else {
                return Err(SqlError::new(
                    15151,
                    format!(
                        "Cannot alter the role '{role}', because it does not exist or you do not have permission."
                    ),
                ));
            };
            let Some(u) = user_row else {
                return Err(SqlError::new(
                    15151,
                    format!(
                        "Cannot {verb} the principal '{user}', because it does not exist or you do not have permission."
                    ),
                ));
            };
            change_member(db, add, r, u);
        }
        Dialect::SpAddRoleMember => {
            let Some(r) = role_row else {
                return Err(SqlError::new(
                    15014,
                    format!("The role '{role}' does not exist in the current database."),
                ));
            };
            let Some(u) = user_row else {
                return Err(SqlError::new(
                    15410,
                    format!("User or role '{user}' does not exist in this database."),
                ));
            };
            if !db.may_alter_role(who, &role) {
                return Err(SqlError::new(
                    15247,
                    "User does not have permission to perform this action.",
                ));
            }
            change_member(db, add, r, u);
        }
    }
    Ok(())
}

fn change_member(db: &mut Database, add: bool, role: i32, user: i32) {
    if add {
        db.members.insert((role, user));
    } else {
        db.members.remove(&(role, user));
    }
}

fn schema_permission(
    db: &mut Database,
    who: i32,
    grant: bool,
    permission: &str,
    schema: &Option<String>,
    user: &Option<String>,
) -> Result<(), SqlError> {
    if !quotable(schema) || !quotable(user) {
        return Err(SqlError::new(50001, NAME_GUARD));
    }
    let (schema, user) = (
        schema.clone().unwrap_or_default(),
        user.clone().unwrap_or_default(),
    );
    let grantee = db.principal(&user).map(|p| p.id);
    let row = |db: &Database, states: &[char]| {
        db.permissions.iter().position(|p| {
            Some(p.grantee) == grantee
                && p.schema.eq_ignore_ascii_case(&schema)
                && p.permission == permission
                && states.contains(&p.state)
        })
    };
    let found = row(db, if grant { &['G', 'W', 'D'] } else { &['G'] });
    if found.is_some() == grant {
        return Ok(());
    }
    let Some(s) = db.schema(&schema).map(|s| s.name.clone()) else {
        return Err(SqlError::new(
            15151,
            format!(
                "Cannot find the schema '{schema}', because it does not exist or you do not have permission."
            ),
        ));
    };
    if !db.controls_schema(who, &s) {
        return Err(SqlError::new(
            15151,
            format!(
                "Cannot find the schema '{schema}', because it does not exist or you do not have permission."
            ),
        ));
    }
    let Some(grantee) = grantee else {
        return Err(SqlError::new(
            15151,
            format!(
                "Cannot find the user '{user}', because it does not exist or you do not have permission."
            ),
        ));
    };
    match found {
        Some(at) => {
            db.permissions.remove(at);
        }
        None => db.permissions.push(Permission {
            schema: s,
            grantee,
            permission: permission.to_string(),
            state: 'G',
        }),
    }
    Ok(())
}
