//! Chaos: bursts of grant creates and deletes while the operator is killed, watches end or
//! expire, ARM storms 429s and 5xx, Entra ID is down, the account's RBAC lock is contended, or
//! the target is deleted. After each, Azure holds exactly the access the surviving grants ask
//! for (no assignment leaked, missing or duplicated; others' assignments untouched) and
//! nothing panicked. Random choices come from one seed, printed; replay a failure with
//! `DBGRANT_CHAOS_SEED=<seed>`. Simulators only: each test skips against a real environment.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dbgrant::api::{DatabaseAccessGrant, DatabaseTarget};
use dbgrant::backend::cosmos::{BUILTIN_READER, RoleAssignment, role_definition_id};
use dbgrant_sim::azure::{AzureFault, AzureOperation as Op, Family, OperationFilter, Verb};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use support::world::{Identity, World, WorldOptions, is_ready};

/// Set by the panic hook when a runtime worker panics: the operator runs in-process on the
/// workers, while a test's own assertions fail on its own thread and are not counted.
static PANICKED: AtomicBool = AtomicBool::new(false);

fn watch_for_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("tokio-runtime-worker") {
                PANICKED.store(true, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// A small deterministic generator (SplitMix64): the seed alone replays a run.
struct Chaos {
    state: u64,
}

impl Chaos {
    fn new(test: &str) -> Self {
        let seed = std::env::var("DBGRANT_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{test}: DBGRANT_CHAOS_SEED={seed}");
        Self { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.between(low, high))
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.between(0, 100) < percent
    }
}

/// Grants of the test, each on its own database so each has its own assignment: name ->
/// (workload index, database).
#[derive(Default)]
struct Desired(BTreeMap<String, (usize, String)>);

struct Burst<'w> {
    world: &'w World,
    workloads: Vec<Identity>,
    desired: Desired,
    next: usize,
}

impl<'w> Burst<'w> {
    async fn new(world: &'w World, workloads: usize) -> Self {
        let mut identities = Vec::new();
        for i in 0..workloads {
            identities.push(world.workload(&format!("app{i}")).await);
        }
        Self {
            world,
            workloads: identities,
            desired: Desired::default(),
            next: 0,
        }
    }

    /// Create one more grant (without waiting for it).
    async fn create(&mut self) {
        let index = self.next;
        self.next += 1;
        let name = format!("g{index}");
        let workload = index % self.workloads.len();
        let database = format!("db{index}");
        self.world
            .grant(
                &name,
                json!({"serviceAccountName": format!("app{workload}"), "role": "reader", "database": database}),
            )
            .await;
        self.desired.0.insert(name, (workload, database));
    }

    /// Ask for one grant's deletion (without waiting for its finalizer).
    async fn delete_one(&mut self, chaos: &mut Chaos) {
        if self.desired.0.is_empty() {
            return;
        }
        let pick = chaos.between(0, self.desired.0.len() as u64) as usize;
        let name = self.desired.0.keys().nth(pick).cloned().unwrap();
        self.world
            .grants()
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
        self.desired.0.remove(&name);
    }

    /// A random mix of creates and deletes.
    async fn step(&mut self, chaos: &mut Chaos) {
        if chaos.chance(30) {
            self.delete_one(chaos).await;
        } else {
            self.create().await;
        }
    }

    /// What Azure should hold: (principal, database) of each surviving grant.
    fn expected(&self) -> BTreeMap<(String, String), usize> {
        let mut expected = BTreeMap::new();
        for (workload, database) in self.desired.0.values() {
            *expected
                .entry((
                    self.workloads[*workload].principal_id.to_ascii_lowercase(),
                    database.to_ascii_lowercase(),
                ))
                .or_default() += 1;
        }
        expected
    }
}

/// Azure's assignments of `principals` on the account: (principal, database) -> how many.
fn actual(world: &World, principals: &[String]) -> BTreeMap<(String, String), usize> {
    let sims = world.sims().expect("simulated");
    let mut found = BTreeMap::new();
    for assignment in sims.azure.role_assignments(world.account_id()) {
        let principal = assignment.principal_id.to_ascii_lowercase();
        if !principals.contains(&principal) {
            continue;
        }
        let database = assignment
            .scope
            .to_ascii_lowercase()
            .rsplit_once("/dbs/")
            .map_or_else(String::new, |(_, db)| db.to_string());
        *found.entry((principal, database)).or_default() += 1;
    }
    found
}

/// Wait until every surviving grant is Ready, every deleted one is gone, and Azure holds
/// exactly what they ask for; then check it stays so for a moment and nothing panicked.
async fn converged(burst: &Burst<'_>, test: &str) {
    let world = burst.world;
    let principals: Vec<String> = burst
        .workloads
        .iter()
        .map(|w| w.principal_id.to_ascii_lowercase())
        .collect();
    let expected = burst.expected();
    let api = world.grants();
    let settled = tokio::time::timeout(Duration::from_secs(45), async {
        loop {
            let grants = api.list(&ListParams::default()).await.unwrap();
            let names: Vec<String> = grants
                .items
                .iter()
                .filter_map(|g| g.metadata.name.clone())
                .collect();
            let all_ready = grants
                .items
                .iter()
                .filter(|g| {
                    burst
                        .desired
                        .0
                        .contains_key(g.metadata.name.as_deref().unwrap())
                })
                .all(is_ready);
            let only_desired = names.iter().all(|n| burst.desired.0.contains_key(n))
                && names.len() == burst.desired.0.len();
            if all_ready && only_desired && actual(world, &principals) == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    if settled.is_err() {
        let grants = api.list(&ListParams::default()).await.unwrap();
        let states: Vec<String> = grants
            .items
            .iter()
            .map(|g: &DatabaseAccessGrant| {
                format!(
                    "{} ready={} deleting={} held={:?}",
                    g.metadata.name.as_deref().unwrap_or_default(),
                    is_ready(g),
                    g.metadata.deletion_timestamp.is_some(),
                    g.status.as_ref().map(|s| s.held.clone())
                )
            })
            .collect();
        panic!(
            "{test}: not converged within 45 s\nexpected {expected:?}\nactual   {:?}\ngrants: {states:#?}",
            actual(world, &principals)
        );
    }
    // Stable: a moment later it still holds (no late revoke or late write).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        actual(world, &principals),
        expected,
        "{test}: changed after converging"
    );
    assert!(world.operator_running(), "{test}: the operator stopped");
    assert!(
        !PANICKED.load(Ordering::SeqCst),
        "{test}: something panicked"
    );
}

async fn start(test: &str) -> Option<World> {
    watch_for_panics();
    let world = World::start(
        test,
        WorldOptions {
            resync_interval: Duration::from_secs(5),
            ..WorldOptions::default()
        },
    )
    .await;
    if world.sims().is_none() {
        world.finish().await;
        return None;
    }
    Some(world)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_killed_at_random_points_during_a_burst_leaves_exactly_the_desired_access() {
    let test = "chaos-kill";
    let mut chaos = Chaos::new(test);
    let Some(world) = start(test).await else {
        return;
    };
    let mut burst = Burst::new(&world, 3).await;
    for _ in 0..6 {
        burst.create().await;
    }
    for _ in 0..5 {
        for _ in 0..chaos.between(2, 5) {
            burst.step(&mut chaos).await;
        }
        // Somewhere in the middle of recording, writing, polling or finalizing.
        tokio::time::sleep(chaos.millis(20, 900)).await;
        world.kill_operator().await;
        for _ in 0..chaos.between(0, 3) {
            burst.step(&mut chaos).await;
        }
        world.start_operator().await;
    }
    converged(&burst, test).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_dropped_and_expired_during_a_burst_lose_nothing() {
    let test = "chaos-watch";
    let mut chaos = Chaos::new(test);
    let Some(world) = start(test).await else {
        return;
    };
    let faults = world.sims().unwrap().kube.faults();
    let mut burst = Burst::new(&world, 3).await;
    for _ in 0..20 {
        burst.step(&mut chaos).await;
        if chaos.chance(40) {
            if chaos.chance(50) {
                faults.expire_watches();
            } else {
                faults.drop_watches();
            }
        }
        tokio::time::sleep(chaos.millis(0, 300)).await;
    }
    faults.expire_watches();
    converged(&burst, test).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_storms_of_429s_and_5xx_end_in_exactly_the_desired_access() {
    let test = "chaos-storm";
    let mut chaos = Chaos::new(test);
    let Some(world) = start(test).await else {
        return;
    };
    let azure = &world.sims().unwrap().azure;
    let mut burst = Burst::new(&world, 3).await;
    for _ in 0..4 {
        burst.create().await;
    }
    for round in 0..3 {
        let status = [429, 500, 503][round];
        let family = if chaos.chance(70) {
            Family::SqlRoleAssignments
        } else {
            Family::OperationStatus
        };
        azure.faults().inject(AzureFault {
            operation: Some(OperationFilter::Family(family)),
            status: Some(status),
            retry_after: (status == 429).then_some(1),
            times: Some(chaos.between(3, 12) as u32),
            ..AzureFault::default()
        });
        for _ in 0..chaos.between(3, 6) {
            burst.step(&mut chaos).await;
        }
        tokio::time::sleep(chaos.millis(200, 1500)).await;
    }
    let injected: u64 = [429, 500, 503]
        .iter()
        .map(|s| {
            azure
                .counters()
                .with_status(Op::SqlRoleAssignments(Verb::Put), *s)
                + azure
                    .counters()
                    .with_status(Op::SqlRoleAssignments(Verb::Delete), *s)
                + azure
                    .counters()
                    .with_status(Op::OperationStatus(Verb::Get), *s)
        })
        .sum();
    assert!(injected > 0, "{test}: the storm hit nothing");
    converged(&burst, test).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entra_outage_during_a_burst_ends_in_exactly_the_desired_access() {
    let test = "chaos-entra";
    let mut chaos = Chaos::new(test);
    let Some(world) = start(test).await else {
        return;
    };
    let azure = &world.sims().unwrap().azure;
    let mut burst = Burst::new(&world, 3).await;
    for _ in 0..4 {
        burst.create().await;
    }
    tokio::time::sleep(chaos.millis(0, 1000)).await;
    azure.faults().set_entra_outage(true);
    for _ in 0..chaos.between(4, 8) {
        burst.step(&mut chaos).await;
        tokio::time::sleep(chaos.millis(0, 400)).await;
    }
    tokio::time::sleep(chaos.millis(1000, 4000)).await;
    azure.faults().set_entra_outage(false);
    converged(&burst, test).await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_for_the_accounts_rbac_lock_leaves_others_assignments_alone() {
    let test = "chaos-412";
    let mut chaos = Chaos::new(test);
    let Some(world) = start(test).await else {
        return;
    };
    let azure = &world.sims().unwrap().azure;
    azure.faults().set_lro_duration(Duration::from_millis(400));
    let mut burst = Burst::new(&world, 2).await;
    // Someone else's assignments, written through ARM while the operator writes: both sides
    // meet the account's lock (412). The operator must leave these alone.
    let foreign_principal = world.identity("foreign").await.principal_id;
    let mut foreign = Vec::new();
    for i in 0..6 {
        burst.step(&mut chaos).await;
        burst.create().await;
        let assignment = RoleAssignment {
            guid: uuid::Uuid::new_v4().to_string(),
            role_definition_id: role_definition_id(world.account_id(), BUILTIN_READER),
            scope: format!("{}/dbs/foreign{i}", world.account_id()),
            principal_id: foreign_principal.clone(),
        };
        // Retried like any script against Cosmos DB must, while the operator holds the lock.
        let mut written = false;
        for _ in 0..60 {
            match world.put_assignment_out_of_band(&assignment).await {
                Ok(()) => {
                    written = true;
                    break;
                }
                Err(error) if error.reason == dbgrant::api::Reason::AccountBusy => {
                    tokio::time::sleep(chaos.millis(20, 120)).await;
                }
                Err(error) => panic!("{test}: writing someone else's assignment: {error}"),
            }
        }
        assert!(written, "{test}: the account stayed busy for 60 attempts");
        foreign.push(assignment);
    }
    let busy = azure
        .counters()
        .with_status(Op::SqlRoleAssignments(Verb::Put), 412)
        + azure
            .counters()
            .with_status(Op::SqlRoleAssignments(Verb::Delete), 412);
    eprintln!("{test}: {busy} writes met a busy account (412)");
    converged(&burst, test).await;
    let theirs = actual(&world, &[foreign_principal.to_ascii_lowercase()]);
    assert_eq!(
        theirs.values().sum::<usize>(),
        foreign.len(),
        "{test}: others' assignments were touched: {theirs:?}"
    );
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_deleted_while_grants_exist_ends_all_their_access() {
    let test = "chaos-target";
    let mut chaos = Chaos::new(test);
    let Some(world) = start(test).await else {
        return;
    };
    let mut burst = Burst::new(&world, 3).await;
    for _ in 0..8 {
        burst.create().await;
    }
    tokio::time::sleep(chaos.millis(0, 2000)).await;
    let targets: Api<DatabaseTarget> = Api::all(world.client.clone());
    targets
        .delete(world.target_name(), &DeleteParams::default())
        .await
        .unwrap();
    // Grants keep coming and going while the target goes.
    for _ in 0..chaos.between(2, 5) {
        burst.step(&mut chaos).await;
    }
    let principals: Vec<String> = burst
        .workloads
        .iter()
        .map(|w| w.principal_id.to_ascii_lowercase())
        .collect();
    world
        .eventually(
            "the target is gone and no assignment is left",
            Duration::from_secs(45),
            || async {
                let gone = matches!(targets.get_opt(world.target_name()).await, Ok(None));
                (gone && actual(&world, &principals).is_empty()).then_some(())
            },
        )
        .await;
    // The surviving grants say why they have nothing; deleted ones are gone.
    for name in burst.desired.0.keys() {
        world
            .wait_reason(name, dbgrant::api::Reason::TargetNotFound)
            .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        actual(&world, &principals).is_empty(),
        "{test}: access came back"
    );
    assert!(world.operator_running(), "{test}: the operator stopped");
    assert!(
        !PANICKED.load(Ordering::SeqCst),
        "{test}: something panicked"
    );
    world.finish().await;
}
