//! Leader election between two replicas of the real operator (`dbgrant::run`, in-process)
//! against the Kubernetes and Azure simulators: one leads and writes to Azure, the other stands
//! by and writes nothing; when the leader dies without releasing the Lease, the standby takes
//! over within the lease duration and carries on without repeating the leader's writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;
use dbgrant::azure::{AzureConfig, AzureCosmos, OperatorCredential};
use dbgrant::settings::{Cli, Command};
use dbgrant_sim::azure::{AzureOperation, AzureSim, AzureSimConfig, ControlPlaneRole, Verb};
use dbgrant_sim::kube::{KubeSim, KubeSimConfig};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const LEASE_SECONDS: u64 = 2;
const NAMESPACE: &str = "dbgrant";
const LEASE: &str = "dbgrant-leader";
/// The target's custom roles become role definitions: one PUT each, by the leader only.
const DEFINITION_PUTS: AzureOperation = AzureOperation::SqlRoleDefinitions(Verb::Put);

struct Replica {
    port: u16,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_replica(kubeconfig: &std::path::Path, azure: &AzureConfig, name: &str) -> Replica {
    let port = free_port();
    let cli = Cli::try_parse_from([
        "dbgrant",
        "run",
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--http-addr",
        &format!("127.0.0.1:{port}"),
        "--azure-tenant-id",
        &azure.tenant_id,
        "--leader-election",
        "--lease-namespace",
        NAMESPACE,
        "--leader-identity",
        name,
        "--lease-duration",
        &format!("{LEASE_SECONDS}s"),
    ])
    .unwrap();
    let Command::Run(args) = cli.command else {
        panic!("expected run")
    };
    let cosmos = AzureCosmos::new(azure.clone(), None).await.unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(dbgrant::run(
        args,
        dbgrant::backend::Backends::from_one(Arc::new(cosmos)),
        shutdown.clone(),
    ));
    Replica {
        port,
        shutdown,
        task,
    }
}

/// `/readyz` of a replica: its status and body, or `None` while it does not answer yet. Plain
/// HTTP/1.0 over a socket: no client library needed for one line.
async fn readyz(replica: &Replica) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", replica.port))
        .await
        .ok()?;
    stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn condition(object: &Value, kind: &str) -> Option<(String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_standby_takes_over_without_repeating_its_writes() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let kube = KubeSim::start(KubeSimConfig::default()).await.unwrap();
    let azure = AzureSim::start(AzureSimConfig {
        oidc_trusted_ca_pems: vec![kube.ca_pem()],
        lro_duration: Duration::from_millis(50),
        ..AzureSimConfig::default()
    })
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("dbgrant-leader-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig_yaml()).unwrap();
    let client = kube.client().await.unwrap();

    let subscription = uuid::Uuid::new_v4().to_string();
    let account = azure.create_cosmos_account(&subscription, "rg", "leader-election");
    let operator = azure.create_service_principal("dbgrant-operator");
    azure.assign_control_plane_role(
        &operator.principal_id,
        &account.resource_id,
        ControlPlaneRole::DocumentDbAccountContributor,
    );
    let mut config = AzureConfig::custom(
        azure.authority_host().parse().unwrap(),
        azure.arm_endpoint().parse().unwrap(),
        Some(azure.ca_pem()),
        azure.tenant_id(),
        OperatorCredential::ClientSecret {
            client_id: operator.client_id.clone(),
            client_secret: operator.client_secret.clone(),
        },
    );
    config.timing.lro_poll = Duration::from_millis(50);
    config.timing.retry_base = Duration::from_millis(50);

    for crd in dbgrant::api::crds() {
        dbgrant_sim::apply::apply(&client, &serde_json::to_value(&crd).unwrap(), "default")
            .await
            .unwrap();
    }
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    dbgrant_sim::apply::apply(&client, &namespace, "default")
        .await
        .unwrap();
    let target = |roles: Value| {
        json!({
            "apiVersion": "dbgrant.io/v1alpha1",
            "kind": "DatabaseTarget",
            "metadata": {"name": "ha"},
            "spec": {
                "cosmos": {"accountResourceId": account.resource_id, "roles": roles},
                "allowedRoles": ["reader"],
            },
        })
    };
    let one_role =
        json!({"meta": {"dataActions": ["Microsoft.DocumentDB/databaseAccounts/readMetadata"]}});
    dbgrant_sim::apply::apply(&client, &target(one_role.clone()), "default")
        .await
        .unwrap();

    let a = start_replica(&kubeconfig, &config, "replica-a").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    eventually("replica-a leads", Duration::from_secs(20), || async {
        (holder(&leases).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = start_replica(&kubeconfig, &config, "replica-b").await;

    let targets: Api<dbgrant::api::DatabaseTarget> = Api::all(client.clone());
    let ready_target = || async {
        let object = serde_json::to_value(targets.get("ha").await.ok()?).unwrap();
        (condition(&object, "Ready")?.0 == "True").then_some(())
    };
    eventually("the target is Ready", Duration::from_secs(30), ready_target).await;
    eventually("the leader says so", Duration::from_secs(10), || async {
        readyz(&a).await?.1.starts_with("leader").then_some(())
    })
    .await;
    eventually(
        "the standby says so and is ready",
        Duration::from_secs(10),
        || async { (readyz(&b).await? == (200, "standby".to_string())).then_some(()) },
    )
    .await;
    // Long enough for a standby that wrongly reconciled to have written too.
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS)).await;
    let puts = azure.faults().counters().calls(DEFINITION_PUTS);
    assert_eq!(
        puts,
        1,
        "one custom role, one PUT: {:?}",
        azure.faults().counters()
    );
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-a"));

    // The leader dies without releasing the Lease (a crashed pod).
    a.task.abort();
    let _ = a.task.await;
    let killed = Instant::now();
    eventually(
        "replica-b takes over",
        Duration::from_secs(LEASE_SECONDS + 5),
        || async { (holder(&leases).await.as_deref() == Some("replica-b")).then_some(()) },
    )
    .await;
    let took = killed.elapsed();
    // The lease runs out at most LEASE_SECONDS after the last renewal; the standby then takes
    // it after a random pause of up to a second (kube-lease-manager's collision avoidance).
    assert!(
        took <= Duration::from_secs(LEASE_SECONDS + 2),
        "hand-over took {took:?}"
    );
    eventually(
        "the new leader says so",
        Duration::from_secs(10),
        || async { readyz(&b).await?.1.starts_with("leader").then_some(()) },
    )
    .await;

    // The new leader reconciles the target again and finds the role in place: no second PUT.
    // A change to the target then shows it is the one reconciling now.
    let two_roles = json!({
        "meta": {"dataActions": ["Microsoft.DocumentDB/databaseAccounts/readMetadata"]},
        "meta2": {"dataActions": ["Microsoft.DocumentDB/databaseAccounts/readMetadata"]},
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        azure.faults().counters().calls(DEFINITION_PUTS),
        1,
        "the new leader repeated a write: {:?}",
        azure.faults().counters()
    );
    targets
        .patch(
            "ha",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"cosmos": {"roles": two_roles}}})),
        )
        .await
        .unwrap();
    eventually(
        "the new leader writes the new role",
        Duration::from_secs(30),
        || async { (azure.faults().counters().calls(DEFINITION_PUTS) == 2).then_some(()) },
    )
    .await;

    // A graceful stop releases the Lease.
    b.shutdown.cancel();
    b.task.await.unwrap().unwrap();
    assert_eq!(holder(&leases).await, None, "the Lease was not released");
    let _ = std::fs::remove_dir_all(&dir);
}
