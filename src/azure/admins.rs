//! What the PostgreSQL and T-SQL servers' ARM reads share: the Entra administrator
//! resource's envelope and the hint a refused read gets.

use serde::Deserialize;

use crate::api::Reason;
use crate::backend::BackendError;

/// One Microsoft Entra administrator resource, `P` the backend's properties.
#[derive(Deserialize)]
pub(super) struct Administrator<P> {
    /// The resource's name (a flexible server's admin is named by its object id).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub properties: P,
}

/// `error`, when ARM refused the read (403), saying what the operator needs: `needs` is the
/// permission and where (`… on the server (Reader does)`).
pub(super) fn naming_the_permission(mut error: BackendError, needs: &str) -> BackendError {
    if error.reason == Reason::AzureForbidden {
        error.message = format!("{}; the operator needs {needs}", error.message);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_read_names_the_permission() {
        let needs = "Microsoft.Sql/servers/administrators/read on the SQL server (Reader does)";
        let refused = BackendError::new(Reason::AzureForbidden, "forbidden");
        assert_eq!(
            naming_the_permission(refused, needs).message,
            format!("forbidden; the operator needs {needs}")
        );
        let throttled = BackendError::new(Reason::AzureThrottled, "throttled");
        assert_eq!(naming_the_permission(throttled, needs).message, "throttled");
    }

    #[test]
    fn a_missing_name_or_properties_default() {
        #[derive(Deserialize, Default)]
        struct Properties {
            login: Option<String>,
        }
        let bare: Administrator<Properties> = serde_json::from_str("{}").unwrap();
        assert_eq!(bare.name, "");
        assert_eq!(bare.properties.login, None);
    }
}
