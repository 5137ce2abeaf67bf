//! Azure error bodies and what they mean for a grant: ARM errors (wrapped
//! `{"error":{code,message}}` and flat `{code,message}`), Entra ID token errors
//! (`{error, error_description, error_codes}`), and HTTP statuses, each mapped to a
//! [`BackendError`] with the condition reason users will see.
//!
//! Messages carry Azure's code and description; never a request header or a token.

use std::time::Duration;

use serde::Deserialize;

use crate::api::Reason;
use crate::backend::BackendError;

/// The `code` and `message` of an ARM error, whichever envelope it came in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArmError {
    /// Azure's invariant error code (`AuthorizationFailed`, `BadRequest`, …); empty if absent.
    pub code: String,
    /// Azure's human-readable message; empty if absent.
    pub message: String,
}

#[derive(Deserialize)]
struct CodeMessage {
    #[serde(default, alias = "Code")]
    code: Option<String>,
    #[serde(default, alias = "Message")]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Wrapped {
    #[serde(alias = "Error")]
    error: CodeMessage,
}

impl ArmError {
    /// Parse an ARM error body in either envelope; `None` when it is neither (an HTML page
    /// from a proxy, an empty body).
    pub fn parse(body: &[u8]) -> Option<Self> {
        let inner = serde_json::from_slice::<Wrapped>(body)
            .map(|w| w.error)
            .or_else(|_| serde_json::from_slice::<CodeMessage>(body))
            .ok()?;
        if inner.code.is_none() && inner.message.is_none() {
            return None;
        }
        Some(Self {
            code: inner.code.unwrap_or_default(),
            message: inner.message.map(first_line).unwrap_or_default(),
        })
    }
}

/// The first line of an Azure message: what follows (`ActivityId`, trace ids, stack traces)
/// is noise in a condition message.
fn first_line(message: String) -> String {
    match message.find(['\r', '\n']) {
        Some(end) => message[..end].trim_end().to_string(),
        None => message,
    }
}

/// Map an ARM failure to the reason users see. `status` is the HTTP status, or `None` for an
/// operation that failed asynchronously (its error came in a long-running operation's body).
pub fn arm_reason(status: Option<u16>, error: &ArmError) -> Reason {
    let code = error.code.to_ascii_lowercase();
    let message = error.message.to_ascii_lowercase();
    // The principal check can only be recognised by its text: Cosmos reports it as BadRequest.
    let principal_missing = code == "principalnotfound"
        || (message.contains("principal") && message.contains("not found"))
        || (message.contains("principal") && message.contains("does not exist"));
    match status {
        Some(429) => Reason::AzureThrottled,
        _ if code == "toomanyrequests" || code.contains("throttl") => Reason::AzureThrottled,
        Some(412) => Reason::AccountBusy,
        _ if code == "preconditionfailed" || code == "anotheroperationinprogress" => {
            Reason::AccountBusy
        }
        Some(409) => Reason::AccountBusy,
        Some(401 | 403) => Reason::AzureForbidden,
        _ if code.contains("authorizationfailed") || code == "forbidden" => Reason::AzureForbidden,
        _ if principal_missing => Reason::PrincipalNotFound,
        // A custom role the target reconciler has not created yet: retried, not the grant's fault.
        _ if message.contains("role definition")
            && (message.contains("does not exist") || message.contains("not found")) =>
        {
            Reason::TargetNotReady
        }
        // The account, its resource group or subscription is missing: the target is not usable
        // yet; retried with backoff so it recovers once the account exists.
        Some(404) => Reason::TargetNotReady,
        _ if code.contains("notfound") => Reason::TargetNotReady,
        Some(s) if s >= 500 => Reason::AzureUnavailable,
        Some(400..=499) => Reason::InvalidSpec,
        // An asynchronous failure with an unknown code: treat as transient.
        _ => Reason::AzureUnavailable,
    }
}

/// A [`BackendError`] for a failed ARM call `what` (e.g. "PUT role assignment X").
pub fn arm_failure(
    what: &str,
    status: Option<u16>,
    body: &[u8],
    retry_after: Option<Duration>,
) -> BackendError {
    let error = ArmError::parse(body).unwrap_or_default();
    let reason = arm_reason(status, &error);
    let mut message = format!("{what}: ");
    if let Some(status) = status {
        message.push_str(&format!("HTTP {status}"));
    } else {
        message.push_str("operation failed");
    }
    if !error.code.is_empty() {
        message.push_str(&format!(" {}", error.code));
    }
    if !error.message.is_empty() {
        message.push_str(&format!(": {}", error.message));
    }
    BackendError {
        reason,
        message,
        retry_after: retry_after.map(crate::backend::bounded_retry_after),
        http_status: status,
        code: (!error.code.is_empty()).then(|| error.code.clone()),
        request_id: None,
    }
}

/// An Entra ID token endpoint error.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct EntraError {
    /// OAuth error (`invalid_request`, `unauthorized_client`, …).
    #[serde(default)]
    pub error: String,
    /// Description starting with `AADSTSnnnn:`.
    #[serde(default)]
    pub error_description: String,
    /// The AADSTS numbers.
    #[serde(default)]
    pub error_codes: Vec<i64>,
}

impl EntraError {
    /// The AADSTS codes, from `error_codes` or, failing that, the description's prefix.
    pub fn codes(&self) -> Vec<i64> {
        if !self.error_codes.is_empty() {
            return self.error_codes.clone();
        }
        self.error_description
            .strip_prefix("AADSTS")
            .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect())
            .and_then(|digits: String| digits.parse().ok())
            .into_iter()
            .collect()
    }
}

/// Map an Entra ID failure of the workload's token exchange to a reason. Branches on the
/// AADSTS codes and the OAuth error, never on the description (Microsoft may reword it).
pub fn entra_reason(status: u16, error: &EntraError) -> Reason {
    let codes = error.codes();
    let has = |wanted: &[i64]| codes.iter().any(|c| wanted.contains(c));
    if status == 429 {
        Reason::AzureThrottled
    } else if status >= 500 {
        Reason::AzureUnavailable
    } else if has(&[70021, 700213, 700211, 700212]) {
        // No federated credential matches the assertion's issuer, subject or audience.
        Reason::IdentityNotFederated
    } else if has(&[700016, 90002, 900023]) {
        // The client id (or the tenant) is unknown.
        Reason::UnknownClientId
    } else if has(&[90061, 500011]) {
        // The issuer's discovery document could not be fetched, or the Cosmos DB audience is
        // not registered in this cloud: neither is the grant's fault, and both can recover.
        Reason::AzureUnavailable
    } else if error.error == "unauthorized_client" {
        Reason::UnknownClientId
    } else {
        // Any other refusal of the assertion (bad signature, expired): the identity cannot
        // be used with this ServiceAccount as set up.
        Reason::IdentityNotFederated
    }
}

/// A [`BackendError`] for a failed token exchange.
pub fn entra_failure(what: &str, status: u16, body: &[u8]) -> BackendError {
    let error: EntraError = serde_json::from_slice(body).unwrap_or_default();
    let reason = entra_reason(status, &error);
    let description = first_line(error.error_description.clone());
    let message = if description.is_empty() {
        format!("{what}: Entra ID answered HTTP {status}")
    } else {
        format!("{what}: {description}")
    };
    BackendError::new(reason, message)
}

/// Parse `Retry-After` (delta seconds; an HTTP-date is accepted too) relative to now.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(crate::backend::bounded_retry_after(Duration::from_secs(
            secs,
        )));
    }
    let when = k8s_openapi::jiff::fmt::rfc2822::parse(value).ok()?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let delta = when.timestamp().duration_since(now);
    Some(crate::backend::bounded_retry_after(
        Duration::try_from(delta).unwrap_or(Duration::ZERO),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_arm_envelopes_parse() {
        let wrapped =
            br#"{"error":{"code":"AuthorizationFailed","message":"no\r\nActivityId: 1"}}"#;
        let flat = br#"{"code":"NotFound","message":"Unable to find a SQL Role Assignment"}"#;
        assert_eq!(
            ArmError::parse(wrapped),
            Some(ArmError {
                code: "AuthorizationFailed".into(),
                message: "no".into()
            })
        );
        assert_eq!(
            ArmError::parse(flat).map(|e| e.code),
            Some("NotFound".into())
        );
        assert_eq!(ArmError::parse(b"<html>bad gateway</html>"), None);
        assert_eq!(ArmError::parse(b"{}"), None);
    }

    #[test]
    fn arm_statuses_and_codes_map_to_reasons() {
        let e = |code: &str, message: &str| ArmError {
            code: code.into(),
            message: message.into(),
        };
        assert_eq!(arm_reason(Some(429), &e("", "")), Reason::AzureThrottled);
        assert_eq!(
            arm_reason(Some(403), &e("AuthorizationFailed", "x")),
            Reason::AzureForbidden
        );
        assert_eq!(
            arm_reason(Some(412), &e("PreconditionFailed", "lock")),
            Reason::AccountBusy
        );
        assert_eq!(
            arm_reason(Some(404), &e("ResourceNotFound", "account")),
            Reason::TargetNotReady
        );
        assert_eq!(
            arm_reason(
                Some(400),
                &e(
                    "BadRequest",
                    "The provided principal ID [x] was not found in the AAD tenant(s) [t]"
                )
            ),
            Reason::PrincipalNotFound
        );
        assert_eq!(
            arm_reason(
                None,
                &e(
                    "BadRequest",
                    "principal ID [x] was not found in the AAD tenant"
                )
            ),
            Reason::PrincipalNotFound
        );
        assert_eq!(
            arm_reason(
                Some(400),
                &e(
                    "BadRequest",
                    "The specified role definition with ID 'abc' does not exist."
                )
            ),
            Reason::TargetNotReady
        );
        assert_eq!(
            arm_reason(
                Some(400),
                &e("BadRequest", "Could not parse property [scope]")
            ),
            Reason::InvalidSpec
        );
        assert_eq!(
            arm_reason(Some(503), &e("ServiceUnavailable", "")),
            Reason::AzureUnavailable
        );
        assert_eq!(
            arm_reason(None, &e("Conflict", "?")),
            Reason::AzureUnavailable
        );
    }

    #[test]
    fn arm_failure_messages_name_the_call_and_azure_code() {
        let err = arm_failure(
            "PUT role assignment a",
            Some(403),
            br#"{"error":{"code":"AuthorizationFailed","message":"The client does not have authorization"}}"#,
            None,
        );
        assert_eq!(err.reason, Reason::AzureForbidden);
        assert_eq!(
            err.message,
            "PUT role assignment a: HTTP 403 AuthorizationFailed: The client does not have authorization"
        );
    }

    #[test]
    fn entra_codes_map_to_reasons() {
        let body = |codes: &str, error: &str| {
            format!(
                r#"{{"error":"{error}","error_description":"AADSTS{codes}: text.\r\nTrace ID: 1","error_codes":[{codes}]}}"#
            )
        };
        let reason = |status, codes: &str, error: &str| {
            entra_failure("exchange", status, body(codes, error).as_bytes()).reason
        };
        assert_eq!(
            reason(400, "70021", "invalid_request"),
            Reason::IdentityNotFederated
        );
        assert_eq!(
            reason(400, "700213", "invalid_request"),
            Reason::IdentityNotFederated
        );
        assert_eq!(
            reason(400, "700016", "unauthorized_client"),
            Reason::UnknownClientId
        );
        assert_eq!(
            reason(400, "90002", "invalid_request"),
            Reason::UnknownClientId
        );
        assert_eq!(
            reason(400, "90061", "invalid_request"),
            Reason::AzureUnavailable
        );
        assert_eq!(reason(429, "0", "throttled"), Reason::AzureThrottled);
        assert_eq!(
            reason(503, "0", "temporarily_unavailable"),
            Reason::AzureUnavailable
        );
        let err = entra_failure("exchange", 400, body("70021", "invalid_request").as_bytes());
        assert_eq!(err.message, "exchange: AADSTS70021: text.");
    }

    #[test]
    fn aadsts_code_is_read_from_the_description_when_codes_are_absent() {
        let error = EntraError {
            error: "invalid_request".into(),
            error_description: "AADSTS700016: Application not found".into(),
            error_codes: vec![],
        };
        assert_eq!(error.codes(), vec![700016]);
        assert_eq!(entra_reason(400, &error), Reason::UnknownClientId);
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        // Hostile values are bounded, never an overflow later.
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(crate::backend::MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Wed, 01 Jan 2200 00:00:00 GMT"),
            Some(crate::backend::MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("99999999999999999999999"), None);
    }
}
