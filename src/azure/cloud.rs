//! Azure clouds: the Entra authority, ARM endpoint and token audiences of the public cloud,
//! Azure China (21Vianet), Azure US Government, or a custom (private, sovereign or simulated)
//! cloud whose endpoints are configured explicitly.

use azure_core::http::Url;

/// Which Azure cloud the operator talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Cloud {
    /// Azure public cloud.
    #[default]
    #[value(name = "AzurePublicCloud", alias = "AzureCloud")]
    AzurePublicCloud,
    /// Azure operated by 21Vianet in China.
    #[value(name = "AzureChinaCloud")]
    AzureChinaCloud,
    /// Azure US Government.
    #[value(name = "AzureUSGovernment")]
    AzureUsGovernment,
    /// Endpoints given explicitly (`--azure-authority-host` and `--azure-arm-endpoint`).
    #[value(name = "Custom")]
    Custom,
}

impl Cloud {
    /// Entra ID authority host, `None` for a custom cloud.
    pub fn authority_host(self) -> Option<&'static str> {
        match self {
            Self::AzurePublicCloud => Some("https://login.microsoftonline.com/"),
            Self::AzureChinaCloud => Some("https://login.chinacloudapi.cn/"),
            Self::AzureUsGovernment => Some("https://login.microsoftonline.us/"),
            Self::Custom => None,
        }
    }

    /// Azure Resource Manager endpoint, `None` for a custom cloud.
    pub fn arm_endpoint(self) -> Option<&'static str> {
        match self {
            Self::AzurePublicCloud => Some("https://management.azure.com/"),
            Self::AzureChinaCloud => Some("https://management.chinacloudapi.cn/"),
            Self::AzureUsGovernment => Some("https://management.usgovcloudapi.net/"),
            Self::Custom => None,
        }
    }

    /// Audience of Cosmos DB data-plane tokens. A custom cloud uses the public audience, which
    /// is what the simulator and most private Azure Stack setups accept.
    pub fn cosmos_audience(self) -> &'static str {
        match self {
            Self::AzurePublicCloud | Self::Custom => "https://cosmos.azure.com",
            Self::AzureChinaCloud => "https://cosmos.azure.cn",
            Self::AzureUsGovernment => "https://cosmos.azure.us",
        }
    }

    /// Audience of Azure SQL (Database, Managed Instance, Synapse) tokens.
    pub fn sql_audience(self) -> &'static str {
        match self {
            Self::AzurePublicCloud | Self::Custom => "https://database.windows.net",
            Self::AzureChinaCloud => "https://database.chinacloudapi.cn",
            Self::AzureUsGovernment => "https://database.usgovcloudapi.net",
        }
    }

    /// Audience of Azure Database for PostgreSQL tokens.
    pub fn postgres_audience(self) -> &'static str {
        match self {
            Self::AzurePublicCloud | Self::Custom => "https://ossrdbms-aad.database.windows.net",
            Self::AzureChinaCloud => "https://ossrdbms-aad.database.chinacloudapi.cn",
            Self::AzureUsGovernment => "https://ossrdbms-aad.database.usgovcloudapi.net",
        }
    }

    /// The OAuth scope of a token for `scope` in this cloud.
    pub fn scope(self, scope: &crate::backend::TokenScope) -> String {
        use crate::backend::TokenScope;
        match scope {
            TokenScope::CosmosDb => self.cosmos_scope(),
            TokenScope::AzureSql => format!("{}/.default", self.sql_audience()),
            TokenScope::PostgreSql => format!("{}/.default", self.postgres_audience()),
            TokenScope::Explicit(scope) => scope.clone(),
        }
    }

    /// The OAuth scope of a Cosmos DB data-plane token.
    pub fn cosmos_scope(self) -> String {
        format!("{}/.default", self.cosmos_audience())
    }

    /// The OAuth scope of an ARM token. For a custom cloud the ARM endpoint's origin is the
    /// audience, as for the named clouds.
    pub fn arm_scope(self, arm_endpoint: &Url) -> String {
        let origin = match self.arm_endpoint() {
            Some(known) => known.trim_end_matches('/').to_string(),
            None => arm_endpoint.origin().ascii_serialization(),
        };
        format!("{origin}/.default")
    }
}

/// `url` with exactly one trailing slash on its path, so joining a relative path appends to
/// it instead of replacing its last segment.
pub(crate) fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_clouds_have_their_documented_endpoints() {
        assert_eq!(
            Cloud::AzureChinaCloud.authority_host(),
            Some("https://login.chinacloudapi.cn/")
        );
        assert_eq!(
            Cloud::AzureUsGovernment.arm_endpoint(),
            Some("https://management.usgovcloudapi.net/")
        );
        assert_eq!(
            Cloud::AzureUsGovernment.cosmos_scope(),
            "https://cosmos.azure.us/.default"
        );
        assert_eq!(Cloud::Custom.authority_host(), None);
        let arm = Url::parse("https://management.azure.com/").expect("url");
        assert_eq!(
            Cloud::AzurePublicCloud.arm_scope(&arm),
            "https://management.azure.com/.default"
        );
    }

    #[test]
    fn custom_clouds_take_the_arm_audience_from_the_endpoint() {
        let arm = Url::parse("https://127.0.0.1:8443/arm/").expect("url");
        assert_eq!(
            Cloud::Custom.arm_scope(&arm),
            "https://127.0.0.1:8443/.default"
        );
        assert_eq!(
            Cloud::Custom.cosmos_scope(),
            "https://cosmos.azure.com/.default"
        );
    }

    #[test]
    fn trailing_slash_is_added_once() {
        let url = with_trailing_slash(Url::parse("https://h/prefix").expect("url"));
        assert_eq!(url.as_str(), "https://h/prefix/");
        assert_eq!(
            with_trailing_slash(url.clone())
                .join("t/oauth2")
                .expect("join")
                .as_str(),
            "https://h/prefix/t/oauth2"
        );
    }
}
