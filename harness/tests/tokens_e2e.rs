//! End to end, token Secrets (`spec.tokenSecret`): the real operator against the simulators,
//! with Entra tokens a few minutes long so refreshes happen within a test. Tests that inject
//! faults, shorten tokens or count calls need the simulators and skip against a real
//! environment; the others run there too (`scripts/e2e-real-mode`).
//!
//! Every test captures the whole process's tracing output at TRACE and ends with the canary:
//! no token it saw in a Secret may appear in the logs, events, grant statuses or `/metrics`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dbgrant::api::{DatabaseAccessGrant, Reason};
use dbgrant::token;
use dbgrant_sim::azure::{AzureFault, AzureOperation as Op, Family, Verb};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use support::world::{World, WorldOptions, condition, is_ready};

/// Lifetime of the simulated Entra tokens in tests that watch refreshes.
const SHORT_LIFETIME: Duration = Duration::from_secs(700);
/// With [`SHORT_LIFETIME`], due 40 s after issue, which jitter moves to 36–40 s: above the 30 s
/// floor and below the 10-minute margin, so the jitter is not clamped away.
const REFRESH_BEFORE: &str = "11m";
/// The margin a refresh must keep: never later than this before expiry.
const MARGIN: SignedDuration = SignedDuration::from_secs(600);
/// How late after its `refresh-at` a refresh may land: the requeue plus one pass.
const ON_SCHEDULE: SignedDuration = SignedDuration::from_secs(3);
/// Longest wait for a refresh with [`SHORT_LIFETIME`] (due at most 40 s after issue).
const REFRESH_WAIT: Duration = Duration::from_secs(60);
const COSMOS_AUDIENCE: &str = "https://cosmos.azure.com";
/// A merge patch removing `spec.tokenSecret`, as a user would (`kubectl patch`).
const NO_TOKEN_SECRET: &str = r#"{"spec":{"tokenSecret":null}}"#;

fn short_lived() -> WorldOptions {
    WorldOptions {
        access_token_lifetime: SHORT_LIFETIME,
        ..WorldOptions::default()
    }
}

// --- the process's logs, at TRACE ---

/// Everything every tracing subscriber layer wrote, in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The test's hold on the capture: prints the operator's own log lines when the test fails
/// (the capture replaced the world's test writer).
struct Captured(Logs);

impl Captured {
    fn text(&self) -> String {
        self.0.text()
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for line in self.text().lines() {
                if line.contains(" dbgrant::") && !line.contains(" TRACE ") {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Capture every log line of the process at TRACE. Called before `World::start`, whose own
/// subscriber then stays out (nextest runs each test in its own process).
fn capture_logs() -> Captured {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = Logs::default();
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(logs.clone())
            .try_init()
            .expect("no subscriber was installed before");
        logs
    });
    Captured(logs.clone())
}

// --- tokens as the Secret holds them ---

fn base64url(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {c}"),
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from(acc >> bits).unwrap());
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A JWT's claims, read without checking its signature (the simulator checks that).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&base64url(payload)).expect("the payload is JSON")
}

fn data(secret: &Secret, key: &str) -> String {
    let bytes = &secret.data.as_ref().expect("data")[key].0;
    String::from_utf8(bytes.clone()).expect("utf-8")
}

/// A token Secret dbgrant wrote, read back.
#[derive(Clone, Debug)]
struct Held {
    token: String,
    claims: Value,
    issued_at: Timestamp,
    refresh_at: Timestamp,
    expires_at: Timestamp,
    fingerprint: String,
}

fn held(secret: &Secret) -> Held {
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let time = |key: &str| -> Timestamp {
        annotations
            .get(key)
            .unwrap_or_else(|| panic!("annotation {key}"))
            .parse()
            .unwrap()
    };
    let token = data(secret, token::TOKEN_KEY);
    Held {
        claims: claims(&token),
        token,
        issued_at: time(token::ISSUED_AT_ANNOTATION),
        refresh_at: time(token::REFRESH_AT_ANNOTATION),
        expires_at: time(token::EXPIRES_AT_ANNOTATION),
        fingerprint: annotations[token::FINGERPRINT_ANNOTATION].clone(),
    }
}

fn secrets(world: &World) -> Api<Secret> {
    Api::namespaced(world.client.clone(), world.team())
}

/// Wait until Secret `name` exists and `done` holds for it.
async fn wait_secret(
    world: &World,
    name: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&Secret) -> bool,
) -> Secret {
    let api = secrets(world);
    world
        .eventually(&format!("Secret {name}: {what}"), limit, || async {
            api.get_opt(name).await.ok().flatten().filter(|s| done(s))
        })
        .await
}

async fn wait_gone(world: &World, name: &str) {
    let api = secrets(world);
    world
        .eventually(
            &format!("Secret {name} is deleted"),
            Duration::from_secs(30),
            || async { matches!(api.get_opt(name).await, Ok(None)).then_some(()) },
        )
        .await;
}

/// Whether the grant's status was computed from its current generation.
fn current(grant: &DatabaseAccessGrant) -> bool {
    grant
        .status
        .as_ref()
        .is_some_and(|s| s.observed_generation == grant.metadata.generation)
}

// --- the canary ---

/// Every token a test saw; none may show up outside a Secret's data.
#[derive(Default)]
struct Canary(Mutex<BTreeSet<String>>);

impl Canary {
    fn saw(&self, held: &Held) {
        self.0.lock().unwrap().insert(held.token.clone());
    }

    /// The whole token and its signature (a token cut at its dots must not pass either).
    fn needles(&self) -> Vec<String> {
        let tokens = self.0.lock().unwrap().clone();
        let mut needles = Vec::new();
        for token in tokens {
            let signature = token.rsplit('.').next().unwrap_or_default().to_string();
            assert!(signature.len() > 20, "a signed token");
            needles.push(token);
            needles.push(signature);
        }
        needles
    }

    /// Look for every token seen in the logs, events, grant statuses and `/metrics`.
    async fn check(&self, world: &World, logs: &Captured) {
        // Tokens in Secrets still there count too, whether or not the test read them.
        let all: Api<Secret> = Api::all(world.client.clone());
        let managed = ListParams::default().labels("app.kubernetes.io/managed-by=dbgrant");
        for secret in all.list(&managed).await.unwrap().items {
            if secret.type_.as_deref() == Some(token::SECRET_TYPE) {
                self.saw(&held(&secret));
            }
        }
        let needles = self.needles();
        assert!(!needles.is_empty(), "the canary saw no token");
        let events: Api<Event> = Api::all(world.client.clone());
        let events =
            serde_json::to_string(&events.list(&ListParams::default()).await.unwrap()).unwrap();
        let grants: Api<DatabaseAccessGrant> = Api::all(world.client.clone());
        let statuses: Vec<_> = grants
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|g| g.status)
            .collect();
        let statuses = serde_json::to_string(&statuses).unwrap();
        let metrics = operator_metrics().await;
        assert!(
            metrics.contains("dbgrant_token_refreshes_total"),
            "the operator's /metrics was read: {metrics}"
        );
        let logs = logs.text();
        assert!(
            logs.contains("token Secret written"),
            "the operator's logs were captured"
        );
        for (place, text) in [
            ("logs", &logs),
            ("events", &events),
            ("statuses", &statuses),
            ("metrics", &metrics),
        ] {
            for needle in &needles {
                if let Some(at) = text.find(needle.as_str()) {
                    let line = text[..at].rsplit('\n').next().unwrap_or_default();
                    panic!(
                        "token bytes in the {place}: {}",
                        &line[..line.len().min(300)]
                    );
                }
            }
        }
    }
}

/// `/metrics` of the in-process operator: it listens on a port chosen at start, so try each
/// listening TCP socket of this process with plain HTTP (the simulators speak only TLS).
async fn operator_metrics() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(link) = std::fs::read_link(fd.path())
            && let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex; state 0A is LISTEN; field 9 is the inode.
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    let mut found = String::new();
    for port in ports {
        let scrape = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await?;
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).await?;
            std::io::Result::Ok(String::from_utf8_lossy(&reply).into_owned())
        };
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), scrape).await
            && reply.starts_with("HTTP/1.1 200")
            && reply.contains("dbgrant_")
        {
            found.push_str(&reply);
        }
    }
    found
}

/// A grant spec with a token Secret.
fn with_token(sa: &str, token_secret: Value) -> Value {
    json!({"serviceAccountName": sa, "role": "reader", "tokenSecret": token_secret})
}

// --- the tests ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_holds_the_workloads_token_and_is_refreshed_on_schedule_with_jitter() {
    let logs = capture_logs();
    let world = World::start("tok-refresh", short_lived()).await;
    let canary = Canary::default();
    let apps = ["a", "b", "c"];
    let mut principals = BTreeMap::new();
    for app in apps {
        let identity = world.workload(&format!("app-{app}")).await;
        principals.insert(app, identity.principal_id);
    }
    for app in apps {
        let spec = with_token(
            &format!("app-{app}"),
            json!({"name": format!("tok-{app}"), "refreshBefore": REFRESH_BEFORE,
                   "formats": ["CosmosAuthorizationHeader", "AzureCli"]}),
        );
        world.grant(&format!("g-{app}"), spec).await;
    }

    let mut first = BTreeMap::new();
    for app in apps {
        let grant = world.wait_ready(&format!("g-{app}")).await;
        let secret = wait_secret(
            &world,
            &format!("tok-{app}"),
            "written",
            REFRESH_WAIT,
            |_| true,
        )
        .await;
        let now = Timestamp::now();
        assert_eq!(secret.type_.as_deref(), Some(token::SECRET_TYPE));
        let h = held(&secret);
        canary.saw(&h);
        // The workload's own identity, for the data plane's audience.
        assert_eq!(h.claims["aud"], COSMOS_AUDIENCE, "{}", h.claims);
        assert_eq!(h.claims["oid"], principals[app].as_str(), "{}", h.claims);
        if let Some(sims) = world.sims() {
            sims.azure
                .verify_access_token(&h.token, COSMOS_AUDIENCE)
                .expect("a token Entra issued, valid now");
        }
        assert_eq!(
            data(&secret, token::SCOPE_KEY),
            format!("{COSMOS_AUDIENCE}/.default")
        );
        // One expiry everywhere: the token's `exp`, the keys, the annotation, the status.
        let exp = h.claims["exp"].as_i64().unwrap();
        assert_eq!(data(&secret, token::EXPIRES_ON_KEY), exp.to_string());
        let expires_at: Timestamp = data(&secret, token::EXPIRES_AT_KEY).parse().unwrap();
        assert_eq!(expires_at.as_second(), exp);
        assert_eq!(h.expires_at.as_second(), exp);
        let status = grant.status.clone().unwrap();
        assert_eq!(
            status.token_secret_name.as_deref(),
            Some(&*format!("tok-{app}"))
        );
        let in_status = status.token_expires_at.expect("tokenExpiresAt").0;
        assert_eq!(in_status.as_second(), exp);
        assert!(h.expires_at > now + MARGIN, "a fresh token: {h:?}");
        // Scheduled before the last 10 minutes, after issue.
        assert!(h.refresh_at <= h.expires_at - MARGIN, "{h:?}");
        assert!(h.refresh_at > h.issued_at, "{h:?}");
        assert_eq!(
            data(&secret, token::AUTHORIZATION_KEY),
            format!("type%3Daad%26ver%3D1.0%26sig%3D{}", h.token)
        );
        let cli: Value = serde_json::from_str(&data(&secret, token::TOKEN_JSON_KEY)).unwrap();
        assert_eq!(cli["expires_on"], exp);
        // The printer column, as `kubectl get dbgrant` shows it.
        let raw = world
            .kubectl(&[
                "get",
                "dbgrant",
                &format!("g-{app}"),
                "-o",
                "jsonpath={.status.tokenExpiresAt}",
            ])
            .await;
        assert_eq!(raw.parse::<Timestamp>().unwrap().as_second(), exp);
        let table = world
            .kubectl(&["get", "dbgrant", &format!("g-{app}")])
            .await;
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let column = header
            .iter()
            .position(|c| *c == "TOKEN-EXPIRES")
            .unwrap_or_else(|| panic!("a Token-Expires column: {table}"));
        assert_eq!(row[column], raw, "{table}");
        first.insert(app, h);
    }
    world.kubectl_wait_ready("g-a").await;

    // Jitter: each grant's refresh comes at its own share of the lifetime.
    let offsets: BTreeSet<i128> = first
        .values()
        .map(|h| h.refresh_at.duration_since(h.issued_at).as_millis())
        .collect();
    assert_eq!(offsets.len(), apps.len(), "jittered schedules: {first:?}");

    let Some(_) = world.sims() else {
        // Real tokens live an hour or more: the refresh itself is checked in the simulators.
        canary.check(&world, &logs).await;
        return world.finish().await;
    };
    for h in first.values() {
        // 700 s tokens, due 660 s before expiry: 40 s after issue, less up to 10% jitter.
        let after = h.refresh_at.duration_since(h.issued_at).as_secs_f64();
        assert!((35.5..=40.5).contains(&after), "{after} s: {h:?}");
    }
    for app in apps {
        let old = &first[app];
        let secret = wait_secret(
            &world,
            &format!("tok-{app}"),
            "refreshed",
            REFRESH_WAIT,
            |s| held(s).fingerprint != old.fingerprint,
        )
        .await;
        let new = held(&secret);
        canary.saw(&new);
        assert!(
            new.issued_at >= old.refresh_at,
            "not early: {old:?} {new:?}"
        );
        assert!(
            new.issued_at <= old.refresh_at + ON_SCHEDULE,
            "on schedule: due {}, refreshed {}",
            old.refresh_at,
            new.issued_at
        );
        assert!(
            old.expires_at.duration_since(new.issued_at) > MARGIN,
            "refreshed with more than 10 minutes left: {old:?} {new:?}"
        );
        assert_eq!(new.claims["oid"], principals[app].as_str());
        assert!(new.expires_at > old.expires_at);
        let grant = world
            .wait_grant(&format!("g-{app}"), "the new expiry", |g| {
                g.status
                    .as_ref()
                    .and_then(|s| s.token_expires_at.as_ref())
                    .is_some_and(|t| t.0.as_second() == new.expires_at.as_second())
            })
            .await;
        assert!(is_ready(&grant));
    }
    canary.check(&world, &logs).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_secret_of_the_same_name_is_never_adopted_written_or_deleted() {
    let logs = capture_logs();
    let world = World::start("tok-foreign", WorldOptions::default()).await;
    let canary = Canary::default();
    world.workload("app").await;
    // Someone's own Secret, made as people make them.
    world
        .kubectl(&[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=password=hunter2",
        ])
        .await;
    let api = secrets(&world);
    let before = serde_json::to_value(api.get("creds").await.unwrap()).unwrap();
    let writes = |world: &World| {
        world.sims().map(|s| {
            let c = s.kube.counters();
            ["update", "patch", "delete"].map(|verb| c.get(verb, "secrets"))
        })
    };
    let writes_before = writes(&world);

    let conflict = |g: &DatabaseAccessGrant| {
        current(g)
            && condition(g, "TokenProjected")
                == Some(("False".into(), Reason::SecretConflict.as_str().into()))
    };
    world
        .grant("g", with_token("app", json!({"name": "creds"})))
        .await;
    let grant = world.wait_grant("g", "SecretConflict", conflict).await;
    let status = grant.status.unwrap();
    assert!(status.token_expires_at.is_none() && status.token_secret_name.is_none());
    world.wait_reason("g", Reason::SecretConflict).await;
    // A second token Secret of its own, so the grant's life has a token for the canary.
    world
        .grant(
            "g",
            json!({"serviceAccountName": "app", "role": "reader",
                   "tokenSecret": {"name": "creds", "formats": ["PostgresPassword"]}}),
        )
        .await;
    world
        .wait_grant("g", "still SecretConflict", conflict)
        .await;
    // tokenSecret removed: the grant made nothing, so nothing is deleted.
    world
        .kubectl(&[
            "patch",
            "dbgrant",
            "g",
            "--type=merge",
            "-p",
            NO_TOKEN_SECRET,
        ])
        .await;
    world
        .wait_grant("g", "Ready without a token", |g| current(g) && is_ready(g))
        .await;
    world
        .grant("g", with_token("app", json!({"name": "creds"})))
        .await;
    world
        .wait_grant("g", "SecretConflict again", conflict)
        .await;
    world.delete_grant("g").await;

    let after = serde_json::to_value(api.get("creds").await.unwrap()).unwrap();
    assert_eq!(before, after, "the foreign Secret is unchanged");
    assert_eq!(writes(&world), writes_before, "no Secret was written");

    // A grant of its own beside it, for the canary's sake.
    world
        .grant("mine", with_token("app", json!({"name": "mine"})))
        .await;
    let secret = wait_secret(&world, "mine", "written", Duration::from_secs(30), |_| true).await;
    canary.saw(&held(&secret));
    canary.check(&world, &logs).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_go_on_while_arm_fails_and_an_entra_outage_serves_no_expired_token() {
    let logs = capture_logs();
    let world = World::start("tok-outage", short_lived()).await;
    let Some(sims) = world.sims() else {
        return world.finish().await;
    };
    let canary = Canary::default();
    let app = world.workload("app").await;
    world
        .grant(
            "g",
            with_token(
                "app",
                json!({"name": "tok", "refreshBefore": REFRESH_BEFORE}),
            ),
        )
        .await;
    world.wait_ready("g").await;
    let t0 = held(&wait_secret(&world, "tok", "written", REFRESH_WAIT, |_| true).await);
    canary.saw(&t0);

    // ARM fails every role-assignment call from now on; Entra ID stays healthy.
    sims.azure.faults().inject(AzureFault {
        operation: Some(Family::SqlRoleAssignments.into()),
        status: Some(503),
        ..AzureFault::default()
    });
    let arm_failures = || {
        let c = sims.azure.counters();
        [Verb::List, Verb::Get, Verb::Put, Verb::Delete]
            .map(|v| c.with_status(Op::SqlRoleAssignments(v), 503))
            .iter()
            .sum::<u64>()
    };
    let t1 = held(
        &wait_secret(
            &world,
            "tok",
            "refreshed while ARM fails",
            REFRESH_WAIT,
            |s| held(s).fingerprint != t0.fingerprint,
        )
        .await,
    );
    canary.saw(&t1);
    assert!(arm_failures() > 0, "ARM was failing meanwhile");
    assert!(
        t1.issued_at <= t0.refresh_at + ON_SCHEDULE,
        "on schedule whatever ARM says: due {}, refreshed {}",
        t0.refresh_at,
        t1.issued_at
    );

    // Entra ID goes down until a little after the next refresh is due: far less than the
    // 10 minutes the token has left then.
    sims.azure.faults().set_entra_outage(true);
    let requests = sims.azure.faults().token_requests(&app.client_id);
    let outage_ends = t1.refresh_at + SignedDuration::from_secs(8);
    let mut delayed = false;
    while Timestamp::now() < outage_ends {
        let secret = secrets(&world).get("tok").await.unwrap();
        let h = held(&secret);
        let now = Timestamp::now();
        assert_eq!(h.fingerprint, t1.fingerprint, "the current token is kept");
        assert!(h.expires_at > now + MARGIN, "no expired token: {h:?}");
        sims.azure
            .verify_access_token(&h.token, COSMOS_AUDIENCE)
            .expect("the token served is valid");
        let grant = world.grants().get("g").await.unwrap();
        let token = condition(&grant, "TokenProjected").unwrap();
        assert_eq!(token.0, "True", "TokenProjected stays True: {token:?}");
        delayed |= token.1 == Reason::RefreshDelayed.as_str();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(delayed, "the grant said RefreshDelayed during the outage");
    assert!(
        sims.azure.faults().token_requests(&app.client_id) > requests,
        "the refresh was attempted during the outage"
    );

    sims.azure.faults().set_entra_outage(false);
    let t2 = held(
        &wait_secret(
            &world,
            "tok",
            "refreshed after the outage",
            REFRESH_WAIT,
            |s| held(s).fingerprint != t1.fingerprint,
        )
        .await,
    );
    canary.saw(&t2);
    assert!(t2.expires_at > t1.expires_at);
    world
        .wait_grant("g", "TokenProjected Ready again", |g| {
            condition(g, "TokenProjected") == Some(("True".into(), "Ready".into()))
        })
        .await;
    sims.azure.faults().clear();
    canary.check(&world, &logs).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_nothing_due_writes_no_secret_and_exchanges_nothing() {
    let logs = capture_logs();
    let world = World::start("tok-restart", WorldOptions::default()).await;
    let Some(sims) = world.sims() else {
        // Counting writes and exchanges needs the simulators.
        return world.finish().await;
    };
    let canary = Canary::default();
    let app = world.workload("app").await;
    let other = world.workload("other").await;
    // Two grants share ServiceAccount `app`.
    for (grant, sa) in [("g1", "app"), ("g2", "app"), ("g3", "other")] {
        world
            .grant(
                grant,
                with_token(sa, json!({"name": format!("tok-{grant}")})),
            )
            .await;
    }
    let mut versions = BTreeMap::new();
    for grant in ["g1", "g2", "g3"] {
        world.wait_ready(grant).await;
        let secret = wait_secret(
            &world,
            &format!("tok-{grant}"),
            "written",
            REFRESH_WAIT,
            |_| true,
        )
        .await;
        canary.saw(&held(&secret));
        versions.insert(grant, secret.metadata.resource_version.clone());
    }

    world.kill_operator().await;
    let kube = || sims.kube.counters();
    let secret_writes = || {
        let c = kube();
        ["create", "update", "patch", "delete"]
            .map(|verb| c.get(verb, "secrets"))
            .iter()
            .sum::<u64>()
    };
    let writes = secret_writes();
    let reads = kube().get("get", "secrets");
    let exchanges = |client: &str| sims.azure.faults().token_requests(client);
    let (app_before, other_before) = (exchanges(&app.client_id), exchanges(&other.client_id));
    world.start_operator().await;
    // The new operator has passed over every grant once each has read its Secret (a write or
    // an exchange would follow the read within the same pass).
    world
        .eventually(
            "each grant's pass read its Secret",
            Duration::from_secs(30),
            || async { (kube().get("get", "secrets") >= reads + 3).then_some(()) },
        )
        .await;
    for grant in ["g1", "g2", "g3"] {
        world.wait_ready(grant).await;
    }
    // Room for a write or an exchange the passes might still make.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(secret_writes(), writes, "no Secret was written");
    for (grant, version) in &versions {
        let secret = secrets(&world).get(&format!("tok-{grant}")).await.unwrap();
        assert_eq!(&secret.metadata.resource_version, version, "{grant}");
    }
    // Each Secret's sealed identity stands in for the proof an exchange would make, and no
    // token is due: no exchange at all.
    assert_eq!(exchanges(&app.client_id) - app_before, 0, "app");
    assert_eq!(exchanges(&other.client_id) - other_before, 0, "other");
    canary.check(&world, &logs).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_grants_of_one_identity_share_one_exchange_per_window() {
    let logs = capture_logs();
    let world = World::start("tok-hundred", short_lived()).await;
    let Some(sims) = world.sims() else {
        return world.finish().await;
    };
    let canary = Canary::default();
    let app = world.workload("app").await;
    let names: Vec<String> = (0..100).map(|i| format!("g{i:03}")).collect();
    for name in &names {
        let spec = with_token(
            "app",
            json!({"name": format!("tok-{name}"), "refreshBefore": REFRESH_BEFORE}),
        );
        world.grant(name, spec).await;
    }
    let api = secrets(&world);
    let managed = ListParams::default().labels("app.kubernetes.io/managed-by=dbgrant");
    let first: BTreeMap<String, Held> = world
        .eventually("100 token Secrets", REFRESH_WAIT, || async {
            let list = api.list(&managed).await.ok()?;
            (list.items.len() == names.len()).then(|| {
                list.items
                    .iter()
                    .map(|s| (s.metadata.name.clone().unwrap(), held(s)))
                    .collect()
            })
        })
        .await;
    let exchanges = || sims.azure.faults().token_requests(&app.client_id);
    let initial = exchanges();
    eprintln!("exchanges for 100 new Secrets: {initial}");
    for h in first.values() {
        canary.saw(h);
    }
    let refreshed: Vec<Held> = world
        .eventually("every Secret refreshed", REFRESH_WAIT, || async {
            let list = api.list(&managed).await.ok()?;
            let now: Vec<Held> = list.items.iter().map(held).collect();
            now.iter()
                .all(|h| first.values().all(|f| f.fingerprint != h.fingerprint))
                .then_some(now)
        })
        .await;
    assert_eq!(refreshed.len(), names.len());
    let tokens: BTreeSet<&str> = refreshed.iter().map(|h| h.fingerprint.as_str()).collect();
    assert_eq!(tokens.len(), 1, "one token for the whole window");
    assert_eq!(exchanges() - initial, 1, "one exchange for the window");
    canary.saw(&refreshed[0]);
    canary.check(&world, &logs).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_renaming_or_deleting_deletes_the_secret_dbgrant_made() {
    let logs = capture_logs();
    let world = World::start("tok-delete", WorldOptions::default()).await;
    let canary = Canary::default();
    world.workload("app").await;
    world
        .grant("g1", with_token("app", json!({"name": "s1"})))
        .await;
    world
        .grant("g2", with_token("app", json!({"name": "s2"})))
        .await;
    for name in ["s1", "s2"] {
        let secret = wait_secret(&world, name, "written", Duration::from_secs(30), |_| true).await;
        canary.saw(&held(&secret));
    }
    // Before anything is deleted: the statuses are still there to look at.
    canary.check(&world, &logs).await;

    // tokenSecret removed.
    world
        .kubectl(&[
            "patch",
            "dbgrant",
            "g1",
            "--type=merge",
            "-p",
            NO_TOKEN_SECRET,
        ])
        .await;
    wait_gone(&world, "s1").await;
    let g1 = world
        .wait_grant("g1", "NotRequested", |g| {
            current(g)
                && condition(g, "TokenProjected")
                    == Some(("True".into(), Reason::NotRequested.as_str().into()))
        })
        .await;
    let status = g1.status.unwrap();
    assert!(
        status.token_secret_name.is_none() && status.token_expires_at.is_none(),
        "{status:?}"
    );

    // Renamed: the old one goes, the new one comes.
    world
        .grant("g2", with_token("app", json!({"name": "s2b"})))
        .await;
    let secret = wait_secret(&world, "s2b", "written", Duration::from_secs(30), |_| true).await;
    canary.saw(&held(&secret));
    wait_gone(&world, "s2").await;

    // Deleted: its Secret goes with it (kube-sim has no garbage collector: dbgrant deletes it).
    world.delete_grant("g2").await;
    wait_gone(&world, "s2b").await;
    canary.check(&world, &logs).await;
    world.finish().await;
}
