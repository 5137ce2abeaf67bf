//! The SQL stand-in held to a TDS client not written here: Microsoft's mssql-python with its
//! bundled ODBC Driver 18 for SQL Server, signing in with an Entra access token
//! (`SQL_COPT_SS_ACCESS_TOKEN`) over TDS 8 strict, verifying the stand-in's certificate
//! chain and name with the system's OpenSSL. It proves the stand-in's PRELOGIN, TLS, LOGIN7
//! FEDAUTH, LOGINACK, result sets and ERROR tokens are what Microsoft's driver accepts, not
//! only what tiberius accepts.
//!
//! The Python comes from `DBGRANT_PYTHON` (scripts/test installs mssql-python into its
//! venv); without one that can import mssql_python the test says so and skips (with
//! `CI=true` it fails).

use std::path::Path;
use std::sync::Arc;

use dbgrant_sim::jwt::{SigningKey, now_secs};
use dbgrant_sim::sql::statements::Shape;
use dbgrant_sim::sql::{AUDIENCE, AUDIENCES, SqlServer};
use serde_json::{Value, json};
use uuid::Uuid;

/// A Python that can import mssql_python, or `None` (said why) when there is none.
fn python() -> Option<String> {
    let python = std::env::var("DBGRANT_PYTHON").unwrap_or_else(|_| "python3".into());
    // Importing is not enough: the bundled ODBC driver, loaded at the first connect, needs
    // libltdl (Debian's libltdl7).
    let probe = "import ctypes, mssql_python; ctypes.CDLL('libltdl.so.7')";
    let ok = std::process::Command::new(&python)
        .args(["-c", probe])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        dbgrant_sim::prerequisite_missing(&format!(
            "the external TDS client test needs mssql-python: {python} cannot import mssql_python \
             (scripts/test installs it into its venv, with Debian's libltdl7 for the ODBC driver)"
        ));
        return None;
    }
    Some(python)
}

struct Setup {
    server: SqlServer,
    key: Arc<SigningKey>,
    issuer: String,
    admin: Uuid,
    ca_file: tempfile_path::Path,
}

/// A file removed when dropped (the CA PEM handed to OpenSSL).
mod tempfile_path {
    pub struct Path(pub std::path::PathBuf);
    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Setup {
    async fn start() -> Self {
        let key = Arc::new(SigningKey::generate().unwrap());
        let issuer = format!("https://sts.windows.net/{}/", Uuid::new_v4());
        let (k, i) = (key.clone(), issuer.clone());
        let server = SqlServer::start(Arc::new(move |token: &str| {
            Ok(k.verify(token, Some(&AUDIENCES), Some(&i))?)
        }))
        .await
        .unwrap();
        server.create_database("appdb");
        let admin = Uuid::new_v4();
        server.set_entra_admin("dbgrant-operator", admin);
        let ca_file = std::env::temp_dir().join(format!("dbgrant-sql-ca-{}.pem", Uuid::new_v4()));
        std::fs::write(&ca_file, &server.ca_pem).unwrap();
        Self {
            server,
            key,
            issuer,
            admin,
            ca_file: tempfile_path::Path(ca_file),
        }
    }

    fn token(&self, client_id: Uuid, lifetime: i64) -> String {
        let now = now_secs();
        self.key
            .sign(
                &json!({"aud": AUDIENCE, "iss": self.issuer, "nbf": now - 1, "exp": now + lifetime,
                "appid": client_id.to_string(), "oid": Uuid::new_v4().to_string()}),
            )
            .unwrap()
    }

    /// Run the client with `token` and `statements` ([text, [params]] each).
    async fn client(&self, python: &str, token: &str, statements: Value) -> Value {
        self.client_trusting(python, token, statements, &self.ca_file.0)
            .await
    }

    /// The same, the client trusting the CAs in `ca_file` only.
    async fn client_trusting(
        &self,
        python: &str,
        token: &str,
        statements: Value,
        ca_file: &Path,
    ) -> Value {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sql/mssql_client.py");
        let output = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            tokio::process::Command::new(python)
                .arg(script)
                .arg(self.server.port.to_string())
                .arg("appdb")
                .arg(statements.to_string())
                .env("DBGRANT_SQL_TOKEN", token)
                .env("SSL_CERT_FILE", ca_file)
                .output(),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the client hung: {:?} {:?}",
                self.server.sign_ins(),
                self.server.statements()
            )
        })
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "client output is not JSON ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_driver_signs_in_with_a_token_over_tds8_strict_and_runs_statements() {
    let Some(python) = python() else { return };
    let setup = Setup::start().await;
    let token = setup.token(setup.admin, 600);
    let out = setup
        .client(
            &python,
            &token,
            json!([
                // A batch without parameters (sent as a SQL batch).
                [Shape::Preflight.text(), []],
                // Anything else is refused, as the stand-in promises.
                ["SELECT 1", []],
            ]),
        )
        .await;
    assert_eq!(out["connected"], true, "{out}");
    assert_eq!(
        out["results"][0]["rows"],
        json!([[1, 1, "dbgrant-operator", "appdb"]]),
        "{out}"
    );
    let refused = out["results"][1]["error"].as_str().unwrap_or_default();
    assert!(refused.contains("not one of them"), "{out}");
    let statements = setup.server.statements();
    assert_eq!(statements[0].shape, Some(Shape::Preflight));
    assert_eq!(statements[0].identity, setup.admin.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_driver_reports_a_refused_token_as_login_failed_18456() {
    let Some(python) = python() else { return };
    let setup = Setup::start().await;
    for token in [
        setup.token(Uuid::new_v4(), 600),
        setup.token(setup.admin, -60),
    ] {
        let out = setup.client(&python, &token, json!([])).await;
        assert_eq!(out["connected"], false, "{out}");
        let error = out["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("Login failed for user '<token-identified principal>'"),
            "{out}"
        );
    }
    // A server whose certificate chains to a CA the client does not trust: refused in the
    // TLS handshake, before any TDS byte (the stand-in saw no sign-in).
    let other = dbgrant_sim::tls::TlsMaterial::generate("someone else").unwrap();
    let other_ca = tempfile_path::Path(
        std::env::temp_dir().join(format!("dbgrant-sql-other-ca-{}.pem", Uuid::new_v4())),
    );
    std::fs::write(&other_ca.0, &other.ca_pem).unwrap();
    let token = setup.token(setup.admin, 600);
    let out = setup
        .client_trusting(&python, &token, json!([]), &other_ca.0)
        .await;
    assert_eq!(out["connected"], false, "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap_or_default()
            .contains("certificate verify failed"),
        "{out}"
    );
    let sign_ins = setup.server.sign_ins();
    assert_eq!(sign_ins.len(), 2);
    assert!(
        sign_ins.iter().all(|s| s.error == Some(18456)),
        "{sign_ins:?}"
    );
}
