//! The statements the stand-in knows: its own copies of the exact batch texts dbgrant's
//! T-SQL backend sends (dbgrant-sim cannot depend on dbgrant, so they are written out here
//! again), each with the parameters it takes. A batch is recognised only when its text is
//! one of these, character for character; anything else is refused, so an unexpected or
//! changed statement fails a test instead of quietly returning nothing. A test in the
//! dbgrant crate renders every batch the backend can send and checks it is recognised here.

/// A parameter's type family, as declared in `sp_executesql`'s `@params`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `nvarchar(n)` or `nvarchar(max)`.
    Text,
    /// `uniqueidentifier`.
    Guid,
}

/// How a user is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creation {
    /// `WITH SID = ..., TYPE = E`.
    Sid,
    /// `FROM EXTERNAL PROVIDER WITH OBJECT_ID = ...`.
    ObjectId,
    /// `FROM EXTERNAL PROVIDER`.
    ExternalProvider,
}

/// How role membership is changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `ALTER ROLE ... ADD/DROP MEMBER`.
    AlterRole,
    /// `sp_addrolemember` / `sp_droprolemember`.
    SpAddRoleMember,
}

/// Schema permissions dbgrant may grant.
pub const PERMISSIONS: [&str; 6] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "EXECUTE",
    "VIEW DEFINITION",
];

/// One statement shape the stand-in executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The identity's principals, memberships and schema permissions.
    Observe,
    /// Every user carrying dbgrant's record.
    RecordedUsers,
    /// The operator's rights in the database.
    Preflight,
    /// Whether a role and a schema exist and the operator may change them.
    PreflightNames,
    /// The signed-in principal's membership of a role.
    WorkloadMembership,
    /// CREATE USER (and its record).
    CreateUser(Creation),
    /// Add or update dbgrant's record.
    WriteRecord,
    /// Drop dbgrant's record.
    ForgetUser,
    /// Add or drop a role member.
    Member { add: bool, dialect: Dialect },
    /// GRANT or REVOKE a schema permission (index into [`PERMISSIONS`]).
    SchemaPermission { grant: bool, permission: usize },
    /// DROP USER.
    DropUser,
}

const NAME_GUARD: &str =
    "N'dbgrant: a name is not a valid T-SQL identifier (more than 128 characters)'";
const SID_IS_P2: &str = "SUBSTRING(sid, 1, 16) = CONVERT(varbinary(16), @P2)";

/// The SID predicate on an aliased principal: the alias qualifies the column, never the
/// function (`p.SUBSTRING(...)` would name a user-defined function `SUBSTRING` in schema `p`).
fn sid_of_is_p2(alias: &str) -> String {
    format!("SUBSTRING({alias}.sid, 1, 16) = CONVERT(varbinary(16), @P2)")
}

impl Shape {
    /// Every shape.
    pub fn all() -> Vec<Shape> {
        let mut all = vec![
            Shape::Observe,
            Shape::RecordedUsers,
            Shape::Preflight,
            Shape::PreflightNames,
            Shape::WorkloadMembership,
            Shape::CreateUser(Creation::Sid),
            Shape::CreateUser(Creation::ObjectId),
            Shape::CreateUser(Creation::ExternalProvider),
            Shape::WriteRecord,
            Shape::ForgetUser,
            Shape::DropUser,
        ];
        for add in [true, false] {
            for dialect in [Dialect::AlterRole, Dialect::SpAddRoleMember] {
                all.push(Shape::Member { add, dialect });
            }
            for permission in 0..PERMISSIONS.len() {
                all.push(Shape::SchemaPermission {
                    grant: add,
                    permission,
                });
            }
        }
        all
    }

    /// The parameters, in order (`@P1`, `@P2`, ...).
    pub fn params(&self) -> &'static [Kind] {
        use Kind::{Guid, Text};
        match self {
            Shape::Observe => &[Text, Guid],
            Shape::RecordedUsers | Shape::Preflight => &[],
            Shape::PreflightNames => &[Text, Text],
            Shape::WorkloadMembership | Shape::ForgetUser => &[Text],
            Shape::CreateUser(Creation::ObjectId) => &[Text, Guid, Text, Guid],
            Shape::CreateUser(_) => &[Text, Guid, Text],
            Shape::WriteRecord | Shape::Member { .. } | Shape::SchemaPermission { .. } => {
                &[Text, Text]
            }
            Shape::DropUser => &[Text, Guid],
        }
    }

    /// The exact batch text.
    pub fn text(&self) -> String {
        match *self {
            Shape::Observe => format!(
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
                 WHERE p.class = 3 AND {u_sid} AND u.type IN ('E', 'X');",
                p_sid = sid_of_is_p2("p"),
                u_sid = sid_of_is_p2("u"),
            ),
            Shape::RecordedUsers => "SET NOCOUNT ON;\n\
                 SELECT p.name, CONVERT(uniqueidentifier, SUBSTRING(p.sid, 1, 16)) AS entra_id, CONVERT(nvarchar(4000), ep.value) AS record\n\
                 FROM sys.database_principals p\n\
                 JOIN sys.extended_properties ep ON ep.class = 4 AND ep.major_id = p.principal_id AND ep.name = N'dbgrant'\n\
                 WHERE p.type IN ('E', 'X');"
                .into(),
            Shape::Preflight => "SET NOCOUNT ON;\n\
                 SELECT CONVERT(int, ISNULL(IS_ROLEMEMBER(N'db_owner'), 0)) AS is_owner, \
                 CONVERT(int, ISNULL(HAS_PERMS_BY_NAME(DB_NAME(), N'DATABASE', N'ALTER ANY USER'), 0)) AS alter_any_user, \
                 CONVERT(nvarchar(256), SUSER_SNAME()) AS login_name, CONVERT(nvarchar(256), DB_NAME()) AS database_name;"
                .into(),
            Shape::PreflightNames => "SET NOCOUNT ON;\n\
                 DECLARE @r nvarchar(4000) = NULLIF(@P1, N''), @s nvarchar(4000) = NULLIF(@P2, N'');\n\
                 SELECT CONVERT(int, CASE WHEN @r IS NULL THEN 1 WHEN DATABASE_PRINCIPAL_ID(@r) IS NULL THEN 0 ELSE 1 END) AS role_exists, \
                 CONVERT(int, CASE WHEN @r IS NULL THEN 1 ELSE ISNULL(HAS_PERMS_BY_NAME(@r, N'ROLE', N'ALTER'), 0) END) AS role_alter, \
                 CONVERT(int, CASE WHEN @s IS NULL THEN 1 WHEN SCHEMA_ID(@s) IS NULL THEN 0 ELSE 1 END) AS schema_exists, \
                 CONVERT(int, CASE WHEN @s IS NULL THEN 1 ELSE ISNULL(HAS_PERMS_BY_NAME(@s, N'SCHEMA', N'CONTROL'), 0) END) AS schema_control;"
                .into(),
            Shape::WorkloadMembership => {
                "SET NOCOUNT ON;\nSELECT CONVERT(int, ISNULL(IS_ROLEMEMBER(@P1), 0)) AS is_member;".into()
            }
            Shape::CreateUser(creation) => create_user(creation),
            Shape::WriteRecord => format!(
                "SET NOCOUNT ON; SET XACT_ABORT ON;\n\
                 DECLARE @v sql_variant = CONVERT(nvarchar(3750), @P2);\n\
                 IF LEN(@P2) > 3750 THROW 50003, N'dbgrant: record too long', 1;\n\
                 IF EXISTS ({RECORD_EXISTS})\n\
                 {UPDATE_RECORD}\n\
                 ELSE\n\
                 {ADD_RECORD}"
            ),
            Shape::ForgetUser => format!(
                "SET NOCOUNT ON;\n\
                 IF EXISTS ({RECORD_EXISTS})\n\
                 EXEC sp_dropextendedproperty @name = N'dbgrant', @level0type = N'USER', @level0name = @P1;"
            ),
            Shape::Member { add, dialect } => member(add, dialect),
            Shape::SchemaPermission { grant, permission } => schema_permission(grant, permission),
            Shape::DropUser => format!(
                "SET NOCOUNT ON;\n\
                 DECLARE @u nvarchar(258) = QUOTENAME(@P1);\n\
                 IF @u IS NULL THROW 50001, {NAME_GUARD}, 1;\n\
                 IF EXISTS (SELECT 1 FROM sys.database_principals WHERE name = @P1 AND {SID_IS_P2})\n\
                 BEGIN DECLARE @ddl nvarchar(max) = N'DROP USER ' + @u + N';'; EXEC (@ddl); END"
            ),
        }
    }
}

const RECORD_EXISTS: &str = "SELECT 1 FROM sys.extended_properties ep JOIN sys.database_principals p ON ep.class = 4 AND ep.major_id = p.principal_id WHERE p.name = @P1 AND ep.name = N'dbgrant'";
const ADD_RECORD: &str = "EXEC sp_addextendedproperty @name = N'dbgrant', @value = @v, @level0type = N'USER', @level0name = @P1;";
const UPDATE_RECORD: &str = "EXEC sp_updateextendedproperty @name = N'dbgrant', @value = @v, @level0type = N'USER', @level0name = @P1;";

fn create_user(creation: Creation) -> String {
    let (ddl, check) = match creation {
        Creation::Sid => (
            "N' WITH SID = ' + CONVERT(nvarchar(34), CONVERT(varbinary(16), @P2), 1) + N', TYPE = E;'"
                .to_string(),
            String::new(),
        ),
        Creation::ObjectId => (
            "N' FROM EXTERNAL PROVIDER WITH OBJECT_ID = ''' + CONVERT(nvarchar(36), @P4) + N''';'"
                .to_string(),
            verify_sid(),
        ),
        Creation::ExternalProvider => ("N' FROM EXTERNAL PROVIDER;'".to_string(), verify_sid()),
    };
    format!(
        "SET NOCOUNT ON; SET XACT_ABORT ON;\n\
         DECLARE @u nvarchar(258) = QUOTENAME(@P1);\n\
         IF @u IS NULL THROW 50001, {NAME_GUARD}, 1;\n\
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
    )
}

fn verify_sid() -> String {
    format!(
        "IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = @P1 AND {SID_IS_P2})\n\
         THROW 50002, N'dbgrant: the user Entra resolved is not the workload identity (its SID is not the client id)', 1;\n"
    )
}

const MEMBER_EXISTS: &str = "EXISTS (SELECT 1 FROM sys.database_role_members m\n\
     JOIN sys.database_principals r ON r.principal_id = m.role_principal_id\n\
     JOIN sys.database_principals u ON u.principal_id = m.member_principal_id\n\
     WHERE r.name = @P1 AND u.name = @P2)";

fn member(add: bool, dialect: Dialect) -> String {
    let guard = if add {
        format!("IF NOT {MEMBER_EXISTS}")
    } else {
        format!("IF {MEMBER_EXISTS}")
    };
    match dialect {
        Dialect::AlterRole => {
            let action = if add { "ADD" } else { "DROP" };
            format!(
                "SET NOCOUNT ON;\n\
                 DECLARE @r nvarchar(258) = QUOTENAME(@P1), @u nvarchar(258) = QUOTENAME(@P2);\n\
                 IF @r IS NULL OR @u IS NULL THROW 50001, {NAME_GUARD}, 1;\n\
                 {guard}\n\
                 BEGIN DECLARE @ddl nvarchar(max) = N'ALTER ROLE ' + @r + N' {action} MEMBER ' + @u + N';'; EXEC (@ddl); END"
            )
        }
        Dialect::SpAddRoleMember => {
            let procedure = if add {
                "sp_addrolemember"
            } else {
                "sp_droprolemember"
            };
            format!(
                "SET NOCOUNT ON;\n\
                 IF LEN(@P1) > 128 OR LEN(@P2) > 128 THROW 50001, {NAME_GUARD}, 1;\n\
                 {guard}\n\
                 EXEC {procedure} @rolename = @P1, @membername = @P2;"
            )
        }
    }
}

fn schema_permission(grant: bool, permission: usize) -> String {
    let keyword = PERMISSIONS[permission];
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
    format!(
        "SET NOCOUNT ON;\n\
         DECLARE @s nvarchar(258) = QUOTENAME(@P1), @u nvarchar(258) = QUOTENAME(@P2);\n\
         IF @s IS NULL OR @u IS NULL THROW 50001, {NAME_GUARD}, 1;\n\
         {guard} (SELECT 1 FROM sys.database_permissions p\n\
         JOIN sys.schemas s ON s.schema_id = p.major_id\n\
         JOIN sys.database_principals u ON u.principal_id = p.grantee_principal_id\n\
         WHERE p.class = 3 AND s.name = @P1 AND u.name = @P2 AND p.permission_name = N'{keyword}' AND p.state IN ({states}))\n\
         BEGIN DECLARE @ddl nvarchar(max) = N'{statement}' + @u + N';'; EXEC (@ddl); END"
    )
}

/// The shape whose text `text` is, exactly.
pub fn recognise(text: &str) -> Option<Shape> {
    Shape::all().into_iter().find(|shape| shape.text() == text)
}

/// The type family of a declaration in `@params` (`nvarchar(4000)`, `uniqueidentifier`).
fn kind_of(declared: &str) -> Option<Kind> {
    let declared = declared.trim().to_ascii_lowercase();
    if declared == "uniqueidentifier" {
        Some(Kind::Guid)
    } else if declared.starts_with("nvarchar(") && declared.ends_with(')') {
        Some(Kind::Text)
    } else {
        None
    }
}

/// Check `sp_executesql`'s `@params` declaration against the shape's parameters: the same
/// names (`@P1`, `@P2`, ...) in order, each of the expected type family.
///
/// # Errors
/// A sentence saying what does not match.
pub fn check_declarations(shape: &Shape, declared: &str) -> Result<(), String> {
    let expected = shape.params();
    let declared: Vec<&str> = declared
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if declared.len() != expected.len() {
        return Err(format!(
            "{} parameters declared ({declared:?}), {} expected",
            declared.len(),
            expected.len()
        ));
    }
    for (i, (declaration, kind)) in declared.iter().zip(expected).enumerate() {
        let (name, ty) = declaration
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("declaration {declaration:?} has no type"))?;
        if !name.eq_ignore_ascii_case(&format!("@P{}", i + 1)) {
            return Err(format!(
                "parameter {} is named {name}, not @P{}",
                i + 1,
                i + 1
            ));
        }
        if kind_of(ty) != Some(*kind) {
            return Err(format!("{name} is declared {ty}, not {kind:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_has_its_own_text_and_is_recognised_by_it() {
        let all = Shape::all();
        for shape in &all {
            assert_eq!(recognise(&shape.text()), Some(*shape));
        }
        let texts: std::collections::BTreeSet<String> = all.iter().map(Shape::text).collect();
        assert_eq!(texts.len(), all.len(), "two shapes share a text");
        assert_eq!(recognise("SELECT 1;"), None);
        assert_eq!(recognise(&format!("{} ", Shape::Observe.text())), None);
    }

    #[test]
    fn declarations_must_name_and_type_each_parameter() {
        let shape = Shape::Observe;
        assert!(check_declarations(&shape, "@P1 nvarchar(4000),@P2 uniqueidentifier").is_ok());
        assert!(check_declarations(&shape, "@P1 nvarchar(max), @P2 UNIQUEIDENTIFIER").is_ok());
        assert!(check_declarations(&shape, "@P1 nvarchar(4000)").is_err());
        assert!(check_declarations(&shape, "@P2 nvarchar(4000),@P1 uniqueidentifier").is_err());
        assert!(check_declarations(&shape, "@P1 int,@P2 uniqueidentifier").is_err());
        assert!(check_declarations(&Shape::Preflight, "").is_ok());
    }
}
