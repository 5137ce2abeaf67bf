//! The T-SQL dbgrant sends, as data: each step is one fixed batch text plus typed parameters
//! (`@P1`, ...), run through `sp_executesql`. Names never enter the text: the server quotes
//! them with `QUOTENAME` into variables, refuses NULL (a name over 128 characters), and only
//! then builds the DDL. Permission keywords come from an enum. Also here: SQL Server error
//! numbers sorted into the reasons users see.

use uuid::Uuid;

use super::plan::{Creation, Dialect, Record, Step};
use crate::api::{Reason, SqlPermission};

/// A typed parameter value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    /// `nvarchar`.
    Text(String),
    /// `uniqueidentifier`.
    Guid(Uuid),
}

/// One batch: constant text, parameters bound as `@P1..`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The batch text (never holds a name or value).
    pub text: String,
    /// Its parameters, in order.
    pub params: Vec<Param>,
}

/// Raised (50001) when `QUOTENAME` returns NULL: the statement would otherwise be NULL and
/// `EXEC (NULL)` silently does nothing.
const QUOTE_GUARD_USER: &str = "IF @u IS NULL THROW 50001, N'dbgrant: a name is not a valid T-SQL identifier (more than 128 characters)', 1;\n";
const QUOTE_GUARD_ROLE_USER: &str = "IF @r IS NULL OR @u IS NULL THROW 50001, N'dbgrant: a name is not a valid T-SQL identifier (more than 128 characters)', 1;\n";

/// The SID predicate: the first 16 bytes (server principals carry a suffix after them).
const SID_IS_P2: &str = "SUBSTRING(sid, 1, 16) = CONVERT(varbinary(16), @P2)";

/// Read everything a plan needs about one identity in one batch, three result sets:
/// principals with the SID or the name (with dbgrant's record), the SID's direct role
/// memberships, its schema permission rows. `@P1` the name, `@P2` the client id.
pub fn observe(user: &str, client_id: Uuid) -> Batch {
    let (p_sid, u_sid) = (sid_is_p2_on("p"), sid_is_p2_on("u"));
    let text = format!(
        "SET NOCOUNT ON;\n\
         SELECT p.name, CONVERT(uniqueidentifier, SUBSTRING(p.sid, 1, 16)) AS entra_id, \
         CONVERT(nvarchar(4000), ep.value) AS record, CASE WHEN {p_sid} THEN 1 ELSE 0 END AS by_sid\n\
         FROM sys.database_principals p\n\
         LEFT JOIN sys.extended_properties ep ON ep.class = 4 AND ep.major_id = p.principal_id AND ep.name = N'dbgrant'\n\
         WHERE {p_sid} OR p.name = @P1;\n\
         SELECT r.name FROM sys.database_role_members m\n\
         JOIN sys.database_principals r ON r.principal_id = m.role_principal_id\n\
         JOIN sys.database_principals u ON u.principal_id = m.member_principal_id\n\
         WHERE {u_sid} AND u.type IN ('E', 'X');\n\
         SELECT s.name, p.permission_name, p.state FROM sys.database_permissions p\n\
         JOIN sys.schemas s ON s.schema_id = p.major_id\n\
         JOIN sys.database_principals u ON u.principal_id = p.grantee_principal_id\n\
         WHERE p.class = 3 AND {u_sid} AND u.type IN ('E', 'X');"
    );
    Batch {
        text,
        params: vec![Param::Text(user.to_string()), Param::Guid(client_id)],
    }
}

/// [`SID_IS_P2`] on the principal aliased `alias`: the alias qualifies the column inside the
/// call (`p.SUBSTRING(sid, ...)` would name a function `SUBSTRING` in a schema `p`).
fn sid_is_p2_on(alias: &str) -> String {
    format!("SUBSTRING({alias}.sid, 1, 16) = CONVERT(varbinary(16), @P2)")
}

/// Every user carrying a dbgrant record: name, SID as GUID, record.
pub fn recorded_users() -> Batch {
    Batch {
        text: "SET NOCOUNT ON;\n\
               SELECT p.name, CONVERT(uniqueidentifier, SUBSTRING(p.sid, 1, 16)) AS entra_id, CONVERT(nvarchar(4000), ep.value) AS record\n\
               FROM sys.database_principals p\n\
               JOIN sys.extended_properties ep ON ep.class = 4 AND ep.major_id = p.principal_id AND ep.name = N'dbgrant'\n\
               WHERE p.type IN ('E', 'X');"
            .into(),
        params: Vec::new(),
    }
}

/// What the operator may do in the connected database: db_owner membership, ALTER ANY USER,
/// and who it is (for the statement an admin must run).
pub fn preflight() -> Batch {
    Batch {
        text: "SET NOCOUNT ON;\n\
               SELECT CONVERT(int, ISNULL(IS_ROLEMEMBER(N'db_owner'), 0)) AS is_owner, \
               CONVERT(int, ISNULL(HAS_PERMS_BY_NAME(DB_NAME(), N'DATABASE', N'ALTER ANY USER'), 0)) AS alter_any_user, \
               CONVERT(nvarchar(256), SUSER_SNAME()) AS login_name, CONVERT(nvarchar(256), DB_NAME()) AS database_name;"
            .into(),
        params: Vec::new(),
    }
}

/// Whether a database role exists and the operator may change its members (`@P1`), or a
/// schema exists and the operator controls it (`@P2`); an empty name is not asked about.
/// Fixed roles need db_owner, which the caller checks separately.
pub fn preflight_names(role: Option<&str>, schema: Option<&str>) -> Batch {
    Batch {
        text: "SET NOCOUNT ON;\n\
               DECLARE @r nvarchar(4000) = NULLIF(@P1, N''), @s nvarchar(4000) = NULLIF(@P2, N'');\n\
               SELECT CONVERT(int, CASE WHEN @r IS NULL THEN 1 WHEN DATABASE_PRINCIPAL_ID(@r) IS NULL THEN 0 ELSE 1 END) AS role_exists, \
               CONVERT(int, CASE WHEN @r IS NULL THEN 1 ELSE ISNULL(HAS_PERMS_BY_NAME(@r, N'ROLE', N'ALTER'), 0) END) AS role_alter, \
               CONVERT(int, CASE WHEN @s IS NULL THEN 1 WHEN SCHEMA_ID(@s) IS NULL THEN 0 ELSE 1 END) AS schema_exists, \
               CONVERT(int, CASE WHEN @s IS NULL THEN 1 ELSE ISNULL(HAS_PERMS_BY_NAME(@s, N'SCHEMA', N'CONTROL'), 0) END) AS schema_control;"
            .into(),
        params: vec![
            Param::Text(role.unwrap_or_default().to_string()),
            Param::Text(schema.unwrap_or_default().to_string()),
        ],
    }
}

/// Signed in with the workload's own token: whether it is a member of role `@P1`
/// (`IS_ROLEMEMBER` follows nested roles, as the workload's access does).
pub fn workload_membership(role: &str) -> Batch {
    Batch {
        text: "SET NOCOUNT ON;\nSELECT CONVERT(int, ISNULL(IS_ROLEMEMBER(@P1), 0)) AS is_member;"
            .into(),
        params: vec![Param::Text(role.to_string())],
    }
}

/// The batch that runs one step.
pub fn render(step: &Step) -> Batch {
    match step {
        Step::CreateUser {
            user,
            client_id,
            creation,
            record,
        } => create_user(user, *client_id, creation, record),
        Step::WriteRecord { user, record } => Batch {
            text: format!(
                "SET NOCOUNT ON; SET XACT_ABORT ON;\n\
                 DECLARE @v sql_variant = CONVERT(nvarchar(3750), @P2);\n\
                 IF LEN(@P2) > 3750 THROW 50003, N'dbgrant: record too long', 1;\n\
                 IF EXISTS (SELECT 1 FROM sys.extended_properties ep JOIN sys.database_principals p ON ep.class = 4 AND ep.major_id = p.principal_id WHERE p.name = @P1 AND ep.name = N'dbgrant')\n\
                 {UPDATE_RECORD}\
                 ELSE\n\
                 {ADD_RECORD}"
            ),
            params: vec![Param::Text(user.clone()), Param::Text(record.to_json())],
        },
        Step::ForgetUser { user } => Batch {
            text: "SET NOCOUNT ON;\n\
                   IF EXISTS (SELECT 1 FROM sys.extended_properties ep JOIN sys.database_principals p ON ep.class = 4 AND ep.major_id = p.principal_id WHERE p.name = @P1 AND ep.name = N'dbgrant')\n\
                   EXEC sp_dropextendedproperty @name = N'dbgrant', @level0type = N'USER', @level0name = @P1;"
                .into(),
            params: vec![Param::Text(user.clone())],
        },
        Step::AddMember {
            role,
            user,
            dialect,
        } => membership(role, user, *dialect, true),
        Step::DropMember {
            role,
            user,
            dialect,
        } => membership(role, user, *dialect, false),
        Step::Grant {
            schema,
            permission,
            user,
        } => schema_permission(schema, *permission, user, true),
        Step::Revoke {
            schema,
            permission,
            user,
        } => schema_permission(schema, *permission, user, false),
        Step::DropUser { user, client_id } => Batch {
            text: format!(
                "SET NOCOUNT ON;\n\
                 DECLARE @u nvarchar(258) = QUOTENAME(@P1);\n\
                 {QUOTE_GUARD_USER}\
                 IF EXISTS (SELECT 1 FROM sys.database_principals WHERE name = @P1 AND {SID_IS_P2})\n\
                 BEGIN DECLARE @ddl nvarchar(max) = N'DROP USER ' + @u + N';'; EXEC (@ddl); END"
            ),
            params: vec![Param::Text(user.clone()), Param::Guid(*client_id)],
        },
    }
}

const ADD_RECORD: &str = "EXEC sp_addextendedproperty @name = N'dbgrant', @value = @v, @level0type = N'USER', @level0name = @P1;";
const UPDATE_RECORD: &str = "EXEC sp_updateextendedproperty @name = N'dbgrant', @value = @v, @level0type = N'USER', @level0name = @P1;\n";

fn create_user(user: &str, client_id: Uuid, creation: &Creation, record: &Record) -> Batch {
    // `@P1` name, `@P2` client id (the SID), `@P3` the record, `@P4` the object id (OBJECT_ID
    // form). The GUIDs are typed parameters, rendered into the DDL by CONVERT on the server.
    let (ddl, check) = match creation {
        Creation::Sid => (
            "N' WITH SID = ' + CONVERT(nvarchar(34), CONVERT(varbinary(16), @P2), 1) + N', TYPE = E;'",
            "",
        ),
        Creation::ObjectId(_) => (
            "N' FROM EXTERNAL PROVIDER WITH OBJECT_ID = ''' + CONVERT(nvarchar(36), @P4) + N''';'",
            VERIFY_SID,
        ),
        Creation::ExternalProvider => ("N' FROM EXTERNAL PROVIDER;'", VERIFY_SID),
    };
    let text = format!(
        "SET NOCOUNT ON; SET XACT_ABORT ON;\n\
         DECLARE @u nvarchar(258) = QUOTENAME(@P1);\n\
         {QUOTE_GUARD_USER}\
         IF LEN(@P3) > 3750 THROW 50003, N'dbgrant: record too long', 1;\n\
         DECLARE @v sql_variant = CONVERT(nvarchar(3750), @P3);\n\
         IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE {SID_IS_P2})\n\
         BEGIN\n\
         BEGIN TRANSACTION;\n\
         DECLARE @ddl nvarchar(max) = N'CREATE USER ' + @u + {ddl};\n\
         EXEC (@ddl);\n\
         {check}\
         {ADD_RECORD}\n\
         COMMIT TRANSACTION;\n\
         END"
    );
    let mut params = vec![
        Param::Text(user.to_string()),
        Param::Guid(client_id),
        Param::Text(record.to_json()),
    ];
    if let Creation::ObjectId(object_id) = creation {
        params.push(Param::Guid(*object_id));
    }
    Batch { text, params }
}

/// After a create that resolved a name in Entra: the new user's SID must be the client id,
/// or the transaction (and the user) is rolled back.
const VERIFY_SID: &str = "IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = @P1 AND SUBSTRING(sid, 1, 16) = CONVERT(varbinary(16), @P2))\n\
     THROW 50002, N'dbgrant: the user Entra resolved is not the workload identity (its SID is not the client id)', 1;\n";

const MEMBER_EXISTS: &str = "EXISTS (SELECT 1 FROM sys.database_role_members m\n\
     JOIN sys.database_principals r ON r.principal_id = m.role_principal_id\n\
     JOIN sys.database_principals u ON u.principal_id = m.member_principal_id\n\
     WHERE r.name = @P1 AND u.name = @P2)";

fn membership(role: &str, user: &str, dialect: Dialect, add: bool) -> Batch {
    let (guard, action) = if add {
        (format!("IF NOT {MEMBER_EXISTS}"), "ADD")
    } else {
        (format!("IF {MEMBER_EXISTS}"), "DROP")
    };
    let text = match dialect {
        Dialect::AlterRole => format!(
            "SET NOCOUNT ON;\n\
             DECLARE @r nvarchar(258) = QUOTENAME(@P1), @u nvarchar(258) = QUOTENAME(@P2);\n\
             {QUOTE_GUARD_ROLE_USER}\
             {guard}\n\
             BEGIN DECLARE @ddl nvarchar(max) = N'ALTER ROLE ' + @r + N' {action} MEMBER ' + @u + N';'; EXEC (@ddl); END"
        ),
        // sysname arguments: passed as parameters, nothing to quote.
        Dialect::SpAddRoleMember => {
            let procedure = if add {
                "sp_addrolemember"
            } else {
                "sp_droprolemember"
            };
            format!(
                "SET NOCOUNT ON;\n\
                 IF LEN(@P1) > 128 OR LEN(@P2) > 128 THROW 50001, N'dbgrant: a name is not a valid T-SQL identifier (more than 128 characters)', 1;\n\
                 {guard}\n\
                 EXEC {procedure} @rolename = @P1, @membername = @P2;"
            )
        }
    };
    Batch {
        text,
        params: vec![Param::Text(role.to_string()), Param::Text(user.to_string())],
    }
}

fn schema_permission(schema: &str, permission: SqlPermission, user: &str, grant: bool) -> Batch {
    let keyword = permission.as_sql();
    // Grant unless any row exists (a DENY must not be replaced); revoke only a GRANT row (a
    // REVOKE would lift a DENY too).
    let (states, guard, statement) = if grant {
        (
            "'G', 'W', 'D'",
            "IF NOT EXISTS",
            format!("GRANT {keyword} ON SCHEMA::' + @s + N' TO "),
        )
    } else {
        (
            "'G'",
            "IF EXISTS",
            format!("REVOKE {keyword} ON SCHEMA::' + @s + N' FROM "),
        )
    };
    let text = format!(
        "SET NOCOUNT ON;\n\
         DECLARE @s nvarchar(258) = QUOTENAME(@P1), @u nvarchar(258) = QUOTENAME(@P2);\n\
         IF @s IS NULL OR @u IS NULL THROW 50001, N'dbgrant: a name is not a valid T-SQL identifier (more than 128 characters)', 1;\n\
         {guard} (SELECT 1 FROM sys.database_permissions p\n\
         JOIN sys.schemas s ON s.schema_id = p.major_id\n\
         JOIN sys.database_principals u ON u.principal_id = p.grantee_principal_id\n\
         WHERE p.class = 3 AND s.name = @P1 AND u.name = @P2 AND p.permission_name = N'{keyword}' AND p.state IN ({states}))\n\
         BEGIN DECLARE @ddl nvarchar(max) = N'{statement}' + @u + N';'; EXEC (@ddl); END"
    );
    Batch {
        text,
        params: vec![
            Param::Text(schema.to_string()),
            Param::Text(user.to_string()),
        ],
    }
}

/// What a SQL Server error number means for dbgrant: the reason, and what to do.
pub fn classify(number: u32) -> (Reason, &'static str) {
    match number {
        18456 => (
            Reason::TargetNotPrepared,
            "login failed: no user with the signing-in identity's SID in this database (the operator is neither the server's Entra admin nor a user there; for a workload: its user is missing, in another database, or was created from the object id instead of the client id)",
        ),
        4060 => (
            Reason::TargetNotPrepared,
            "the database does not exist or the operator has no user in it",
        ),
        33130 => (
            Reason::TargetNotPrepared,
            "Entra has no principal of that display name (FROM EXTERNAL PROVIDER needs the exact display name); use userCreation: Sid",
        ),
        33131 => (
            Reason::TargetNotPrepared,
            "several Entra principals share that display name; use userCreation: Sid or ObjectId",
        ),
        33134 => (
            Reason::TargetNotPrepared,
            "the server's identity could not resolve the principal in Entra: give the server (or workspace) identity the Directory Readers role, or use userCreation: Sid",
        ),
        37353 => (
            Reason::TargetNotPrepared,
            "the server's identity lacks Microsoft Graph read permission (Directory Readers); grant it, or use userCreation: Sid",
        ),
        37545 => (
            Reason::TargetNotPrepared,
            "Entra did not accept the object id (the enterprise application's object id is needed) or the server's identity cannot read Microsoft Graph",
        ),
        33159 => (
            Reason::TargetNotPrepared,
            "only a connection signed in with Entra ID can create Entra users; the operator must sign in with its Entra token",
        ),
        15023 => (
            Reason::RoleConflict,
            "a user, group or role of that name already exists for someone else; dbgrant never takes it over: drop or rename it",
        ),
        15151 => (
            Reason::TargetNotPrepared,
            "the database role does not exist, or the operator may not change its members (fixed roles need db_owner)",
        ),
        15247 => (
            Reason::TargetNotPrepared,
            "the operator lacks the permission for this action (db_owner or ALTER ANY USER)",
        ),
        15138 => (
            Reason::CleanupFailed,
            "the user owns a schema or other object and cannot be dropped; transfer the ownership (ALTER AUTHORIZATION) and dbgrant retries",
        ),
        40615 | 40914 => (
            Reason::AzureForbidden,
            "the server's firewall refuses the operator's address: add a firewall rule or a private endpoint",
        ),
        50001 => (
            Reason::InvalidSpec,
            "a name is not a valid T-SQL identifier (over 128 characters)",
        ),
        50002 => (
            Reason::RoleConflict,
            "the user Entra resolved by name is not the workload identity (its SID is not the client id); nothing was created",
        ),
        50003 => (
            Reason::InvalidSpec,
            "dbgrant's record on the user would be too long: declare fewer or shorter roles and schemas",
        ),
        // Deadlock victim, resource limits, failover in progress: transient.
        1205 | 10928 | 10929 | 40197 | 40501 | 40613 | 49918 | 49919 | 49920 => (
            Reason::AzureUnavailable,
            "the server is busy or failing over; retried with backoff",
        ),
        229 | 230 | 262 | 297 | 300 | 916 => (
            Reason::TargetNotPrepared,
            "the operator lacks a permission in the database (it needs db_owner, or to be the server's Entra admin)",
        ),
        _ => (Reason::AzureUnavailable, "the server refused the statement"),
    }
}

#[cfg(test)]
mod tests;
