//! T-SQL behind the backend-neutral seam: one target's database on a SQL server.

use std::collections::BTreeSet;
use std::sync::Arc;

use azure_core::credentials::Secret;
use uuid::Uuid;

use super::admins::{self, Verdict};
use super::connect::SqlClients;
use super::plan::{
    Conflict, Creation, Desired, Dialect, Grantable, Observed, PermState, Plan, Principal, Record,
    plan_grant, plan_revoke,
};
use super::{
    holding_id, identifier_problem, parse_client_id, parse_holding_id, quote_ident, store_id, tsql,
    user_name,
};
use crate::api::{DeletionPolicy, Reason, SqlKind, SqlPermission, SqlTarget, SqlUserCreation};
use crate::backend::{Access, Backend, BackendError, Holding, TokenScope};

/// One target's database on a T-SQL server.
pub struct SqlBackend {
    name: String,
    target: SqlTarget,
    clients: Arc<SqlClients>,
}

impl SqlBackend {
    /// The backend of target `name`, whose sql block is `target`.
    pub fn new(name: &str, target: SqlTarget, clients: Arc<SqlClients>) -> Self {
        Self {
            name: name.to_string(),
            target,
            clients,
        }
    }

    fn database(&self) -> Result<&str, BackendError> {
        self.target.database.as_deref().ok_or_else(|| {
            BackendError::new(
                Reason::InvalidSpec,
                format!(
                    "DatabaseTarget {} names no database: set spec.sql.database",
                    self.name
                ),
            )
        })
    }

    fn dialect(&self) -> Dialect {
        match self.target.kind {
            SqlKind::SynapseDedicated => Dialect::SpAddRoleMember,
            _ => Dialect::AlterRole,
        }
    }

    /// What dbgrant role `role` means in the database, or `None` when it is not declared.
    fn grantables(&self, role: &str) -> Option<BTreeSet<Grantable>> {
        let member = |r: &str| Grantable::Member(r.to_string());
        match role {
            "reader" => Some([member("db_datareader")].into()),
            "contributor" => Some([member("db_datareader"), member("db_datawriter")].into()),
            custom => {
                let spec = self.target.roles.get(custom)?;
                let mut out: BTreeSet<Grantable> =
                    spec.member_of.iter().map(|r| member(r)).collect();
                for schema in &spec.schemas {
                    for permission in &schema.permissions {
                        out.insert(Grantable::Schema {
                            schema: schema.schema.clone(),
                            permission: *permission,
                        });
                    }
                }
                Some(out)
            }
        }
    }

    /// ARM's half of the preflight: whether the operator is the server's Entra admin.
    async fn check_administrator(&self, server_id: &str) -> Result<Verdict, BackendError> {
        let (object_id, client_id, tenant_id) = self.clients.operator_identity().await?;
        let seen = self.clients.servers().entra_admin(server_id).await?;
        let verdict = admins::decide(server_id, &object_id, &client_id, &tenant_id, &seen)?;
        tracing::debug!(target = %self.name, ?verdict, "the server's Entra admin in ARM");
        Ok(verdict)
    }

    fn undeclared(&self, role: &str) -> BackendError {
        BackendError::new(
            Reason::InvalidSpec,
            format!(
                "role {role} is not declared by DatabaseTarget {}",
                self.name
            ),
        )
    }

    fn creation(&self, object_id: &str) -> Result<Creation, BackendError> {
        match self.target.user_creation() {
            SqlUserCreation::Sid => Ok(Creation::Sid),
            // Both name-resolving forms need the identity's Entra display name as (part of)
            // the user's name, which dbgrant does not learn from the token exchange.
            form => Err(BackendError::new(
                Reason::TargetNotPrepared,
                format!(
                    "DatabaseTarget {}: userCreation {form:?} (the default for {:?}) needs the identity's Entra display name, which dbgrant does not know yet; set spec.sql.userCreation: Sid (object id {object_id})",
                    self.name, self.target.kind
                ),
            )),
        }
    }

    async fn observe(&self, user: &str, client_id: Uuid) -> Result<Observed, BackendError> {
        let database = self.database()?;
        let mut session = self
            .clients
            .session(&self.target.server, self.target.port, database)
            .await?;
        let sets = self
            .clients
            .run(
                session.client(),
                "reading the identity's user",
                &tsql::observe(user, client_id),
            )
            .await?;
        Ok(observed_from(&sets, user))
    }

    async fn apply(&self, plan: &Plan) -> Result<(), BackendError> {
        if plan.steps.is_empty() {
            return Ok(());
        }
        let database = self.database()?;
        let mut session = self
            .clients
            .session(&self.target.server, self.target.port, database)
            .await?;
        for step in &plan.steps {
            if let Err(error) = self
                .clients
                .run(session.client(), &format!("{step:?}"), &tsql::render(step))
                .await
            {
                session.discard();
                return Err(error);
            }
            tracing::debug!(target = %self.name, ?step, "T-SQL step done");
        }
        Ok(())
    }

    async fn converge(
        &self,
        client_id: Uuid,
        object_id: &str,
        role: &str,
    ) -> Result<(), BackendError> {
        let Some(grantables) = self.grantables(role) else {
            return Err(self.undeclared(role));
        };
        let desired = Desired {
            client_id,
            object_id: (!object_id.is_empty()).then(|| object_id.to_string()),
            user: user_name(&client_id),
            role: role.to_string(),
            grantables,
            creation: self.creation(object_id)?,
            dialect: self.dialect(),
        };
        let lock = self
            .clients
            .write_lock(&self.target.server, self.target.port, self.database()?);
        let _serialised = lock.lock().await;
        let observed = self.observe(&desired.user, client_id).await?;
        let plan = plan_grant(&desired, &observed).map_err(conflict)?;
        if !plan.denied.is_empty() {
            tracing::warn!(target = %self.name, denied = ?plan.denied, "an admin's DENY keeps schema permissions from the workload");
        }
        self.apply(&plan).await
    }
}

fn conflict(c: Conflict) -> BackendError {
    let reason = match c {
        Conflict::RecordTooLarge { .. } => Reason::InvalidSpec,
        _ => Reason::RoleConflict,
    };
    BackendError::new(reason, c.to_string())
}

/// The three result sets of [`tsql::observe`] as the plan's input.
fn observed_from(sets: &[Vec<tiberius::Row>], user: &str) -> Observed {
    let mut observed = Observed::default();
    for row in sets.first().into_iter().flatten() {
        let principal = Principal {
            name: row.get::<&str, _>(0).unwrap_or_default().to_string(),
            sid: row.get::<Uuid, _>(1),
            record: row.get::<&str, _>(2).and_then(Record::from_json),
        };
        if row.get::<i32, _>(3) == Some(1) {
            observed.by_sid = Some(principal.clone());
        }
        if principal.name == user {
            observed.by_name = Some(principal);
        }
    }
    for row in sets.get(1).into_iter().flatten() {
        if let Some(role) = row.get::<&str, _>(0) {
            observed.members.insert(role.to_string());
        }
    }
    for row in sets.get(2).into_iter().flatten() {
        let (Some(schema), Some(name), Some(state)) = (
            row.get::<&str, _>(0),
            row.get::<&str, _>(1),
            row.get::<&str, _>(2),
        ) else {
            continue;
        };
        let permission = SqlPermission::ALL.into_iter().find(|p| p.as_sql() == name);
        if let (Some(permission), Some(state)) = (permission, PermState::from_code(state)) {
            observed
                .permissions
                .insert((schema.to_string(), permission), state);
        }
    }
    observed
}

#[async_trait::async_trait]
impl Backend for SqlBackend {
    fn kind(&self) -> &'static str {
        "sql"
    }

    fn store(&self) -> String {
        store_id(
            &self.target.server,
            self.target.port,
            self.target.database.as_deref().unwrap_or_default(),
        )
    }

    fn display_name(&self) -> String {
        self.target.server.clone()
    }

    fn store_of(&self, holding_id: &str) -> Option<String> {
        super::store_of(holding_id)
    }

    fn holding_for(&self, access: &Access) -> Result<Holding, BackendError> {
        if access.container.is_some() {
            return Err(BackendError::new(
                Reason::InvalidSpec,
                format!(
                    "spec.container is for Cosmos DB only; DatabaseTarget {} is a SQL database: remove container",
                    self.name
                ),
            ));
        }
        if self.grantables(&access.role).is_none() {
            return Err(self.undeclared(&access.role));
        }
        let database = self.database()?;
        if let Some(asked) = &access.database
            && asked != database
        {
            return Err(BackendError::new(
                Reason::InvalidSpec,
                format!(
                    "DatabaseTarget {} manages database {database} only, not {asked}",
                    self.name
                ),
            ));
        }
        // The guard-rail check passes no identity yet: only the spec is judged then.
        if access.principal_id.is_empty() {
            return Ok(Holding {
                id: String::new(),
                principal_id: String::new(),
                role_id: access.role.clone(),
                scope: database.to_string(),
            });
        }
        let client_id = access
            .client_id
            .as_deref()
            .and_then(parse_client_id)
            .ok_or_else(|| {
                BackendError::new(
                    Reason::IdentityAnnotationMissing,
                    "a SQL user is keyed by the identity's client id: the ServiceAccount's azure.workload.identity/client-id must be a GUID",
                )
            })?;
        Ok(Holding {
            id: holding_id(&self.store(), &access.role, &client_id),
            principal_id: access.principal_id.to_ascii_lowercase(),
            role_id: access.role.clone(),
            scope: database.to_string(),
        })
    }

    async fn prepare(&self) -> Result<String, BackendError> {
        let database = self.database()?.to_string();
        if let Some(problem) = identifier_problem(&database) {
            return Err(BackendError::new(
                Reason::InvalidSpec,
                format!("database {database:?} {problem}"),
            ));
        }
        // ARM first, before any sign-in: a missing server is reported as such, and a refused
        // sign-in can then name the command that fixes it.
        let arm = match &self.target.server_resource_id {
            Some(server_id) => Some(self.check_administrator(server_id).await?),
            None => None,
        };
        let mut session = match self
            .clients
            .session(&self.target.server, self.target.port, &database)
            .await
        {
            Ok(session) => session,
            Err(error) => {
                return Err(match &arm {
                    Some(Verdict::NotAdmin { why, fix })
                        if error.reason == Reason::TargetNotPrepared =>
                    {
                        let mut refused = BackendError::new(
                            Reason::TargetNotPrepared,
                            format!(
                                "{why}, and it cannot sign in to database {database} ({}): run {fix}, or have an Entra admin give it a user in db_owner there",
                                error.message
                            ),
                        );
                        refused.code = error.code;
                        refused
                    }
                    _ => error,
                });
            }
        };
        let sets = self
            .clients
            .run(
                session.client(),
                "checking the operator's rights",
                &tsql::preflight(),
            )
            .await?;
        let row = sets.first().and_then(|s| s.first());
        let is_owner = row.and_then(|r| r.get::<i32, _>(0)) == Some(1);
        let alter_any_user = row.and_then(|r| r.get::<i32, _>(1)) == Some(1);
        let operator = row
            .and_then(|r| r.get::<&str, _>(2))
            .unwrap_or("<dbgrant's identity>")
            .to_string();
        let quoted = quote_ident(&operator).unwrap_or_else(|| "[dbgrant]".into());
        let add_owner = match self.dialect() {
            Dialect::SpAddRoleMember => format!(
                "EXEC sp_addrolemember 'db_owner', '{}'",
                operator.replace('\'', "''")
            ),
            Dialect::AlterRole => format!("ALTER ROLE db_owner ADD MEMBER {quoted}"),
        };
        let make_admin = match &arm {
            Some(Verdict::NotAdmin { fix, .. }) => format!("run {fix}"),
            _ => "make dbgrant's identity the server's Entra admin".to_string(),
        };
        let fix = format!(
            "{make_admin}, or have an Entra admin run in database {database}: CREATE USER {quoted} FROM EXTERNAL PROVIDER; {add_owner};"
        );
        let mut problems = Vec::new();
        if !is_owner && !alter_any_user {
            problems.push(format!(
                "the operator ({operator}) may not create users (no ALTER ANY USER)"
            ));
        }
        if !is_owner {
            let mut names: Vec<(Option<String>, Option<String>)> = Vec::new();
            for role in self.target.roles.values() {
                names.extend(role.member_of.iter().map(|r| (Some(r.clone()), None)));
                names.extend(role.schemas.iter().map(|s| (None, Some(s.schema.clone()))));
            }
            names.push((Some("db_datareader".into()), None));
            names.push((Some("db_datawriter".into()), None));
            for (role, schema) in names {
                let sets = self
                    .clients
                    .run(
                        session.client(),
                        "checking a role or schema",
                        &tsql::preflight_names(role.as_deref(), schema.as_deref()),
                    )
                    .await?;
                let row = sets.first().and_then(|s| s.first());
                let flag = |i| row.and_then(|r| r.get::<i32, _>(i)) == Some(1);
                if let Some(role) = &role {
                    if !flag(0) {
                        problems.push(format!("database role {role} does not exist"));
                    } else if !flag(1) || role.starts_with("db_") {
                        problems.push(format!("the operator may not change the members of {role} (fixed roles need db_owner)"));
                    }
                }
                if let Some(schema) = &schema {
                    if !flag(2) {
                        problems.push(format!("schema {schema} does not exist"));
                    } else if !flag(3) {
                        problems.push(format!("the operator does not control schema {schema}"));
                    }
                }
            }
        }
        drop(session);
        if !problems.is_empty() {
            if let Some(Verdict::NotAdmin { why, .. }) = &arm {
                problems.insert(0, why.clone());
            }
            return Err(BackendError::new(
                Reason::TargetNotPrepared,
                format!("{}; {fix}", problems.join("; ")),
            ));
        }
        Ok(store_id(&self.target.server, self.target.port, &database))
    }

    async fn list_owned(&self) -> Result<Vec<Holding>, BackendError> {
        let database = self.database()?;
        let mut session = self
            .clients
            .session(&self.target.server, self.target.port, database)
            .await?;
        let sets = self
            .clients
            .run(
                session.client(),
                "listing dbgrant's users",
                &tsql::recorded_users(),
            )
            .await?;
        drop(session);
        let mut owned = Vec::new();
        for row in sets.first().into_iter().flatten() {
            let (Some(client_id), Some(record)) = (
                row.get::<Uuid, _>(1),
                row.get::<&str, _>(2).and_then(Record::from_json),
            ) else {
                continue;
            };
            let user = row.get::<&str, _>(0).unwrap_or_default().to_string();
            // Drift (a membership removed by hand) shows as the holding being absent.
            let observed = self.observe(&user, client_id).await?;
            let present: BTreeSet<Grantable> = observed
                .members
                .iter()
                .map(|m| Grantable::Member(m.clone()))
                .chain(
                    observed
                        .permissions
                        .iter()
                        .filter(|(_, s)| **s != PermState::Deny)
                        .map(|((schema, permission), _)| Grantable::Schema {
                            schema: schema.clone(),
                            permission: *permission,
                        }),
                )
                .collect();
            for (role, grantables) in &record.roles {
                if grantables.is_subset(&present) {
                    owned.push(Holding {
                        id: holding_id(&self.store(), role, &client_id),
                        principal_id: record.object_id.clone().unwrap_or_default(),
                        role_id: role.clone(),
                        scope: database.to_string(),
                    });
                }
            }
        }
        Ok(owned)
    }

    async fn grant(&self, holding: &Holding) -> Result<(), BackendError> {
        let Some(id) = parse_holding_id(&holding.id) else {
            return Err(BackendError::new(
                Reason::InvalidSpec,
                format!("{} is not a SQL holding id", holding.id),
            ));
        };
        self.converge(id.client_id, &holding.principal_id, &id.role)
            .await
    }

    async fn revoke(&self, holding_id: &str) -> Result<bool, BackendError> {
        let Some(id) = parse_holding_id(holding_id) else {
            return Ok(false);
        };
        if !crate::backend::same_store(&id.store, &self.store()) {
            return Ok(false);
        }
        let lock = self
            .clients
            .write_lock(&self.target.server, self.target.port, self.database()?);
        let _serialised = lock.lock().await;
        let observed = self
            .observe(&user_name(&id.client_id), id.client_id)
            .await?;
        // The controller applies Retain itself (it never calls revoke then).
        let plan = plan_revoke(
            id.client_id,
            &id.role,
            self.dialect(),
            DeletionPolicy::Delete,
            &observed,
        );
        let revoked = !plan.steps.is_empty();
        self.apply(&plan).await?;
        Ok(revoked)
    }

    async fn probe(
        &self,
        _endpoint: &str,
        access: &Access,
        access_token: &Secret,
    ) -> Result<bool, BackendError> {
        let database = self.database()?;
        let Some(grantables) = self.grantables(&access.role) else {
            return Err(self.undeclared(&access.role));
        };
        // The workload's own token, as the workload would sign in: nothing of the operator's.
        let mut client = match self
            .clients
            .connect(
                &self.target.server,
                self.target.port,
                database,
                access_token,
            )
            .await
        {
            Ok(client) => client,
            Err(error) if error.reason == Reason::TargetNotPrepared => {
                tracing::debug!(%error, "workload sign-in refused");
                return Ok(false);
            }
            Err(error) => return Err(error),
        };
        for grantable in &grantables {
            if let Grantable::Member(role) = grantable {
                let sets = self
                    .clients
                    .run(
                        &mut client,
                        "checking the workload's roles",
                        &tsql::workload_membership(role),
                    )
                    .await?;
                if sets
                    .first()
                    .and_then(|s| s.first())
                    .and_then(|r| r.get::<i32, _>(0))
                    != Some(1)
                {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn token_scope(&self) -> TokenScope {
        TokenScope::AzureSql
    }

    fn verifies_access(&self) -> bool {
        self.target.verify_access
    }

    async fn remove_target_owned(
        &self,
        _in_use_by: &[Holding],
    ) -> Result<Vec<String>, BackendError> {
        // The platform's roles and schemas are the platform's: a target owns nothing.
        Ok(Vec::new())
    }

    fn describe_holding(&self, holding: &Holding) -> String {
        match super::parse_holding_id(&holding.id) {
            Some(made) => format!(
                "contained user {} (SID {}) in database {} on {}",
                super::user_name(&made.client_id),
                super::sid_literal(&made.client_id),
                made.database,
                self.target.server
            ),
            None => format!("access {}", holding.id),
        }
    }

    fn describe_scope(&self, access: &Access) -> String {
        format!(
            "database {} on {} as role {}",
            self.target.database.as_deref().unwrap_or_default(),
            self.target.server,
            access.role
        )
    }
}
