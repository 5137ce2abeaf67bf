//! The Azure simulator: Entra ID's token endpoint, managed identities with federated
//! credentials, Cosmos DB accounts with their RBAC (long-running writes, the per-account lock,
//! Azure's errors) and a minimal data plane, over HTTPS with its own CA.

pub mod arm;
pub mod dataplane;
pub mod entra;
pub mod errors;
pub mod faults;
pub mod operation;
pub mod rbac;
pub mod state;
pub mod throttle;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use faults::{AzureCounters, AzureFault, AzureFaults};
pub use operation::{AzureOperation, Family, OperationFilter, UnknownOperation, Verb};

use crate::jwt::SigningKey;
use crate::tls::{TlsMaterial, bind_loopback, serve_https};
use state::{Account, App, Identity, State};

/// Where the simulator serves its call counters as JSON ([`AzureCounters::to_json`]).
pub const COUNTERS_PATH: &str = "/_sim/counters";

/// The audience of ARM tokens this tenant issues.
pub const ARM_AUDIENCE: &str = "https://management.azure.com/";

/// How to start the simulator.
#[derive(Clone, Debug)]
pub struct AzureSimConfig {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// CAs trusted when fetching token issuers' OIDC discovery and JWKS (the Kubernetes
    /// simulator's CA).
    pub oidc_trusted_ca_pems: Vec<String>,
    /// Lifetime of the access tokens issued.
    pub access_token_lifetime: Duration,
    /// How long RBAC writes take to complete.
    pub lro_duration: Duration,
    /// ARM's token buckets (per subscription and principal).
    pub throttling: throttle::Throttling,
    /// Added to every ARM request (not Entra ID, not the data plane), as the network and
    /// ARM's front door would: benchmarks set it to see latency-bound behaviour.
    pub arm_latency: Duration,
}

impl Default for AzureSimConfig {
    fn default() -> Self {
        Self {
            port: 0,
            oidc_trusted_ca_pems: Vec::new(),
            access_token_lifetime: Duration::from_secs(3600),
            lro_duration: Duration::from_millis(300),
            throttling: throttle::Throttling::default(),
            arm_latency: Duration::ZERO,
        }
    }
}

/// An app registration the simulator knows (for `client_credentials` with a secret).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Object id of the service principal.
    pub principal_id: String,
}

/// A user-assigned managed identity.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityInfo {
    /// ARM id.
    pub resource_id: String,
    /// Client id.
    pub client_id: String,
    /// Principal (object) id.
    pub principal_id: String,
    /// Tenant id.
    pub tenant_id: String,
}

/// A Cosmos DB account.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CosmosAccount {
    /// ARM id.
    pub resource_id: String,
    /// Data-plane endpoint.
    pub document_endpoint: String,
}

/// A role assignment as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRoleAssignment {
    /// GUID.
    pub name: String,
    /// Full role definition id.
    pub role_definition_id: String,
    /// Scope.
    pub scope: String,
    /// Principal id.
    pub principal_id: String,
}

/// Everything a client needs to use the simulator; the binary writes it as JSON.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimState {
    /// Entra ID authority host.
    pub authority_host: String,
    /// ARM endpoint.
    pub arm_endpoint: String,
    /// CA certificate (PEM) to trust.
    pub ca_pem: String,
    /// The tenant.
    pub tenant_id: String,
    /// An administrator allowed to write everything.
    pub admin: ServicePrincipal,
    /// How to register identities.
    pub register_identities: String,
}

/// Control-plane roles that allow Cosmos DB RBAC writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlPlaneRole {
    /// "DocumentDB Account Contributor".
    DocumentDbAccountContributor,
    /// "Owner".
    Owner,
    /// "Reader" (the simulator does not tell roles apart: any role on a scope lets its holder act there).
    Reader,
}

/// What the handlers share.
pub struct Shared {
    state: Mutex<State>,
    /// `https://127.0.0.1:PORT/`.
    pub base_url: String,
    /// The tenant.
    pub tenant_id: String,
    /// Signing key of every token the tenant issues.
    pub key: SigningKey,
    /// Issuers' keys.
    pub oidc: entra::OidcCache,
    /// Faults and counters.
    pub faults: AzureFaults,
    /// Lifetime of issued tokens.
    pub access_token_lifetime: Duration,
    /// When each assignment reaches the data plane.
    pub effective_at: Mutex<HashMap<String, Instant>>,
    /// ARM's request throttling.
    pub throttle: throttle::Throttle,
    /// Latency added to every ARM request.
    pub arm_latency: Duration,
}

impl Shared {
    /// The state, locked. Never hold it across an await.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn create_identity_at(
        &self,
        resource_id: &str,
        name: &str,
        location: &str,
        client_id: Option<&str>,
    ) -> IdentityInfo {
        let delay = self.faults.lock().principal_delay;
        let identity = Identity {
            resource_id: resource_id.to_string(),
            name: name.to_string(),
            location: location.to_string(),
            client_id: client_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string),
            principal_id: uuid::Uuid::new_v4().to_string(),
            fics: Default::default(),
        };
        let mut state = self.state();
        if !delay.is_zero() {
            state
                .hidden_until
                .insert(identity.principal_id.clone(), Instant::now() + delay);
        }
        let info = IdentityInfo {
            resource_id: identity.resource_id.clone(),
            client_id: identity.client_id.clone(),
            principal_id: identity.principal_id.clone(),
            tenant_id: self.tenant_id.clone(),
        };
        state
            .identities
            .insert(resource_id.to_ascii_lowercase(), identity);
        info
    }

    /// Create a flexible server unless it exists; whether it existed.
    fn create_postgres_server_at(&self, resource_id: &str, name: &str, location: &str) -> bool {
        let mut state = self.state();
        let key = resource_id.to_ascii_lowercase();
        if state.postgres_servers.contains_key(&key) {
            return true;
        }
        state.postgres_servers.insert(
            key,
            state::PostgresServer {
                resource_id: resource_id.to_string(),
                name: name.to_string(),
                location: location.to_string(),
                fqdn: format!("{name}.postgres.database.azure.com"),
                administrators: Default::default(),
            },
        );
        false
    }

    /// Create a T-SQL server unless it exists; whether it existed.
    fn create_sql_server_at(
        &self,
        resource_id: &str,
        resource_type: &str,
        name: &str,
        location: &str,
    ) -> bool {
        let mut state = self.state();
        let key = resource_id.to_ascii_lowercase();
        if state.sql_servers.contains_key(&key) {
            return true;
        }
        state.sql_servers.insert(
            key,
            state::SqlServer {
                resource_id: resource_id.to_string(),
                resource_type: resource_type.to_string(),
                name: name.to_string(),
                location: location.to_string(),
                admin: None,
            },
        );
        false
    }

    fn create_account_at(&self, resource_id: &str, name: &str, location: &str) -> CosmosAccount {
        let mut state = self.state();
        let account = state
            .accounts
            .entry(resource_id.to_ascii_lowercase())
            .or_insert_with(|| Account {
                resource_id: resource_id.to_string(),
                name: name.to_string(),
                location: location.to_string(),
                endpoint: format!("{}cosmos/{name}/", self.base_url),
                definitions: Default::default(),
                assignments: Default::default(),
                busy: None,
            });
        CosmosAccount {
            resource_id: account.resource_id.clone(),
            document_endpoint: account.endpoint.clone(),
        }
    }
}

/// A running Azure simulator; stops when dropped or shut down.
pub struct AzureSim {
    shared: Arc<Shared>,
    ca_pem: String,
    admin: ServicePrincipal,
    shutdown: CancellationToken,
}

impl AzureSim {
    /// Start a simulator with one tenant and an administrator.
    ///
    /// # Errors
    /// When the port cannot be bound, a trusted CA does not parse, or keys cannot be made.
    pub async fn start(config: AzureSimConfig) -> anyhow::Result<Self> {
        let tls = TlsMaterial::generate("azure-sim")?;
        let listener = bind_loopback(config.port).await?;
        let address = listener.local_addr().context("local address")?;
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            base_url: format!("https://{address}/"),
            tenant_id: uuid::Uuid::new_v4().to_string(),
            key: SigningKey::generate()?,
            oidc: entra::OidcCache::new(&config.oidc_trusted_ca_pems)?,
            faults: AzureFaults::new(config.lro_duration),
            access_token_lifetime: config.access_token_lifetime,
            effective_at: Mutex::default(),
            throttle: throttle::Throttle::new(config.throttling),
            arm_latency: config.arm_latency,
        });
        let shutdown = CancellationToken::new();
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let stop = shutdown.clone();
        let ca_pem = tls.ca_pem.clone();
        tokio::spawn(async move { serve_https(listener, &tls, router, stop).await });
        let mut sim = Self {
            shared,
            ca_pem,
            admin: ServicePrincipal {
                client_id: String::new(),
                client_secret: String::new(),
                principal_id: String::new(),
            },
            shutdown,
        };
        let admin = sim.create_service_principal("dbgrant-sim-admin");
        sim.shared
            .state()
            .control_plane
            .push((admin.principal_id.clone(), "/".into()));
        sim.admin = admin;
        Ok(sim)
    }

    /// Entra ID authority host: the token endpoint is `{authority}{tenant}/oauth2/v2.0/token`.
    pub fn authority_host(&self) -> String {
        self.shared.base_url.clone()
    }

    /// ARM endpoint.
    pub fn arm_endpoint(&self) -> String {
        self.shared.base_url.clone()
    }

    /// CA certificate (PEM) of the simulator's HTTPS.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Check an access token this simulator issued for `audience`: signature, expiry,
    /// audience and issuer. Returns its claims.
    ///
    /// # Errors
    /// When the token is forged, expired or for another audience.
    pub fn verify_access_token(
        &self,
        token: &str,
        audience: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let issuer = format!("https://sts.windows.net/{}/", self.shared.tenant_id);
        Ok(self
            .shared
            .key
            .verify(token, Some(&[audience]), Some(&issuer))?)
    }

    /// A check of this simulator's access tokens for `audience` that outlives borrowing it
    /// (for the PostgreSQL front).
    pub fn verifier_for(&self, audience: &str) -> crate::postgres::TokenCheck {
        let shared = self.shared.clone();
        let audience = audience.to_string();
        Arc::new(move |token: &str| {
            let issuer = format!("https://sts.windows.net/{}/", shared.tenant_id);
            Ok(shared
                .key
                .verify(token, Some(&[audience.as_str()]), Some(&issuer))?)
        })
    }

    /// A check of this simulator's access tokens for any of `audiences` (Azure SQL's tokens
    /// are for `https://database.windows.net/`, with or without the slash).
    pub fn verifier_for_any(&self, audiences: &[&str]) -> crate::postgres::TokenCheck {
        let shared = self.shared.clone();
        let audiences: Vec<String> = audiences.iter().map(|a| a.to_string()).collect();
        Arc::new(move |token: &str| {
            let issuer = format!("https://sts.windows.net/{}/", shared.tenant_id);
            let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
            Ok(shared.key.verify(token, Some(&audiences), Some(&issuer))?)
        })
    }

    /// Sign `claims` with the simulator's Entra key (tests: expired or foreign tokens).
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign_token(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        self.shared.key.sign(claims)
    }

    /// The tenant.
    pub fn tenant_id(&self) -> String {
        self.shared.tenant_id.clone()
    }

    /// The administrator, allowed to write everything.
    pub fn admin(&self) -> ServicePrincipal {
        self.admin.clone()
    }

    /// Everything a client needs, as the binary writes it.
    pub fn state(&self) -> SimState {
        SimState {
            authority_host: self.authority_host(),
            arm_endpoint: self.arm_endpoint(),
            ca_pem: self.ca_pem(),
            tenant_id: self.tenant_id(),
            admin: self.admin(),
            register_identities: "PUT {armEndpoint}subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}?api-version=2024-11-30, then PUT .../federatedIdentityCredentials/{fic} with the issuer, subject and audience, as the administrator".into(),
        }
    }

    /// Register an app with a client secret (it has no Azure roles yet).
    pub fn create_service_principal(&self, display_name: &str) -> ServicePrincipal {
        let _ = display_name;
        let app = App {
            client_id: uuid::Uuid::new_v4().to_string(),
            secret: uuid::Uuid::new_v4().simple().to_string(),
            principal_id: uuid::Uuid::new_v4().to_string(),
        };
        let sp = ServicePrincipal {
            client_id: app.client_id.clone(),
            client_secret: app.secret.clone(),
            principal_id: app.principal_id.clone(),
        };
        self.shared.state().apps.insert(app.client_id.clone(), app);
        sp
    }

    /// Create a user-assigned managed identity.
    pub fn create_identity(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
    ) -> IdentityInfo {
        self.create_identity_with_client_id(subscription, resource_group, name, None)
    }

    /// Create a user-assigned managed identity with a chosen client id (as the examples name).
    pub fn create_identity_with_client_id(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        client_id: Option<&str>,
    ) -> IdentityInfo {
        let id = format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        );
        self.shared
            .create_identity_at(&id, name, "westeurope", client_id)
    }

    /// Add a federated credential to an identity.
    ///
    /// # Errors
    /// When the identity does not exist.
    pub fn add_federated_credential(
        &self,
        identity_resource_id: &str,
        name: &str,
        issuer: &str,
        subject: &str,
        audiences: &[&str],
    ) -> anyhow::Result<()> {
        let mut state = self.shared.state();
        let identity = state
            .identities
            .get_mut(&identity_resource_id.to_ascii_lowercase())
            .context("no such identity")?;
        identity.fics.insert(
            name.to_string(),
            state::Fic {
                issuer: issuer.into(),
                subject: subject.into(),
                audiences: audiences.iter().map(|a| (*a).to_string()).collect(),
            },
        );
        Ok(())
    }

    /// Create a Cosmos DB account.
    pub fn create_cosmos_account(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
    ) -> CosmosAccount {
        let id = format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.DocumentDB/databaseAccounts/{name}"
        );
        self.shared.create_account_at(&id, name, "westeurope")
    }

    /// Create an Azure Database for PostgreSQL flexible server (its ARM resource; the server
    /// itself is `crate::postgres::RealPostgres`). Returns its ARM id.
    pub fn create_postgres_server(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
    ) -> String {
        let id = format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.DBforPostgreSQL/flexibleServers/{name}"
        );
        self.shared
            .create_postgres_server_at(&id, name, "westeurope");
        id
    }

    /// Create a T-SQL server's ARM resource (the engine is `crate::sql::SqlServer`):
    /// `resource_type` is `Microsoft.Sql/servers`, `Microsoft.Sql/managedInstances` or
    /// `Microsoft.Synapse/workspaces`. Returns its ARM id.
    pub fn create_sql_server(
        &self,
        subscription: &str,
        resource_group: &str,
        resource_type: &str,
        name: &str,
    ) -> String {
        let id = format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{resource_type}/{name}"
        );
        self.shared
            .create_sql_server_at(&id, resource_type, name, "westeurope");
        id
    }

    /// Set a T-SQL server's Microsoft Entra admin, as `az sql server ad-admin create` does
    /// (`sid`: the admin's object id, or an application's client id).
    ///
    /// # Errors
    /// When the server does not exist.
    pub fn set_sql_admin(&self, server_id: &str, login: &str, sid: &str) -> anyhow::Result<()> {
        let tenant = self.tenant_id();
        let mut state = self.shared.state();
        let server = state
            .sql_servers
            .get_mut(&server_id.to_ascii_lowercase())
            .context("no such SQL server")?;
        server.admin = Some(state::SqlAdmin {
            login: login.into(),
            sid: sid.to_ascii_lowercase(),
            tenant_id: tenant,
            azure_ad_only: true,
        });
        Ok(())
    }

    /// Add a Microsoft Entra administrator to a flexible server, as `az postgres flexible-server
    /// microsoft-entra-admin create` does on its ARM side.
    ///
    /// # Errors
    /// When the server does not exist.
    pub fn add_postgres_administrator(
        &self,
        server_id: &str,
        object_id: &str,
        principal_name: &str,
        principal_type: &str,
    ) -> anyhow::Result<()> {
        let tenant = self.tenant_id();
        let mut state = self.shared.state();
        let server = state
            .postgres_servers
            .get_mut(&server_id.to_ascii_lowercase())
            .context("no such flexible server")?;
        server.administrators.insert(
            object_id.to_ascii_lowercase(),
            (principal_type.into(), principal_name.into(), tenant),
        );
        Ok(())
    }

    /// Give a principal a control-plane role on a scope (an account, a resource group, ...).
    pub fn assign_control_plane_role(
        &self,
        principal_id: &str,
        scope: &str,
        role: ControlPlaneRole,
    ) {
        let _ = role;
        self.shared.state().control_plane.push((
            principal_id.to_string(),
            scope.trim_end_matches('/').to_ascii_lowercase(),
        ));
    }

    /// The account's role assignments, read directly.
    pub fn role_assignments(&self, account_resource_id: &str) -> Vec<SimRoleAssignment> {
        let mut state = self.shared.state();
        state.settle(Instant::now());
        state
            .accounts
            .get(&account_resource_id.to_ascii_lowercase())
            .map(|a| {
                a.assignments
                    .iter()
                    .map(|(name, body)| SimRoleAssignment {
                        name: name.clone(),
                        role_definition_id: body["properties"]["roleDefinitionId"]
                            .as_str()
                            .unwrap_or_default()
                            .into(),
                        scope: body["properties"]["scope"]
                            .as_str()
                            .unwrap_or_default()
                            .into(),
                        principal_id: body["properties"]["principalId"]
                            .as_str()
                            .unwrap_or_default()
                            .into(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Delete an assignment behind the operator's back (drift).
    pub fn delete_role_assignment_out_of_band(
        &self,
        account_resource_id: &str,
        name: &str,
    ) -> bool {
        let mut state = self.shared.state();
        state
            .accounts
            .get_mut(&account_resource_id.to_ascii_lowercase())
            .is_some_and(|a| a.assignments.remove(&name.to_ascii_lowercase()).is_some())
    }

    /// Fault injection.
    pub fn faults(&self) -> AzureFaults {
        self.shared.faults.clone()
    }

    /// Calls so far, by operation and result.
    pub fn counters(&self) -> AzureCounters {
        self.shared.faults.counters()
    }

    /// Stop serving.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        tokio::task::yield_now().await;
    }
}

impl Drop for AzureSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    // Not an Azure API: the counters, for a benchmark driving the simulator as a process.
    // Answered before counting so reading them does not change them.
    if path == COUNTERS_PATH && method == Method::GET {
        return axum::Json(shared.faults.counters().to_json()).into_response();
    }
    let operation = AzureOperation::of(&method, &path);
    if !shared.arm_latency.is_zero()
        && !matches!(operation.family(), Family::Entra | Family::DataPlane)
    {
        tokio::time::sleep(shared.arm_latency).await;
    }
    if let Some(fault) = shared.faults.hit(operation) {
        if let Some(latency) = fault.latency {
            tokio::time::sleep(latency).await;
        }
        if fault.drop_connection {
            let mut response = axum::http::StatusCode::OK.into_response();
            response.extensions_mut().insert(crate::tls::DropConnection);
            return response;
        }
        if let Some(status) = fault.status {
            let mut error = errors::ArmError::new(
                status,
                match status {
                    429 => "TooManyRequests",
                    502 => "BadGateway",
                    503 => "ServiceUnavailable",
                    504 => "GatewayTimeout",
                    _ => "InternalServerError",
                },
                format!("Injected failure ({status})."),
            );
            error.retry_after = fault.retry_after;
            shared.faults.record(operation, status);
            let mut response = error.into_response();
            if status == 429 {
                response.headers_mut().insert(
                    "x-ms-ratelimit-remaining-subscription-writes",
                    axum::http::HeaderValue::from_static("0"),
                );
            }
            return response;
        }
    }
    let response = route(&shared, operation, &method, &path, &query, &headers, &body).await;
    shared.faults.record(operation, response.status().as_u16());
    response
}

/// Serve a request as the operation it was classified as (faults and counters saw the same).
async fn route(
    shared: &Shared,
    operation: AzureOperation,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (operation, segments.as_slice()) {
        (AzureOperation::EntraToken, [tenant, "oauth2", "v2.0", "token"])
            if *method == Method::POST =>
        {
            let form: HashMap<String, String> =
                url::form_urlencoded::parse(body).into_owned().collect();
            entra::token(shared, tenant, &form).await
        }
        (AzureOperation::DataPlaneRead, ["cosmos", account, rest @ ..])
            if *method == Method::GET =>
        {
            dataplane::read(shared, account, &rest.join("/"), headers)
        }
        (AzureOperation::EntraKeys, [tenant, "discovery", "v2.0", "keys"])
            if *method == Method::GET =>
        {
            if !tenant.eq_ignore_ascii_case(&shared.tenant_id) {
                return errors::ArmError::new(
                    400,
                    "invalid_tenant",
                    format!("Tenant '{tenant}' not found."),
                )
                .into_response();
            }
            axum::Json(shared.key.jwks()).into_response()
        }
        (_, ["subscriptions", ..]) => {
            let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
            arm::handle(shared, operation, method, path, query, authorization, body).await
        }
        _ => {
            errors::ArmError::new(404, "NotFound", format!("No route for {path}.")).into_response()
        }
    }
}
