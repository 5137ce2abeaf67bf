//! PostgreSQL behind the backend-neutral seam: one target's database on a flexible server.

use std::collections::BTreeSet;
use std::sync::Arc;

use azure_core::credentials::Secret;

use super::admins;
use super::connect::{PostgresClients, Session};
use super::plan::{Conflict, Desired, Grantable, Step, plan_grant, plan_revoke};
use super::sql::Held;
use super::{holding_id, identifier_problem, login_name, parse_holding_id, sql, store_id};
use crate::api::{PostgresTarget, Reason, TablePrivilege};
use crate::backend::{Access, Backend, BackendError, Holding, TokenScope};

/// The database where pgaadauth's functions live.
const SERVER_DATABASE: &str = "postgres";

/// One target's database on a PostgreSQL flexible server.
pub struct PostgresBackend {
    name: String,
    target: PostgresTarget,
    clients: Arc<PostgresClients>,
}

impl PostgresBackend {
    /// The backend of target `name`, whose postgres block is `target`.
    pub fn new(name: &str, target: PostgresTarget, clients: Arc<PostgresClients>) -> Self {
        Self {
            name: name.to_string(),
            target,
            clients,
        }
    }

    fn database(&self) -> Result<&str, BackendError> {
        self.target.database.as_deref().ok_or_else(|| {
            BackendError::new(
                Reason::TargetNotPrepared,
                format!(
                    "DatabaseTarget {} names no database: set spec.postgres.database",
                    self.name
                ),
            )
        })
    }

    /// What dbgrant role `role` means in the database, or `None` when it is not declared.
    fn grantables(&self, role: &str) -> Option<BTreeSet<Grantable>> {
        let spec = self.target.roles.get(role)?;
        let mut out: BTreeSet<Grantable> = spec
            .member_of
            .iter()
            .map(|r| Grantable::Member(r.clone()))
            .collect();
        for schema in &spec.schemas {
            out.insert(Grantable::SchemaUsage(schema.schema.clone()));
            for privilege in &schema.privileges {
                out.insert(Grantable::Tables {
                    schema: schema.schema.clone(),
                    privilege: *privilege,
                });
            }
        }
        Some(out)
    }

    async fn session(&self, database: &str) -> Result<Session, BackendError> {
        self.clients
            .session(
                &self.target.server,
                self.target.port,
                &self.target.admin_role,
                database,
            )
            .await
    }

    /// Both sessions a plan needs: the server's (`postgres`) and the target database's.
    async fn sessions(&self) -> Result<(Session, Session), BackendError> {
        let database = self.database()?;
        Ok((
            self.session(SERVER_DATABASE).await?,
            self.session(database).await?,
        ))
    }

    async fn run(&self, steps: &[Step]) -> Result<(), BackendError> {
        if steps.is_empty() {
            return Ok(());
        }
        let (server, database) = self.sessions().await?;
        for step in steps {
            if let Err(error) = sql::run_step(server.client(), database.client(), step).await {
                server.discard();
                database.discard();
                return Err(error);
            }
            tracing::debug!(target = %self.name, ?step, "PostgreSQL step done");
        }
        Ok(())
    }

    /// Plan and run what gives `role` to `object_id` in the database.
    async fn converge(&self, object_id: &str, role: &str) -> Result<(), BackendError> {
        let database = self.database()?.to_string();
        let Some(grantables) = self.grantables(role) else {
            return Err(self.undeclared(role));
        };
        let desired = Desired {
            object_id: object_id.to_string(),
            login: login_name(object_id),
            database,
            role: role.to_string(),
            grantables,
        };
        let steps = {
            let (server, db) = self.sessions().await?;
            let mut observed =
                sql::observe_principal(server.client(), object_id, &desired.login).await?;
            if let Some(login) = &observed.login {
                observed.present =
                    sql::observe_grants(db.client(), login, &desired.grantables, Held::Directly)
                        .await?;
            }
            plan_grant(&desired, &observed)
                .map_err(|c: Conflict| BackendError::new(Reason::RoleConflict, c.to_string()))?
        };
        self.run(&steps).await
    }

    /// ARM's half of the preflight: the operator is one of the server's Entra administrators,
    /// under `adminRole`. Before any sign-in, whose refusal could not say why.
    async fn check_administrator(&self, server_id: &str) -> Result<(), BackendError> {
        let (object_id, tenant_id) = self.clients.operator_identity().await?;
        let seen = self.clients.servers().administrators(server_id).await?;
        admins::decide(
            server_id,
            &self.target.admin_role,
            &object_id,
            &tenant_id,
            &seen,
        )
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
}

#[async_trait::async_trait]
impl Backend for PostgresBackend {
    fn kind(&self) -> &'static str {
        "postgres"
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
        if self.grantables(&access.role).is_none() {
            return Err(self.undeclared(&access.role));
        }
        let database = self
            .database()
            .map_err(|e| BackendError::new(Reason::InvalidSpec, e.message))?;
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
        Ok(Holding {
            id: holding_id(&self.store(), &access.role, &access.principal_id),
            principal_id: access.principal_id.to_ascii_lowercase(),
            role_id: access.role.clone(),
            scope: database.to_string(),
        })
    }

    async fn prepare(&self) -> Result<String, BackendError> {
        let database = self.database()?;
        for name in [database, self.target.admin_role.as_str()] {
            if let Some(problem) = identifier_problem(name) {
                return Err(BackendError::new(
                    Reason::InvalidSpec,
                    format!("{name:?} {problem}"),
                ));
            }
        }
        if let Some(server_id) = &self.target.server_resource_id {
            self.check_administrator(server_id).await?;
        }
        let member_of: BTreeSet<String> = self
            .target
            .roles
            .values()
            .flat_map(|r| r.member_of.iter().cloned())
            .collect();
        let table_privileges: BTreeSet<(String, TablePrivilege)> = self
            .target
            .roles
            .values()
            .flat_map(|r| &r.schemas)
            .flat_map(|s| s.privileges.iter().map(|p| (s.schema.clone(), *p)))
            .collect();
        let recorded = {
            let (server, db) = self.sessions().await?;
            let problems = sql::preflight(
                server.client(),
                db.client(),
                &self.target.admin_role,
                &member_of,
                &table_privileges,
            )
            .await?;
            if !problems.is_empty() {
                return Err(BackendError::new(
                    Reason::TargetNotPrepared,
                    problems.join("; "),
                ));
            }
            sql::recorded_logins(server.client()).await?
        };
        // What the target's roles mean may have changed: bring every recorded holding in
        // this database to the current meaning (memberships added, dropped ones revoked).
        for (_, object_id, record) in recorded {
            let Some(roles) = record.grants.get(database) else {
                continue;
            };
            for role in roles.keys() {
                if self.grantables(role).is_some() {
                    self.converge(&object_id, role).await?;
                }
            }
        }
        Ok(store_id(&self.target.server, self.target.port, database))
    }

    async fn list_owned(&self) -> Result<Vec<Holding>, BackendError> {
        let database = self.database()?;
        let (server, db) = self.sessions().await?;
        let mut owned = Vec::new();
        for (login, object_id, record) in sql::recorded_logins(server.client()).await? {
            let Some(roles) = record.grants.get(database) else {
                continue;
            };
            let everything: BTreeSet<Grantable> = roles.values().flatten().cloned().collect();
            let present =
                sql::observe_grants(db.client(), &login, &everything, Held::Directly).await?;
            for (role, grantables) in roles {
                // Drift (a membership revoked by hand) shows as the holding being absent.
                if grantables.is_subset(&present) {
                    owned.push(Holding {
                        id: holding_id(&self.store(), role, &object_id),
                        principal_id: object_id.clone(),
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
                format!("{} is not a PostgreSQL holding id", holding.id),
            ));
        };
        self.converge(&id.object_id, &id.role).await
    }

    async fn revoke(&self, holding_id: &str) -> Result<bool, BackendError> {
        let Some(id) = parse_holding_id(holding_id) else {
            return Ok(false);
        };
        if !crate::backend::same_store(&id.store, &self.store()) {
            return Ok(false);
        }
        let steps = {
            let (server, db) = self.sessions().await?;
            let mut observed =
                sql::observe_principal(server.client(), &id.object_id, &login_name(&id.object_id))
                    .await?;
            if let (Some(login), Some(record)) = (&observed.login, &observed.record) {
                let recorded = record
                    .entry(&id.database, &id.role)
                    .cloned()
                    .unwrap_or_default();
                observed.present =
                    sql::observe_grants(db.client(), login, &recorded, Held::Directly).await?;
            }
            plan_revoke(&id.database, &id.role, &observed)
        };
        let revoked = steps
            .iter()
            .any(|s| matches!(s, Step::WriteRecord { .. } | Step::DropRole { .. }));
        self.run(&steps).await?;
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
        let login = {
            let server = self.session(SERVER_DATABASE).await?;
            let wanted = login_name(&access.principal_id);
            sql::observe_principal(server.client(), &access.principal_id, &wanted)
                .await?
                .login
        };
        let Some(login) = login else {
            return Ok(false);
        };
        // The workload's own token, as the workload would sign in: nothing of the operator's.
        let client = match self
            .clients
            .connect(
                &self.target.server,
                self.target.port,
                &login,
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
        sql::has_all(&client, &grantables).await
    }

    fn token_scope(&self) -> TokenScope {
        TokenScope::PostgreSql
    }

    fn verifies_access(&self) -> bool {
        self.target.verify_access
    }

    async fn remove_target_owned(
        &self,
        _in_use_by: &[Holding],
    ) -> Result<Vec<String>, BackendError> {
        // The platform's roles are the platform's: a target owns nothing in the database.
        Ok(Vec::new())
    }

    fn describe_holding(&self, holding: &Holding) -> String {
        match super::parse_holding_id(&holding.id) {
            Some(made) => format!(
                "login role {} (Entra object id {}) in database {} on {}",
                super::login_name(&made.object_id),
                made.object_id,
                made.database,
                self.target.server
            ),
            None => format!("access {}", holding.id),
        }
    }

    fn describe_scope(&self, access: &Access) -> String {
        format!(
            "database {} as role {}",
            self.target.database.as_deref().unwrap_or_default(),
            login_name(&access.principal_id)
        )
    }
}
