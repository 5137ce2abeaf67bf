//! A stand-in for Azure Database for PostgreSQL flexible server around a real PostgreSQL.
//!
//! - `RealPostgres` runs Debian's PostgreSQL from a temporary `initdb`, listening on a Unix
//!   socket only (trust authentication there: only this process reaches it), and installs
//!   STAND-INS for Azure's `pgaadauth_create_principal_with_oid` and
//!   `pgaadauth_list_principals` with their documented signatures, recording the Entra
//!   mapping (role → object id) in a table instead of a security label.
//! - `front.rs` is the only TCP entry: it speaks PostgreSQL's startup and cleartext-password
//!   exchange over TLS, checks the password as an Entra token (signature, the `ossrdbms-aad`
//!   audience, expiry, its `oid` mapped to the requested role), then passes the session
//!   through to the real server as that role.

mod front;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};

pub use front::{Front, TokenCheck};

/// Audience of Azure Database for PostgreSQL tokens (public cloud).
pub const AUDIENCE: &str = "https://ossrdbms-aad.database.windows.net";

/// The stub pgaadauth functions (a STAND-IN for Azure's extension, same signatures).
const STUBS: &str = r#"
CREATE ROLE azure_pg_admin NOLOGIN;
-- STAND-IN: Azure keeps this mapping in a security label; a table does here.
CREATE TABLE public.dbgrant_sim_pgaadauth (
    rolname name PRIMARY KEY, objectid text NOT NULL, principaltype text NOT NULL,
    isadmin boolean NOT NULL, ismfa boolean NOT NULL);
-- STAND-IN for pgaadauth_create_principal_with_oid(roleName, objectId, objectType, isAdmin, isMfa).
CREATE FUNCTION public.pgaadauth_create_principal_with_oid(
    roleName text, objectId text, objectType text, isAdmin boolean, isMfa boolean)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    IF objectType NOT IN ('user', 'group', 'service') THEN
        RAISE EXCEPTION 'objectType must be user, group or service' USING ERRCODE = '22023';
    END IF;
    EXECUTE format('CREATE ROLE %I LOGIN', roleName);
    INSERT INTO public.dbgrant_sim_pgaadauth VALUES (roleName, objectId, objectType, isAdmin, isMfa)
        ON CONFLICT (rolname) DO UPDATE SET objectid = EXCLUDED.objectid,
            principaltype = EXCLUDED.principaltype, isadmin = EXCLUDED.isadmin, ismfa = EXCLUDED.ismfa;
    IF isAdmin THEN
        EXECUTE format('GRANT azure_pg_admin TO %I', roleName);
        EXECUTE format('ALTER ROLE %I CREATEROLE CREATEDB', roleName);
    END IF;
    RETURN 'Created role for ' || roleName;
END $$;
-- STAND-IN for pgaadauth_list_principals(isAdminValue).
CREATE FUNCTION public.pgaadauth_list_principals(isAdminValue boolean)
RETURNS TABLE(rolname name, principalType text, objectId text, tenantId text, isMfa integer, isAdmin integer)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT p.rolname, p.principaltype, p.objectid, ''::text, p.ismfa::int, p.isadmin::int
    FROM public.dbgrant_sim_pgaadauth p JOIN pg_roles r ON r.rolname = p.rolname
    WHERE NOT isAdminValue OR p.isadmin
$$;
"#;

/// A running PostgreSQL in a temporary directory; stopped (fast) and removed when dropped.
pub struct RealPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_user: Option<&'static str>,
}

impl RealPostgres {
    /// The directory of Debian's PostgreSQL server binaries, if installed.
    pub fn binaries() -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
            .collect();
        found.sort();
        found.pop()
    }

    /// `initdb` a fresh cluster and start it on a Unix socket, with the pgaadauth stand-ins in
    /// the `postgres` database. As root, the server runs as the `postgres` user (it refuses
    /// root).
    ///
    /// # Errors
    /// When PostgreSQL is not installed or does not start.
    pub fn start() -> anyhow::Result<Self> {
        let Some(bin) = Self::binaries() else {
            bail!("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin");
        };
        let dir =
            std::env::temp_dir().join(format!("dbgrant-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")?;
        let as_user = root.then_some("postgres");
        if root {
            let status = Command::new("chown").arg("postgres").arg(&dir).status()?;
            anyhow::ensure!(status.success(), "chown of {} failed", dir.display());
        }
        // A free port number names the socket file; nothing listens on TCP.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let pg = Self {
            bin,
            dir,
            port,
            as_user,
        };
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-c listen_addresses='' -k {} -p {port} -c fsync=off",
            pg.dir.display()
        );
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &options,
                "-l",
                &pg.dir.join("log").to_string_lossy(),
                "-w",
                "start",
            ],
        )?;
        pg.psql("postgres", STUBS)?;
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run `sql` as the superuser in `database` (with psql, stopping at the first error);
    /// returns its unaligned, tuples-only output.
    ///
    /// # Errors
    /// When psql reports an error.
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &self.socket_dir().to_string_lossy(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
        )
    }

    /// Directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The server's port (names its socket file).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket file.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(format!(".s.PGSQL.{}", self.port))
    }

    /// Make `role` an Entra admin mapped to `object_id`, as Azure does for the server's
    /// Microsoft Entra administrators.
    ///
    /// # Errors
    /// When the stand-in refuses (the role exists).
    pub fn create_entra_admin(&self, role: &str, object_id: &str) -> anyhow::Result<()> {
        self.psql(
            "postgres",
            &format!(
                "SELECT pgaadauth_create_principal_with_oid({}, {}, 'service', true, false)",
                literal(role),
                literal(object_id)
            ),
        )?;
        Ok(())
    }

    /// A token check for the front: `verify` checks signature, audience and expiry; the
    /// object id must be the one the stand-in maps to the requested role.
    pub fn token_check(
        &self,
        verify: impl Fn(&str) -> anyhow::Result<serde_json::Value> + Send + Sync + 'static,
    ) -> TokenCheck {
        Arc::new(verify)
    }

    /// Start the token-checking TLS front on 127.0.0.1.
    ///
    /// # Errors
    /// When the port cannot be bound or TLS material cannot be made.
    pub async fn front(&self, check: TokenCheck) -> anyhow::Result<Front> {
        self.front_on(check, 0).await
    }

    /// Start the front on 127.0.0.1:`port` (0: a free one).
    ///
    /// # Errors
    /// When the port cannot be bound or TLS material cannot be made.
    pub async fn front_on(&self, check: TokenCheck, port: u16) -> anyhow::Result<Front> {
        Front::start(
            self.socket_path(),
            self.socket_dir().to_path_buf(),
            self.port,
            check,
            port,
        )
        .await
    }
}

/// A SQL string literal (for the superuser's own setup statements).
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl Drop for RealPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "-t",
                "10",
                "stop",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(50));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
