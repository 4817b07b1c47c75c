//! What the Management API says about the target project's Auth, read before a run plans its
//! sign-ins: `GET <api>/v1/projects/{ref}/config/auth` with a personal access token
//! (`SUPABASE_ACCESS_TOKEN`). The run takes its `/token` limit, the access-token lifetime and
//! whether IP address forwarding is on from here instead of assuming the hosted defaults; and its
//! compute size (`/v1/projects/{ref}/billing/addons`), from which `capacity` models the target.

use serde::Deserialize;

/// Where the Management API is when `FLEETBENCH_MANAGEMENT_API` does not say.
pub const HOSTED_API: &str = "https://api.supabase.com";

/// The fields of the project's Auth configuration a run plans with. Every field of the
/// Management API's `AuthConfigResponse` is nullable (supabase/cli's OpenAPI document): a `null`
/// or a missing field is unknown, never an error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AuthConfig {
    /// `/token` calls per 5 minutes per client address (password and refresh grants).
    #[serde(default)]
    pub rate_limit_token_refresh: Option<u32>,
    /// Access-token lifetime, seconds.
    #[serde(default)]
    pub jwt_exp: Option<u64>,
    /// Whether `Sb-Forwarded-For` counts with the secret key.
    #[serde(default)]
    pub security_sb_forwarded_for_enabled: Option<bool>,
}

/// The project ref of a target: `SUPABASE_PROJECT_REF`, else the first label of a
/// `<ref>.supabase.co` URL.
pub fn project_ref(api_url: &str, explicit: Option<&str>) -> Option<String> {
    if let Some(r) = explicit.filter(|r| !r.is_empty()) {
        return Some(r.to_string());
    }
    let host = api_url.split("://").nth(1)?.split(['/', ':']).next()?;
    host.strip_suffix(".supabase.co").map(str::to_string)
}

/// `GET <api>/v1/projects/{ref}<path>` with the token, as JSON `T`; the error says what failed
/// without the token.
async fn get<T: serde::de::DeserializeOwned>(
    api: &str,
    project_ref: &str,
    path: &str,
    token: &str,
) -> Result<T, String> {
    let url = format!(
        "{}/v1/projects/{project_ref}{path}",
        api.trim_end_matches('/')
    );
    let roots = fleetbench_tls::reqwest_roots().map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .tls_certs_merge(roots)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let response = http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(format!(
            "GET {url}: {status}: {}",
            body.chars().take(200).collect::<String>()
        ));
    }
    response
        .json::<T>()
        .await
        .map_err(|e| format!("GET {url}: not the JSON expected: {e}"))
}

/// Reads the project's Auth configuration.
pub async fn auth_config(api: &str, project_ref: &str, token: &str) -> Result<AuthConfig, String> {
    get(api, project_ref, "/config/auth", token).await
}

#[derive(Deserialize)]
struct Addons {
    selected_addons: Vec<Addon>,
}

#[derive(Deserialize)]
struct Addon {
    #[serde(rename = "type")]
    kind: String,
    variant: Variant,
}

#[derive(Deserialize)]
struct Variant {
    id: String,
}

/// The project's compute size as Supabase's compute docs name it (`Micro`, `XL`, `2XL`, …), from
/// its billing add-ons (`GET /v1/projects/{ref}/billing/addons`: the `compute_instance` add-on's
/// variant `ci_<size>`; none is Nano).
pub async fn compute_size(api: &str, project_ref: &str, token: &str) -> Result<String, String> {
    let addons: Addons = get(api, project_ref, "/billing/addons", token).await?;
    Ok(addons
        .selected_addons
        .iter()
        .find(|a| a.kind == "compute_instance")
        .map_or("Nano".to_string(), |a| size_name(&a.variant.id)))
}

/// `ci_2xlarge` → `2XL`, `ci_micro` → `Micro`.
fn size_name(variant: &str) -> String {
    let size = variant.strip_prefix("ci_").unwrap_or(variant);
    match size.strip_suffix("xlarge") {
        Some(n) => format!("{}XL", n.to_ascii_uppercase()),
        None => {
            let mut c = size.chars();
            c.next().map_or(String::new(), |f| {
                f.to_ascii_uppercase().to_string() + c.as_str()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    /// hosted's Auth config with its nullable fields null or absent reads as unknown.
    #[test]
    fn null_auth_fields_are_unknown_not_errors() {
        let all_null: super::AuthConfig = serde_json::from_str(
            r#"{"rate_limit_token_refresh":null,"jwt_exp":null,"security_sb_forwarded_for_enabled":null,"site_url":null}"#,
        )
        .unwrap();
        assert_eq!(
            (
                all_null.rate_limit_token_refresh,
                all_null.jwt_exp,
                all_null.security_sb_forwarded_for_enabled
            ),
            (None, None, None)
        );
        let absent: super::AuthConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(absent, all_null);
    }

    #[test]
    fn compute_variants_read_as_the_docs_name_sizes() {
        for (variant, size) in [
            ("ci_micro", "Micro"),
            ("ci_xlarge", "XL"),
            ("ci_2xlarge", "2XL"),
            ("ci_16xlarge", "16XL"),
            ("ci_large", "Large"),
        ] {
            assert_eq!(super::size_name(variant), size);
        }
    }

    #[test]
    fn the_ref_is_explicit_or_the_hosted_host_s_first_label() {
        let r = super::project_ref;
        assert_eq!(r("https://abcd.supabase.co", None).as_deref(), Some("abcd"));
        assert_eq!(
            r("https://abcd.supabase.co:443/", None).as_deref(),
            Some("abcd")
        );
        assert_eq!(
            r("https://127.0.0.1:9", Some("xyz")).as_deref(),
            Some("xyz")
        );
        assert_eq!(r("https://127.0.0.1:9", None), None);
    }
}
