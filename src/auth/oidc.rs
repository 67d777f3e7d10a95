//! Signing in with an OpenID Connect provider (`auth.oidc`): the authorization code flow
//! with PKCE, state and nonce; the provider's ID token checked by the `openidconnect`
//! crate (signature against the provider's keys, issuer, audience, expiry, nonce); and
//! refreshing a user's sign-in with the stored refresh token.
//!
//! State, nonce and PKCE verifier of a sign-in in flight live in the database
//! (`pending_logins`), so the callback may land on any replica; the callback takes the
//! row, so a state (and with it an authorization code) is good once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse,
};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::metadata::signin::{OidcSession, PendingLogin};
use crate::metadata::{MetaError, MetadataStore, now_millis};

/// `auth.oidc`: empty `issuer` turns OpenID Connect sign-in off.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (discovery is read from
    /// `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// The ID token claim that names the user (their Berth username).
    pub username_claim: String,
    /// The ID token claim listing the user's groups (project memberships can be given to
    /// groups); empty: groups are not read.
    pub groups_claim: String,
    /// Members of this group are system administrators; empty: none are by group.
    pub admin_group: String,
    /// A PEM file of the CA that signed the provider's certificate (private issuers).
    pub ca_file: PathBuf,
    /// Where the provider sends the browser back, a path of this site (Harbor's by
    /// default, so a client registered for Harbor works unchanged).
    pub redirect_path: String,
    /// The URL browsers reach Berth at (`https://registry.example.com`); empty: taken
    /// from each request's Host header and the listener's scheme.
    pub external_url: String,
    /// A person who comes back under a new subject (the provider was redeployed) is linked
    /// to the account with the same verified email address, instead of being told to ask
    /// an administrator.
    pub link_by_verified_email: bool,
    /// CLI secrets stop working when the user's sign-in can no longer be refreshed with
    /// the provider (the provider revoked it); the user signs in to the web UI again.
    pub cli_secret_follows_sign_in: bool,
    /// Local users may sign in to the web UI with their password too.
    pub local_sign_in: bool,
    /// Sign-ins are refreshed with the provider at least this often (and before their
    /// access token lapses), so a person the provider disabled is noticed within it.
    pub recheck_seconds: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            scopes: vec![
                "profile".into(),
                "email".into(),
                "groups".into(),
                "offline_access".into(),
            ],
            username_claim: "preferred_username".into(),
            groups_claim: "groups".into(),
            admin_group: String::new(),
            ca_file: PathBuf::new(),
            redirect_path: "/c/oidc/callback".into(),
            external_url: String::new(),
            link_by_verified_email: false,
            cli_secret_follows_sign_in: false,
            local_sign_in: true,
            recheck_seconds: 300,
        }
    }
}

/// The client secret stays out of any debug output.
impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("scopes", &self.scopes)
            .field("username_claim", &self.username_claim)
            .field("groups_claim", &self.groups_claim)
            .field("admin_group", &self.admin_group)
            .field("redirect_path", &self.redirect_path)
            .field("external_url", &self.external_url)
            .finish_non_exhaustive()
    }
}

impl OidcConfig {
    pub fn enabled(&self) -> bool {
        !self.issuer.is_empty()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        if self.client_id.is_empty() {
            anyhow::bail!("auth.oidc.client_id must be set when auth.oidc.issuer is");
        }
        IssuerUrl::new(self.issuer.clone())
            .map_err(|e| anyhow::anyhow!("auth.oidc.issuer {:?}: {e}", self.issuer))?;
        if !self.redirect_path.starts_with('/') {
            anyhow::bail!("auth.oidc.redirect_path must be a path starting with /");
        }
        if self.recheck_seconds == 0 {
            anyhow::bail!("auth.oidc.recheck_seconds must be positive");
        }
        if self.username_claim.is_empty() {
            anyhow::bail!("auth.oidc.username_claim must name a claim");
        }
        Ok(())
    }
}

/// Why a sign-in failed, in words for the person signing in.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error(
        "this sign-in has expired or was already used (a sign-in link works once, for 10 minutes): start again"
    )]
    UnknownState,
    #[error("the identity provider refused the sign-in: {0}")]
    Provider(String),
    #[error("the identity provider's answer could not be verified: {0}")]
    Invalid(String),
    #[error("the identity provider cannot be reached now: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Store(#[from] MetaError),
}

/// Who the provider says signed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    /// The username claim, if present and non-empty.
    pub username: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub refresh_token: Option<String>,
    /// When the provider's access token lapses (Unix ms).
    pub expires_at: i64,
}

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Discovery is re-read after this long (keys rotate).
const DISCOVERY_FOR: Duration = Duration::from_secs(300);
/// How long a sign-in may take between the redirect and the callback.
pub const PENDING_FOR_MS: i64 = 10 * 60 * 1000;
/// How long an access token is assumed to last when the provider does not say.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(3600);

/// The relying party: configuration, the HTTP client that talks to the provider, and the
/// provider's discovered metadata.
pub struct Oidc {
    pub config: OidcConfig,
    meta: Arc<dyn MetadataStore>,
    http: openidconnect::reqwest::Client,
    discovered: Mutex<Option<(Arc<CoreProviderMetadata>, Instant)>>,
}

impl Oidc {
    pub fn new(config: OidcConfig, meta: Arc<dyn MetadataStore>) -> anyhow::Result<Oidc> {
        let mut http = openidconnect::reqwest::ClientBuilder::new()
            // The spec's advice: never follow redirects from the token endpoint (SSRF).
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15));
        if !config.ca_file.as_os_str().is_empty() {
            let pem = std::fs::read(&config.ca_file).map_err(|e| {
                anyhow::anyhow!("auth.oidc.ca_file {}: {e}", config.ca_file.display())
            })?;
            for cert in openidconnect::reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("auth.oidc.ca_file: {e}"))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Oidc {
            config,
            meta,
            http: http.build()?,
            discovered: Mutex::new(None),
        })
    }

    async fn metadata(&self) -> Result<Arc<CoreProviderMetadata>, OidcError> {
        let mut held = self.discovered.lock().await;
        if let Some((m, at)) = held.as_ref() {
            if at.elapsed() < DISCOVERY_FOR {
                return Ok(m.clone());
            }
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| OidcError::Invalid(e.to_string()))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| OidcError::Unreachable(describe(&e)))?;
        let m = Arc::new(m);
        *held = Some((m.clone(), Instant::now()));
        Ok(m)
    }

    async fn client(&self, redirect: &str) -> Result<Client, OidcError> {
        let metadata = self.metadata().await?;
        let secret = (!self.config.client_secret.is_empty())
            .then(|| ClientSecret::new(self.config.client_secret.clone()));
        let redirect = RedirectUrl::new(redirect.to_string())
            .map_err(|e| OidcError::Invalid(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            (*metadata).clone(),
            ClientId::new(self.config.client_id.clone()),
            secret,
        )
        .set_redirect_uri(redirect))
    }

    /// Starts a sign-in: remembers state, nonce and PKCE verifier, and returns the
    /// provider's authorization URL to send the browser to. `redirect` is this site's
    /// callback URL; `return_to` a path of this site to land on afterwards.
    pub async fn begin(&self, redirect: &str, return_to: &str) -> Result<String, OidcError> {
        let client = self.client(redirect).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if self.config.scopes.iter().any(|s| s == "offline_access") {
            // Providers issue refresh tokens for offline_access only with consent asked.
            request = request.add_prompt(openidconnect::core::CoreAuthPrompt::Consent);
        }
        let (url, state, nonce) = request.url();
        self.meta
            .put_pending_login(&PendingLogin {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                return_to: return_to.to_string(),
                created_at: now_millis(),
            })
            .await?;
        Ok(url.to_string())
    }

    /// Finishes a sign-in at the callback: takes the pending sign-in for `state` (once),
    /// redeems `code` with its PKCE verifier, and checks the ID token (signature, issuer,
    /// audience, expiry, nonce). Returns who signed in and where they wanted to go.
    pub async fn finish(
        &self,
        redirect: &str,
        state: &str,
        code: &str,
    ) -> Result<(Identity, String), OidcError> {
        let pending = self
            .meta
            .take_pending_login(state)
            .await?
            .filter(|p| now_millis() - p.created_at < PENDING_FOR_MS)
            .ok_or(OidcError::UnknownState)?;
        let client = self.client(redirect).await?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Invalid(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::Invalid("the token response has no ID token".into()))?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(pending.nonce.clone()))
            .map_err(|e| OidcError::Invalid(e.to_string()))?;
        // The token is verified: read the claims the configuration names from its payload.
        let extra = payload(&id_token.to_string())?;
        let identity = Identity {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            username: claim_text(&extra, &self.config.username_claim),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified().unwrap_or(false),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
            groups: claim_list(&extra, &self.config.groups_claim),
            refresh_token: response.refresh_token().map(|t| t.secret().clone()),
            expires_at: expiry(response.expires_in()),
        };
        Ok((identity, pending.return_to))
    }

    /// Checks an ID token a script presents as a Bearer credential: signed by the
    /// provider's keys, issued by it for this client, not expired. Returns its (issuer,
    /// subject). There is no nonce to check: the script got the token on its own.
    pub async fn verify_id_token(&self, token: &str) -> Result<(String, String), OidcError> {
        let id_token: openidconnect::core::CoreIdToken = token
            .parse()
            .map_err(|e: serde_json::Error| OidcError::Invalid(format!("not an ID token: {e}")))?;
        let client = self.client(&self.config.issuer).await?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .map_err(|e| OidcError::Invalid(e.to_string()))?;
        Ok((claims.issuer().to_string(), claims.subject().to_string()))
    }

    /// Refreshes a user's sign-in with their refresh token; the new session to store, or
    /// why the provider refused (then the sign-in has lapsed). Unreachable providers are
    /// an `Err(Unreachable)`: try again later, nothing lapses.
    pub async fn refresh(&self, s: &OidcSession) -> Result<OidcSession, OidcError> {
        let Some(token) = s.refresh_token.clone() else {
            return Err(OidcError::Provider("no refresh token was issued".into()));
        };
        // The redirect URI plays no part in a refresh; the client wants one set.
        let client = self.client(&self.config.issuer).await?;
        let token = RefreshToken::new(token);
        let response = client
            .exchange_refresh_token(&token)
            .map_err(|e| OidcError::Invalid(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        Ok(OidcSession {
            user_id: s.user_id,
            refresh_token: response
                .refresh_token()
                .map(|t| t.secret().clone())
                .or(s.refresh_token.clone()),
            expires_at: expiry(response.expires_in()),
            refreshed_at: now_millis(),
            failure: None,
        })
    }
}

fn expiry(expires_in: Option<Duration>) -> i64 {
    now_millis() + expires_in.unwrap_or(DEFAULT_EXPIRY).as_millis() as i64
}

fn token_error<RE: std::error::Error + 'static, T: openidconnect::ErrorResponse + 'static>(
    e: RequestTokenError<RE, T>,
) -> OidcError {
    match e {
        RequestTokenError::ServerResponse(r) => OidcError::Provider(r.to_string()),
        RequestTokenError::Request(e) => OidcError::Unreachable(describe(&e)),
        other => OidcError::Invalid(describe(&other)),
    }
}

/// An error with its causes, for the log and the page.
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// A JWT's payload as JSON (its signature was checked by the caller).
fn payload(jwt: &str) -> Result<HashMap<String, serde_json::Value>, OidcError> {
    use base64::Engine;
    let part = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| OidcError::Invalid("the ID token is not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| OidcError::Invalid(format!("the ID token's payload: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| OidcError::Invalid(format!("the ID token's payload: {e}")))
}

fn claim_text(claims: &HashMap<String, serde_json::Value>, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A claim holding a list of strings (or one string).
fn claim_list(claims: &HashMap<String, serde_json::Value>, name: &str) -> Vec<String> {
    if name.is_empty() {
        return Vec::new();
    }
    match claims.get(name) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str())
            .map(str::to_string)
            .collect(),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}
