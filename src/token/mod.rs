//! Token Secrets: a fresh data-plane access token for the workload's identity, kept in a Secret
//! of the grant's namespace for workloads that cannot do the token exchange themselves.
//!
//! Everything here is pure: what the Secret holds, whether an existing Secret is dbgrant's to
//! write, and when its token is due for refresh, read back from the Secret's own annotations
//! so the schedule survives restarts. The token is only ever placed in the Secret's data:
//! never in status, events, logs or metrics (`Secret`'s Debug redacts it).

pub mod broker;
pub mod seal;

use std::collections::BTreeMap;
use std::time::Duration;

use azure_core::credentials::Secret as Token;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::api::{TokenFormat, TokenSecretSpec};

/// Type of every token Secret, so policies and humans can tell them from others.
pub const SECRET_TYPE: &str = "dbgrant.io/access-token";

/// The access token.
pub const TOKEN_KEY: &str = "token";
/// Its expiry, RFC 3339.
pub const EXPIRES_AT_KEY: &str = "expiresAt";
/// Its expiry, seconds since the Unix epoch.
pub const EXPIRES_ON_KEY: &str = "expiresOn";
/// `Bearer`.
pub const TOKEN_TYPE_KEY: &str = "tokenType";
/// The Entra ID scope it was issued for.
pub const SCOPE_KEY: &str = "scope";
/// [`TokenFormat::CosmosAuthorizationHeader`].
pub const AUTHORIZATION_KEY: &str = "authorization";
/// [`TokenFormat::PostgresPassword`].
pub const PASSWORD_KEY: &str = "password";
/// [`TokenFormat::AzureCli`]: the bare token.
pub const ACCESS_TOKEN_KEY: &str = "accessToken";
/// [`TokenFormat::AzureCli`]: the JSON `az account get-access-token` prints.
pub const TOKEN_JSON_KEY: &str = "token.json";

/// Label every token Secret carries.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "dbgrant";
/// Label naming the grant (when its name fits a label value).
pub const GRANT_LABEL: &str = "dbgrant.io/grant";
/// Label carrying the grant's uid.
pub const GRANT_UID_LABEL: &str = "dbgrant.io/grant-uid";

/// When the token in the Secret was issued (RFC 3339).
pub const ISSUED_AT_ANNOTATION: &str = "dbgrant.io/issued-at";
/// When it is due for refresh (RFC 3339, jitter included).
pub const REFRESH_AT_ANNOTATION: &str = "dbgrant.io/refresh-at";
/// When it expires (RFC 3339), so the schedule is read without touching the data.
pub const EXPIRES_AT_ANNOTATION: &str = "dbgrant.io/expires-at";
/// A short, one-way fingerprint of the token: tells two tokens apart without revealing one.
pub const FINGERPRINT_ANNOTATION: &str = "dbgrant.io/token-fingerprint";
/// Hash of everything the Secret was built from but the token: a change refreshes at once.
pub const INPUTS_ANNOTATION: &str = "dbgrant.io/inputs-hash";
/// Annotation on a restarted workload's pod template: the fingerprint it was restarted for.
pub const RESTARTED_FOR_ANNOTATION: &str = "dbgrant.io/restarted-for-token";

/// A refresh is never scheduled later than this before expiry.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(600);
/// Below this much remaining life a token whose refresh keeps failing is reported as failing.
pub const NEAR_EXPIRY: Duration = Duration::from_secs(300);
/// Jitter moves a refresh earlier by up to this share of the time until it.
const JITTER_SHARE: f64 = 0.1;
/// Never refresh sooner than this after issue (a token too short-lived for the margin).
const MIN_REFRESH_AFTER: Duration = Duration::from_secs(30);

/// A token as Entra ID issued it.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The access token (redacted in Debug).
    pub token: Token,
    /// When it was obtained.
    pub issued_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Entra ID's own advice on when to refresh (`refresh_in`), when it gave one.
    pub refresh_in: Option<Duration>,
}

/// When to refresh, as the grant asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshPolicy {
    /// At this percentage of the token's lifetime (50 by default).
    Percent(u8),
    /// This long before expiry.
    Before(Duration),
}

impl RefreshPolicy {
    /// The policy a token Secret spec asks for. `refreshBefore` was validated by the API
    /// server; one that does not parse falls back to half-life.
    pub fn of(spec: &TokenSecretSpec) -> Self {
        if let Some(before) = spec.refresh_before.as_deref().and_then(parse_duration) {
            return Self::Before(before);
        }
        Self::Percent(spec.refresh_at_percent.unwrap_or(50).clamp(10, 90))
    }
}

/// Parse a duration of hours, minutes and seconds (`1h30m`, `45m`, `90s`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut number = String::new();
    let mut seen_unit = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        number.clear();
        seen_unit = true;
    }
    (number.is_empty() && seen_unit).then(|| Duration::from_secs(total))
}

/// A short, one-way fingerprint of a token (12 hex digits of its SHA-256).
pub fn fingerprint(token: &Token) -> String {
    let digest = Sha256::digest(token.secret().as_bytes());
    hex(&digest[..6])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a Secret is built from, besides the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// Client id of the workload's identity.
    pub client_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// The scope the token is issued for.
    pub scope: String,
    /// Extra formats, sorted.
    pub formats: Vec<TokenFormat>,
    /// When to refresh.
    pub policy: RefreshPolicy,
}

impl Inputs {
    /// A stable hash of the inputs (16 hex digits).
    pub fn hash(&self) -> String {
        let mut formats = self.formats.clone();
        formats.sort();
        formats.dedup();
        let text = format!(
            "v1\n{}\n{}\n{}\n{:?}\n{:?}",
            self.client_id, self.tenant_id, self.scope, formats, self.policy
        );
        hex(&Sha256::digest(text.as_bytes())[..8])
    }
}

/// When a token issued at `issued_at` and expiring at `expires_at` is due for refresh: as
/// `policy` asks (or sooner if Entra ID's `refresh_in` says so), moved earlier by a jitter
/// derived from `seed` (so Secrets refreshed together spread out, and one Secret's schedule
/// is the same on every computation), never later than [`REFRESH_MARGIN`] before expiry and
/// never sooner than 30 seconds after issue (or half the lifetime, for shorter tokens).
pub fn refresh_at(
    issued_at: Timestamp,
    expires_at: Timestamp,
    refresh_in: Option<Duration>,
    policy: RefreshPolicy,
    seed: &str,
) -> Timestamp {
    let lifetime = secs_between(issued_at, expires_at);
    let mut after = match policy {
        RefreshPolicy::Percent(p) => lifetime * f64::from(p) / 100.0,
        RefreshPolicy::Before(before) => lifetime - before.as_secs_f64(),
    };
    if let Some(advice) = refresh_in {
        after = after.min(advice.as_secs_f64());
    }
    after -= after.max(0.0) * JITTER_SHARE * unit_fraction(seed);
    after = after.min(lifetime - REFRESH_MARGIN.as_secs_f64());
    let floor = MIN_REFRESH_AFTER.as_secs_f64().min(lifetime / 2.0);
    after = after.max(floor);
    add_secs(issued_at, after)
}

/// A number in [0, 1) derived from `seed`.
fn unit_fraction(seed: &str) -> f64 {
    let digest = Sha256::digest(seed.as_bytes());
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(word) >> 11) as f64 / (1u64 << 53) as f64
}

fn secs_between(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}

fn add_secs(at: Timestamp, secs: f64) -> Timestamp {
    at.checked_add(SignedDuration::from_secs_f64(secs.max(0.0)))
        .unwrap_or(Timestamp::MAX)
}

/// Whether a Secret of the wanted name is dbgrant's to write for this grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// No such Secret: create it.
    Absent,
    /// Made by dbgrant for this grant.
    Ours,
    /// Made by dbgrant for another grant (its name, when the label says).
    OtherGrant(Option<String>),
    /// Not made by dbgrant: never adopted, written or deleted.
    Foreign,
}

/// Who a Secret belongs to, from its labels and controller owner.
pub fn ownership(secret: Option<&Secret>, grant_uid: &str) -> Ownership {
    let Some(secret) = secret else {
        return Ownership::Absent;
    };
    let meta = &secret.metadata;
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY);
    let controller = meta.owner_references.as_ref().and_then(|refs| {
        refs.iter().find(|r| {
            r.controller == Some(true)
                && r.kind == "DatabaseAccessGrant"
                && r.api_version.starts_with("dbgrant.io/")
        })
    });
    match controller {
        Some(owner) if labelled && owner.uid == grant_uid => Ownership::Ours,
        Some(owner) if labelled => Ownership::OtherGrant(Some(owner.name.clone())),
        _ => Ownership::Foreign,
    }
}

/// The schedule of the token in a Secret dbgrant wrote, from its annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// When the token was issued.
    pub issued_at: Timestamp,
    /// When it is due for refresh.
    pub refresh_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Its fingerprint.
    pub fingerprint: String,
    /// The inputs hash it was written with.
    pub inputs: String,
}

/// Read the schedule from a Secret; `None` when any part is missing or unreadable (a Secret
/// from an older dbgrant, or edited by hand): it is then rewritten.
pub fn schedule_of(secret: &Secret) -> Option<Schedule> {
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return None;
    }
    let has_token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(TOKEN_KEY))
        .is_some_and(|t| !t.0.is_empty());
    if !has_token {
        return None;
    }
    let annotations = secret.metadata.annotations.as_ref()?;
    let time = |key: &str| annotations.get(key)?.parse::<Timestamp>().ok();
    Some(Schedule {
        issued_at: time(ISSUED_AT_ANNOTATION)?,
        refresh_at: time(REFRESH_AT_ANNOTATION)?,
        expires_at: time(EXPIRES_AT_ANNOTATION)?,
        fingerprint: annotations.get(FINGERPRINT_ANNOTATION)?.clone(),
        inputs: annotations.get(INPUTS_ANNOTATION)?.clone(),
    })
}

/// Why a Secret must be written now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// It does not exist, or holds no schedule dbgrant can read.
    Missing,
    /// It was written from other inputs (scope, formats, identity, policy).
    InputsChanged,
    /// Its refresh time has come.
    Due,
}

/// Whether the token Secret needs writing at `now`, or how long until it does.
pub fn due(
    schedule: Option<&Schedule>,
    inputs_hash: &str,
    now: Timestamp,
) -> Result<Duration, Why> {
    let Some(schedule) = schedule else {
        return Err(Why::Missing);
    };
    if schedule.inputs != inputs_hash {
        return Err(Why::InputsChanged);
    }
    if now >= schedule.refresh_at || now >= schedule.expires_at {
        return Err(Why::Due);
    }
    Ok(schedule.refresh_at.duration_since(now).unsigned_abs())
}

/// How a Secret whose refresh failed should be reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The current token is still good for a while: report degraded, keep serving it.
    Delayed,
    /// Little or no life left: report the failure.
    Failing,
}

/// Standing of a token expiring at `expires_at` whose refresh failed at `now`.
pub fn standing(expires_at: Timestamp, now: Timestamp) -> Standing {
    if secs_between(now, expires_at) > NEAR_EXPIRY.as_secs_f64() {
        Standing::Delayed
    } else {
        Standing::Failing
    }
}

/// Everything a token Secret is built from.
pub struct Build<'a> {
    /// Secret name.
    pub name: &'a str,
    /// Its namespace (the grant's).
    pub namespace: &'a str,
    /// The grant, as controller owner.
    pub owner: OwnerReference,
    /// The token.
    pub issued: &'a Issued,
    /// The scope string written under `scope`.
    pub scope: &'a str,
    /// The tenant (for `token.json`).
    pub tenant_id: &'a str,
    /// Extra formats.
    pub formats: &'a [TokenFormat],
    /// When it is due for refresh.
    pub refresh_at: Timestamp,
    /// [`Inputs::hash`].
    pub inputs_hash: &'a str,
    /// The principal the token belongs to and the seal vouching for it (`seal`), if sealed.
    pub sealed: Option<(&'a str, String)>,
}

fn bytes(text: impl Into<String>) -> ByteString {
    ByteString(text.into().into_bytes())
}

/// The token Secret.
pub fn build(b: &Build<'_>) -> Secret {
    let token = b.issued.token.secret();
    let expires = b.issued.expires_at;
    let mut data = BTreeMap::from([
        (TOKEN_KEY.to_string(), bytes(token)),
        (EXPIRES_AT_KEY.to_string(), bytes(expires.to_string())),
        (
            EXPIRES_ON_KEY.to_string(),
            bytes(expires.as_second().to_string()),
        ),
        (TOKEN_TYPE_KEY.to_string(), bytes("Bearer")),
        (SCOPE_KEY.to_string(), bytes(b.scope)),
    ]);
    for format in b.formats {
        match format {
            TokenFormat::CosmosAuthorizationHeader => {
                // Cosmos DB wants the header value URL-encoded as a whole; the token's
                // characters ([A-Za-z0-9-_.]) need no escaping, only the separators do.
                let value = format!("type%3Daad%26ver%3D1.0%26sig%3D{token}");
                data.insert(AUTHORIZATION_KEY.to_string(), bytes(value));
            }
            TokenFormat::PostgresPassword => {
                data.insert(PASSWORD_KEY.to_string(), bytes(token));
            }
            TokenFormat::AzureCli => {
                data.insert(ACCESS_TOKEN_KEY.to_string(), bytes(token));
                let json = serde_json::json!({
                    "accessToken": token,
                    "expiresOn": expires.strftime("%Y-%m-%d %H:%M:%S.000000").to_string(),
                    "expires_on": expires.as_second(),
                    "tokenType": "Bearer",
                    "tenant": b.tenant_id,
                });
                data.insert(TOKEN_JSON_KEY.to_string(), bytes(json.to_string()));
            }
        }
    }
    let mut labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (GRANT_UID_LABEL.to_string(), b.owner.uid.clone()),
    ]);
    if b.owner.name.len() <= 63 {
        labels.insert(GRANT_LABEL.to_string(), b.owner.name.clone());
    }
    let mut annotations = BTreeMap::from([
        (
            ISSUED_AT_ANNOTATION.to_string(),
            b.issued.issued_at.to_string(),
        ),
        (REFRESH_AT_ANNOTATION.to_string(), b.refresh_at.to_string()),
        (EXPIRES_AT_ANNOTATION.to_string(), expires.to_string()),
        (
            FINGERPRINT_ANNOTATION.to_string(),
            fingerprint(&b.issued.token),
        ),
        (INPUTS_ANNOTATION.to_string(), b.inputs_hash.to_string()),
    ]);
    if let Some((principal, seal)) = &b.sealed {
        annotations.insert(seal::PRINCIPAL_ANNOTATION.into(), (*principal).to_string());
        annotations.insert(seal::SEAL_ANNOTATION.into(), seal.clone());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(b.name.to_string()),
            namespace: Some(b.namespace.to_string()),
            owner_references: Some(vec![b.owner.clone()]),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.to_string()),
        data: Some(data),
        immutable: None,
        string_data: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("time")
    }

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "dbgrant.io/v1alpha1".into(),
            kind: "DatabaseAccessGrant".into(),
            name: "g".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn issued(token: &str, issued_at: i64, expires_at: i64) -> Issued {
        Issued {
            token: Token::new(token.to_string()),
            issued_at: at(issued_at),
            expires_at: at(expires_at),
            refresh_in: None,
        }
    }

    fn secret(formats: &[TokenFormat]) -> Secret {
        let issued = issued("header.payload.sig", 1_000, 4_600);
        build(&Build {
            name: "s",
            namespace: "shop",
            owner: owner("u"),
            issued: &issued,
            scope: "https://cosmos.azure.com/.default",
            tenant_id: "t",
            formats,
            refresh_at: at(2_800),
            inputs_hash: "abc",
            sealed: None,
        })
    }

    fn text(secret: &Secret, key: &str) -> String {
        String::from_utf8(secret.data.as_ref().expect("data")[key].0.clone()).expect("utf-8")
    }

    #[test]
    fn refresh_comes_at_half_life_with_jitter_only_ever_earlier() {
        let hour =
            |seed: &str| refresh_at(at(0), at(86_400), None, RefreshPolicy::Percent(50), seed);
        let mut seen = std::collections::BTreeSet::new();
        for seed in ["a", "b", "c", "d", "e", "f"] {
            let when = hour(seed).as_second();
            assert!((43_200 - 4_320..=43_200).contains(&when), "{seed}: {when}");
            assert_eq!(hour(seed), hour(seed), "the same seed, the same schedule");
            seen.insert(when);
        }
        assert!(seen.len() > 3, "seeds spread the schedule: {seen:?}");
    }

    #[test]
    fn refresh_is_never_later_than_ten_minutes_before_expiry() {
        // table: (lifetime, policy, refresh_in) → latest allowed second after issue
        let cases = [
            (900, RefreshPolicy::Percent(50), None, 300),
            (900, RefreshPolicy::Percent(90), None, 300),
            (3_600, RefreshPolicy::Percent(90), None, 3_000),
            (
                3_600,
                RefreshPolicy::Before(Duration::from_secs(1_200)),
                None,
                2_400,
            ),
            (
                86_400,
                RefreshPolicy::Percent(50),
                Some(Duration::from_secs(3_600)),
                3_600,
            ),
        ];
        for (lifetime, policy, refresh_in, latest) in cases {
            let when = refresh_at(at(0), at(lifetime), refresh_in, policy, "seed").as_second();
            assert!(when <= latest, "{lifetime} {policy:?}: {when} > {latest}");
            assert!(
                when >= latest * 8 / 10,
                "{lifetime} {policy:?}: {when} too early"
            );
        }
    }

    #[test]
    fn a_token_shorter_than_the_margin_is_not_refreshed_in_a_tight_loop() {
        let when = refresh_at(at(0), at(300), None, RefreshPolicy::Percent(50), "s");
        assert_eq!(when, at(30));
        let when = refresh_at(at(0), at(20), None, RefreshPolicy::Percent(50), "s");
        assert_eq!(when, at(10));
    }

    #[test]
    fn durations_parse_as_the_crd_allows() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        for bad in ["", "10", "m", "1d", "1h-2m"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_secret_holds_every_key_typed_labelled_owned_and_annotated() {
        let s = secret(&[
            TokenFormat::CosmosAuthorizationHeader,
            TokenFormat::PostgresPassword,
            TokenFormat::AzureCli,
        ]);
        assert_eq!(s.type_.as_deref(), Some(SECRET_TYPE));
        assert_eq!(text(&s, TOKEN_KEY), "header.payload.sig");
        assert_eq!(text(&s, EXPIRES_AT_KEY), "1970-01-01T01:16:40Z");
        assert_eq!(text(&s, EXPIRES_ON_KEY), "4600");
        assert_eq!(text(&s, TOKEN_TYPE_KEY), "Bearer");
        assert_eq!(text(&s, SCOPE_KEY), "https://cosmos.azure.com/.default");
        assert_eq!(
            text(&s, AUTHORIZATION_KEY),
            "type%3Daad%26ver%3D1.0%26sig%3Dheader.payload.sig"
        );
        assert_eq!(text(&s, PASSWORD_KEY), "header.payload.sig");
        assert_eq!(text(&s, ACCESS_TOKEN_KEY), "header.payload.sig");
        let json: serde_json::Value =
            serde_json::from_str(&text(&s, TOKEN_JSON_KEY)).expect("json");
        assert_eq!(json["expiresOn"], "1970-01-01 01:16:40.000000");
        assert_eq!(json["expires_on"], 4_600);
        assert_eq!(ownership(Some(&s), "u"), Ownership::Ours);
        let schedule = schedule_of(&s).expect("a schedule");
        assert_eq!(schedule.refresh_at, at(2_800));
        assert_eq!(schedule.issued_at, at(1_000));
        assert_eq!(schedule.fingerprint.len(), 12);
        assert!(!schedule.fingerprint.contains("sig"));
        let plain = secret(&[]);
        assert_eq!(plain.data.expect("data").len(), 5, "only the standard keys");
    }

    #[test]
    fn only_a_secret_made_by_dbgrant_for_this_grant_is_ours() {
        let ours = secret(&[]);
        assert_eq!(ownership(None, "u"), Ownership::Absent);
        assert_eq!(ownership(Some(&ours), "u"), Ownership::Ours);
        assert_eq!(
            ownership(Some(&ours), "other"),
            Ownership::OtherGrant(Some("g".into()))
        );
        // table of foreign Secrets: no label, no owner, an owner that is not a grant,
        // a grant owner that is not the controller.
        let mut unlabelled = ours.clone();
        unlabelled.metadata.labels = None;
        let mut unowned = ours.clone();
        unowned.metadata.owner_references = None;
        let mut deployment_owned = ours.clone();
        deployment_owned.metadata.owner_references = Some(vec![OwnerReference {
            kind: "Deployment".into(),
            api_version: "apps/v1".into(),
            ..owner("u")
        }]);
        let mut not_controller = ours.clone();
        not_controller.metadata.owner_references = Some(vec![OwnerReference {
            controller: None,
            ..owner("u")
        }]);
        for foreign in [unlabelled, unowned, deployment_owned, not_controller] {
            assert_eq!(ownership(Some(&foreign), "u"), Ownership::Foreign);
        }
    }

    #[test]
    fn a_secret_is_due_when_missing_changed_or_at_its_time() {
        let s = secret(&[]);
        let schedule = schedule_of(&s);
        assert_eq!(due(None, "abc", at(1_000)), Err(Why::Missing));
        assert_eq!(
            due(schedule.as_ref(), "abc", at(1_000)),
            Ok(Duration::from_secs(1_800))
        );
        assert_eq!(
            due(schedule.as_ref(), "xyz", at(1_000)),
            Err(Why::InputsChanged)
        );
        assert_eq!(due(schedule.as_ref(), "abc", at(2_800)), Err(Why::Due));
        let mut old = s.clone();
        old.type_ = Some("Opaque".into());
        assert_eq!(
            schedule_of(&old),
            None,
            "an older Opaque Secret is rewritten"
        );
        let mut edited = s;
        edited
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert(REFRESH_AT_ANNOTATION.into(), "soon".into());
        assert_eq!(schedule_of(&edited), None);
    }

    #[test]
    fn a_failed_refresh_is_degraded_until_near_expiry() {
        assert_eq!(standing(at(4_600), at(1_000)), Standing::Delayed);
        assert_eq!(standing(at(4_600), at(4_300)), Standing::Failing);
        assert_eq!(standing(at(4_600), at(5_000)), Standing::Failing);
    }

    #[test]
    fn the_inputs_hash_changes_with_every_input_but_format_order() {
        let base = Inputs {
            client_id: "c".into(),
            tenant_id: "t".into(),
            scope: "s".into(),
            formats: vec![TokenFormat::AzureCli, TokenFormat::PostgresPassword],
            policy: RefreshPolicy::Percent(50),
        };
        let mut reordered = base.clone();
        reordered.formats.reverse();
        assert_eq!(base.hash(), reordered.hash());
        let changes = [
            Inputs {
                client_id: "d".into(),
                ..base.clone()
            },
            Inputs {
                tenant_id: "u".into(),
                ..base.clone()
            },
            Inputs {
                scope: "z".into(),
                ..base.clone()
            },
            Inputs {
                formats: vec![],
                ..base.clone()
            },
            Inputs {
                policy: RefreshPolicy::Percent(60),
                ..base.clone()
            },
        ];
        for changed in changes {
            assert_ne!(base.hash(), changed.hash(), "{changed:?}");
        }
    }
}
