//! Caller identity, shared by api-service (every REST call) and ws-gateway (the handshake), so
//! both verify exactly the same tokens the same way (the "Identity" sections of `docs/api.md`
//! and `docs/websocket.md`).
//!
//! - [`Verifier`]: `AUTH_MODE=jwt` — HS256 with `JWT_SECRET` and/or the keys of `JWKS_URL`
//!   (RS256, ES256, EdDSA; cached, refetched when a token names an unknown `kid`). The algorithm
//!   must match the key, `alg: none` never verifies, `exp` is required, `nbf` honoured, 60 s
//!   leeway, `iss` / `aud` checked when configured. The user is `sub`, else `user_id`, as a UUID.
//! - [`parse_uuid`]: the UUID forms every id may take (canonical, 32 hex, braced, `urn:uuid:`).
//! - [`bearer_token`]: the credential of a request (header first, then `?token=`).
//! - [`mint_token`]: development tokens signed with the configured secret.
//! - [`install_crypto_provider`]: rustls with ring, once per process.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm},
};
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::{Mutex, RwLock};
use uuid::Uuid;

/// Clock leeway allowed on `exp` and `nbf` (`docs/api.md`, "Identity": up to 60 s).
pub const LEEWAY_SECS: u64 = 60;
/// A token naming an unknown `kid` refetches the key set at most this often.
const JWKS_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Known keys are refreshed in the background of a request at most this often.
const JWKS_MAX_AGE: Duration = Duration::from_secs(600);

/// Installs rustls' ring provider as the process default (reqwest, async-nats and sqlx use it).
/// Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Parses a UUID in any accepted form (`docs/api.md`, "Formats"): canonical, 32 hex digits,
/// `{…}`-braced or `urn:uuid:`-prefixed, hex in any case. Surrounding whitespace is not accepted.
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    // `Uuid::parse_str` accepts exactly these four forms, case-insensitively.
    Uuid::parse_str(s).ok()
}

/// The bearer credential of a request: `Authorization: Bearer <token>` (scheme case-insensitive),
/// else the `token` query parameter. An `Authorization` header with another scheme counts as no
/// header, so the query parameter is used.
pub fn bearer_token<'a>(
    authorization: Option<&'a str>,
    query_token: Option<&'a str>,
) -> Option<&'a str> {
    let from_header = authorization.and_then(|h| {
        let h = h.trim();
        let (scheme, rest) = h.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim())
            .filter(|t| !t.is_empty())
    });
    from_header.or(query_token.filter(|t| !t.is_empty()))
}

/// Why a token was refused. Callers answer every variant with the same 401; the variant is for
/// logs and metrics only (never log the token itself).
#[derive(Debug, Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("no verification key configured")]
    NoKeys,
    #[error("token rejected: {0}")]
    Invalid(&'static str),
    #[error("token rejected: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

/// JWT verification settings.
#[derive(Debug, Clone, Default)]
pub struct JwtConfig {
    pub secret: Option<String>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// One verification key of the JWKS, with the single algorithm it may be used with.
#[derive(Clone)]
struct JwksKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct JwksCache {
    keys: Vec<JwksKey>,
    fetched_at: Option<Instant>,
}

/// Verifies bearer tokens. Cheap to clone; one per process.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    config: JwtConfig,
    secret: Option<DecodingKey>,
    http: reqwest::Client,
    jwks: RwLock<JwksCache>,
    /// Serialises refetches so a burst of unknown-`kid` tokens causes one request.
    refetch: Mutex<()>,
    /// Minimum time between two refetches caused by unknown `kid`s.
    refetch_interval: Duration,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
    #[serde(default)]
    user_id: Option<serde_json::Value>,
}

/// The user id of verified claims: `sub` if it is a UUID string, else `user_id` if it is one.
fn user_of(claims: &Claims) -> Option<Uuid> {
    let as_uuid =
        |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| v.as_str()).and_then(parse_uuid);
    as_uuid(&claims.sub).or_else(|| as_uuid(&claims.user_id))
}

/// The one algorithm a JWK may verify, from its `alg` or else its key type.
fn jwk_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    let declared = jwk.common.key_algorithm.map(|a| match a {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
        _ => None,
    });
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        _ => None,
    };
    match declared {
        // A declared algorithm must be one we accept and fit the key type.
        Some(Some(alg)) if by_type == Some(alg) => Some(alg),
        Some(_) => None,
        None => by_type,
    }
}

impl Verifier {
    pub fn new(config: JwtConfig) -> Self {
        let secret = config
            .secret
            .as_deref()
            .map(|s| DecodingKey::from_secret(s.as_bytes()));
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client for JWKS");
        Self {
            inner: Arc::new(VerifierInner {
                config,
                secret,
                http,
                jwks: RwLock::new(JwksCache::default()),
                refetch: Mutex::new(()),
                refetch_interval: JWKS_REFETCH_MIN_INTERVAL,
            }),
        }
    }

    /// Sets the minimum time between two refetches caused by unknown `kid`s (default 10 s,
    /// which bounds what a flood of forged kids can cost the issuer).
    pub fn with_refetch_interval(self, interval: Duration) -> Self {
        let mut inner =
            Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("configure before cloning"));
        inner.refetch_interval = interval;
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Whether any key is configured at all (without one every token is refused).
    pub fn has_keys(&self) -> bool {
        self.inner.secret.is_some() || self.inner.config.jwks_url.is_some()
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        // A configured issuer or audience must also be present, not only match when present.
        let mut required = vec!["exp"];
        if self.inner.config.audience.is_some() {
            required.push("aud");
        }
        if self.inner.config.issuer.is_some() {
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        match &self.inner.config.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.inner.config.issuer {
            v.set_issuer(&[iss]);
        }
        v
    }

    fn decode_with(
        &self,
        token: &str,
        alg: Algorithm,
        key: &DecodingKey,
    ) -> Result<Uuid, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation(alg))?;
        user_of(&data.claims).ok_or(AuthError::Invalid("no UUID in sub or user_id"))
    }

    /// Verifies a token and returns its user id.
    pub async fn verify(&self, token: &str) -> Result<Uuid, AuthError> {
        let header = jsonwebtoken::decode_header(token)?;
        if header.alg == Algorithm::HS256 {
            let key = self
                .inner
                .secret
                .as_ref()
                .ok_or(AuthError::Invalid("HS256 without a configured secret"))?;
            return self.decode_with(token, Algorithm::HS256, key);
        }
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(AuthError::Invalid("algorithm not accepted"));
        }
        if self.inner.config.jwks_url.is_none() {
            return Err(AuthError::NoKeys);
        }
        let kid = header.kid.as_deref();
        if let Some(key) = self.find_key(kid, header.alg).await {
            return self.decode_with(token, header.alg, &key.key);
        }
        // Unknown kid: the issuer may have rotated its keys.
        self.refetch_jwks(false).await;
        let key = self
            .find_key(kid, header.alg)
            .await
            .ok_or(AuthError::Invalid("no key for kid"))?;
        self.decode_with(token, header.alg, &key.key)
    }

    async fn find_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<JwksKey> {
        let stale = {
            let cache = self.inner.jwks.read().await;
            cache.fetched_at.is_none_or(|t| t.elapsed() > JWKS_MAX_AGE)
        };
        if stale {
            self.refetch_jwks(true).await;
        }
        let cache = self.inner.jwks.read().await;
        cache
            .keys
            .iter()
            .find(|k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
            .cloned()
    }

    /// Refetches the key set unless it was fetched very recently (`stale_only`: unless it is
    /// still fresh). A failed fetch keeps the old keys.
    async fn refetch_jwks(&self, stale_only: bool) {
        let Some(url) = &self.inner.config.jwks_url else {
            return;
        };
        let _guard = self.inner.refetch.lock().await;
        {
            let cache = self.inner.jwks.read().await;
            let min_age = if stale_only {
                JWKS_MAX_AGE
            } else {
                self.inner.refetch_interval
            };
            if cache.fetched_at.is_some_and(|t| t.elapsed() < min_age) {
                return;
            }
        }
        let fetched = async {
            let resp = self.inner.http.get(url).send().await?.error_for_status()?;
            resp.json::<JwkSet>().await
        }
        .await;
        let mut cache = self.inner.jwks.write().await;
        cache.fetched_at = Some(Instant::now());
        match fetched {
            Ok(set) => {
                cache.keys = set
                    .keys
                    .iter()
                    .filter_map(|jwk| {
                        let alg = jwk_algorithm(jwk)?;
                        let key = DecodingKey::from_jwk(jwk).ok()?;
                        Some(JwksKey {
                            kid: jwk.common.key_id.clone(),
                            alg,
                            key,
                        })
                    })
                    .collect();
                tracing::info!(jwks.keys = cache.keys.len(), "fetched JWKS");
            }
            Err(e) => tracing::warn!(error = %e, "JWKS fetch failed; keeping the previous keys"),
        }
    }
}

/// Claims of a minted development token.
#[derive(serde::Serialize)]
struct MintClaims<'a> {
    sub: String,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints an HS256 token for `user` valid for `ttl`, carrying the configured issuer and audience.
pub fn mint_token(config: &JwtConfig, user: Uuid, ttl: Duration) -> Result<String, AuthError> {
    let secret = config.secret.as_deref().ok_or(AuthError::NoKeys)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let claims = MintClaims {
        sub: user.to_string(),
        iat: now,
        exp: now + ttl.as_secs(),
        iss: config.issuer.as_deref(),
        aud: config.audience.as_deref(),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(secret: &str) -> JwtConfig {
        JwtConfig {
            secret: Some(secret.into()),
            ..Default::default()
        }
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[tokio::test]
    async fn a_minted_token_verifies_to_its_user() {
        let user = Uuid::new_v4();
        let token = mint_token(&cfg("s3cret"), user, Duration::from_secs(60)).unwrap();
        assert_eq!(
            Verifier::new(cfg("s3cret")).verify(&token).await.unwrap(),
            user
        );
    }

    #[tokio::test]
    async fn a_token_signed_with_another_secret_is_refused() {
        let token = mint_token(&cfg("other"), Uuid::new_v4(), Duration::from_secs(60)).unwrap();
        assert!(Verifier::new(cfg("s3cret")).verify(&token).await.is_err());
    }

    #[tokio::test]
    async fn exp_is_required_and_honoured_with_sixty_seconds_of_leeway() {
        let v = Verifier::new(cfg("k"));
        let user = Uuid::new_v4();
        let no_exp = sign(serde_json::json!({"sub": user.to_string()}), "k");
        assert!(v.verify(&no_exp).await.is_err());
        let just_expired = sign(
            serde_json::json!({"sub": user.to_string(), "exp": now() - 30}),
            "k",
        );
        assert_eq!(v.verify(&just_expired).await.unwrap(), user);
        let long_expired = sign(
            serde_json::json!({"sub": user.to_string(), "exp": now() - 120}),
            "k",
        );
        assert!(v.verify(&long_expired).await.is_err());
        let not_yet = sign(
            serde_json::json!({"sub": user.to_string(), "exp": now() + 600, "nbf": now() + 300}),
            "k",
        );
        assert!(v.verify(&not_yet).await.is_err());
    }

    #[tokio::test]
    async fn the_user_is_sub_else_user_id_and_must_be_a_uuid() {
        let v = Verifier::new(cfg("k"));
        let user = Uuid::new_v4();
        let fallback = sign(
            serde_json::json!({"sub": "alice", "user_id": user.simple().to_string(), "exp": now() + 60}),
            "k",
        );
        assert_eq!(v.verify(&fallback).await.unwrap(), user);
        let neither = sign(serde_json::json!({"sub": "alice", "exp": now() + 60}), "k");
        assert!(v.verify(&neither).await.is_err());
        let numeric = sign(serde_json::json!({"sub": 42, "exp": now() + 60}), "k");
        assert!(v.verify(&numeric).await.is_err());
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let config = JwtConfig {
            issuer: Some("retich".into()),
            audience: Some("chat".into()),
            ..cfg("k")
        };
        let v = Verifier::new(config.clone());
        let user = Uuid::new_v4().to_string();
        let good = sign(
            serde_json::json!({"sub": user, "exp": now() + 60, "iss": "retich", "aud": ["x", "chat"]}),
            "k",
        );
        assert!(v.verify(&good).await.is_ok());
        let wrong_iss = sign(
            serde_json::json!({"sub": user, "exp": now() + 60, "iss": "evil", "aud": "chat"}),
            "k",
        );
        assert!(v.verify(&wrong_iss).await.is_err());
        let no_aud = sign(
            serde_json::json!({"sub": user, "exp": now() + 60, "iss": "retich"}),
            "k",
        );
        assert!(v.verify(&no_aud).await.is_err());
        let no_iss = sign(
            serde_json::json!({"sub": user, "exp": now() + 60, "aud": "chat"}),
            "k",
        );
        assert!(v.verify(&no_iss).await.is_err());
        let minted = mint_token(&config, Uuid::new_v4(), Duration::from_secs(60)).unwrap();
        assert!(v.verify(&minted).await.is_ok());
    }

    #[tokio::test]
    async fn alg_none_and_garbage_are_refused() {
        let v = Verifier::new(cfg("k"));
        // {"alg":"none","typ":"JWT"} . {"sub":…,"exp":…} . (no signature)
        let claims = format!(r#"{{"sub":"{}","exp":{}}}"#, Uuid::new_v4(), now() + 60);
        let b64 = |s: &str| {
            use std::fmt::Write;
            // Minimal base64url without padding, to avoid a dependency in tests.
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let bytes = s.as_bytes();
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
                for i in 0..=chunk.len() {
                    out.write_char(A[(n >> (18 - 6 * i) & 63) as usize] as char)
                        .unwrap();
                }
            }
            out
        };
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&claims));
        assert!(v.verify(&none).await.is_err());
        assert!(v.verify("not-a-token").await.is_err());
        assert!(v.verify("").await.is_err());
    }

    #[test]
    fn uuids_are_accepted_in_the_four_documented_forms() {
        let id = Uuid::parse_str("6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab").unwrap();
        for s in [
            "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab",
            "6F1C2D3E-4A5B-4C6D-8E7F-0123456789AB",
            "6f1c2d3e4a5b4c6d8e7f0123456789ab",
            "{6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab}",
            "urn:uuid:6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab",
        ] {
            assert_eq!(parse_uuid(s), Some(id), "{s}");
        }
        for s in [
            "",
            " 6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab",
            "6f1c2d3e-4a5b-4c6d-8e7f-0123456789a",
            "zzzz",
        ] {
            assert_eq!(parse_uuid(s), None, "{s}");
        }
    }

    #[test]
    fn the_bearer_header_wins_over_the_query_and_the_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(Some("bEaReR abc"), Some("q")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc"), Some("q")), Some("q"));
        assert_eq!(bearer_token(None, Some("q")), Some("q"));
        assert_eq!(bearer_token(Some("Bearer "), None), None);
        assert_eq!(bearer_token(None, Some("")), None);
    }
}
