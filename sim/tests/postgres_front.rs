//! The PostgreSQL stand-in held to a real client not written here: `psql` signs in through the
//! token-checking front with an Entra token from azure-sim, over verified TLS, and the real
//! server enforces what the role may do.

use std::process::Command;

use dbgrant_sim::azure::{AzureSim, AzureSimConfig};
use dbgrant_sim::postgres::{AUDIENCE, RealPostgres};

async fn token(azure: &AzureSim, client_id: &str, secret: &str) -> String {
    let http = dbgrant_sim::tls::https_client(&azure.ca_pem()).unwrap();
    let url = format!(
        "{}{}/oauth2/v2.0/token",
        azure.authority_host(),
        azure.tenant_id()
    );
    let scope = format!("{AUDIENCE}/.default");
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", client_id)
        .append_pair("client_secret", secret)
        .append_pair("grant_type", "client_credentials")
        .append_pair("scope", &scope)
        .finish();
    let reply: serde_json::Value = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["access_token"].as_str().expect("token").to_string()
}

fn psql(port: u16, ca: &std::path::Path, user: &str, password: &str, sql: &str) -> (bool, String) {
    let out = Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env(
            "PGOPTIONS",
            "",
        )
        .arg(format!(
            "host=localhost port={port} dbname=postgres user={user} sslmode=verify-full sslrootcert={}",
            ca.display()
        ))
        .env("PGPASSWORD", password)
        .output()
        .expect("psql runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_signs_in_with_an_entra_token_and_a_read_only_role_cannot_insert() {
    if RealPostgres::binaries().is_none() || Command::new("psql").arg("--version").output().is_err()
    {
        dbgrant_sim::prerequisite_missing(
            "PostgreSQL (the postgresql Debian package) is not installed",
        );
        return;
    }
    let pg = tokio::task::spawn_blocking(RealPostgres::start)
        .await
        .unwrap()
        .unwrap();
    let azure = AzureSim::start(AzureSimConfig::default()).await.unwrap();
    let app = azure.create_service_principal("orders-api");
    let other = azure.create_service_principal("someone-else");
    // The workload's login role, mapped to its object id; read-only on one table.
    pg.psql(
        "postgres",
        &format!(
            "SELECT pgaadauth_create_principal_with_oid('orders-api', '{}', 'service', false, false); \
             CREATE TABLE items (id int); INSERT INTO items VALUES (1); GRANT SELECT ON items TO \"orders-api\";",
            app.principal_id
        ),
    )
    .unwrap();
    let verifier = {
        let azure_check = AzureSimVerifier::new(&azure);
        pg.token_check(move |t| azure_check.verify(t))
    };
    let front = pg.front(verifier).await.unwrap();
    let ca = pg.socket_dir().join("front-ca.pem");
    std::fs::write(&ca, &front.ca_pem).unwrap();

    let good = token(&azure, &app.client_id, &app.client_secret).await;
    let (ok, out) = psql(
        front.port,
        &ca,
        "orders-api",
        &good,
        "SELECT current_user, count(*) FROM items",
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "orders-api|1");

    let (ok, out) = psql(
        front.port,
        &ca,
        "orders-api",
        &good,
        "INSERT INTO items VALUES (2)",
    );
    assert!(!ok && out.contains("permission denied"), "{out}");

    let foreign = token(&azure, &other.client_id, &other.client_secret).await;
    let (ok, out) = psql(front.port, &ca, "orders-api", &foreign, "SELECT 1");
    assert!(
        !ok && out.contains("password authentication failed for user \"orders-api\""),
        "{out}"
    );

    let expired = azure
        .sign_token(&serde_json::json!({
            "aud": AUDIENCE, "iss": format!("https://sts.windows.net/{}/", azure.tenant_id()),
            "oid": app.principal_id, "exp": 1_000, "nbf": 0, "iat": 0
        }))
        .unwrap();
    let (ok, out) = psql(front.port, &ca, "orders-api", &expired, "SELECT 1");
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );
}

/// azure-sim's own check of its tokens, shared with the front's thread.
struct AzureSimVerifier(dbgrant_sim::postgres::TokenCheck);

impl AzureSimVerifier {
    fn new(azure: &AzureSim) -> Self {
        let state = azure.verifier_for(AUDIENCE);
        Self(state)
    }

    fn verify(&self, token: &str) -> anyhow::Result<serde_json::Value> {
        (self.0)(token)
    }
}
