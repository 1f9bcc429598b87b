//! JWKS verification against a real HTTP key server on loopback: EdDSA and ES256 keys, kid
//! lookup, refetch on an unknown kid (key rotation), algorithm/key mismatches refused.
//! The keys under tests/keys are throwaway test keys generated for this suite.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use shared_auth::{JwtConfig, Verifier};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use uuid::Uuid;

const ED_PEM: &str = include_str!("keys/ed25519.pem");
const ED_X: &str = include_str!("keys/ed25519.x");
const ED2_PEM: &str = include_str!("keys/ed25519_rotated.pem");
const ED2_X: &str = include_str!("keys/ed25519_rotated.x");
const ES_PEM: &str = include_str!("keys/es256.pem");
const ES_XY: &str = include_str!("keys/es256.xy");

fn ed_jwk(kid: &str, x: &str) -> serde_json::Value {
    serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x.trim(), "kid": kid, "alg": "EdDSA", "use": "sig"})
}

fn es_jwk(kid: &str) -> serde_json::Value {
    let mut lines = ES_XY.lines();
    let (x, y) = (lines.next().unwrap(), lines.next().unwrap());
    serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256"})
}

/// Serves whatever key set is in `keys` at `/jwks.json`, counting requests.
async fn key_server(keys: Arc<Mutex<serde_json::Value>>, hits: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let keys = keys.clone();
            let hits = hits.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                hits.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::to_vec(&*keys.lock().unwrap()).unwrap();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    format!("http://{addr}/jwks.json")
}

fn sign(alg: Algorithm, kid: Option<&str>, pem: &str, user: Uuid) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        _ => unreachable!(),
    };
    jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": user.to_string(), "exp": now + 300}),
        &key,
    )
    .unwrap()
}

async fn setup(
    keys: serde_json::Value,
) -> (Verifier, Arc<Mutex<serde_json::Value>>, Arc<AtomicUsize>) {
    setup_with(keys, None).await
}

async fn setup_with(
    keys: serde_json::Value,
    refetch: Option<Duration>,
) -> (Verifier, Arc<Mutex<serde_json::Value>>, Arc<AtomicUsize>) {
    shared_auth::install_crypto_provider();
    let keys = Arc::new(Mutex::new(keys));
    let hits = Arc::new(AtomicUsize::new(0));
    let url = key_server(keys.clone(), hits.clone()).await;
    let mut verifier = Verifier::new(JwtConfig {
        jwks_url: Some(url),
        ..Default::default()
    });
    if let Some(interval) = refetch {
        verifier = verifier.with_refetch_interval(interval);
    }
    (verifier, keys, hits)
}

#[tokio::test]
async fn eddsa_and_es256_tokens_verify_against_the_published_keys() {
    let (v, _, hits) =
        setup(serde_json::json!({"keys": [ed_jwk("ed-1", ED_X), es_jwk("es-1")]})).await;
    let user = Uuid::new_v4();
    assert_eq!(
        v.verify(&sign(Algorithm::EdDSA, Some("ed-1"), ED_PEM, user))
            .await
            .unwrap(),
        user
    );
    assert_eq!(
        v.verify(&sign(Algorithm::ES256, Some("es-1"), ES_PEM, user))
            .await
            .unwrap(),
        user
    );
    // Without a kid the key is chosen by algorithm.
    assert_eq!(
        v.verify(&sign(Algorithm::EdDSA, None, ED_PEM, user))
            .await
            .unwrap(),
        user
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the key set is cached");
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_key_set_and_finds_a_rotated_key() {
    let (v, keys, hits) = setup_with(
        serde_json::json!({"keys": [ed_jwk("ed-1", ED_X)]}),
        Some(Duration::ZERO),
    )
    .await;
    let user = Uuid::new_v4();
    assert!(
        v.verify(&sign(Algorithm::EdDSA, Some("ed-1"), ED_PEM, user))
            .await
            .is_ok()
    );
    *keys.lock().unwrap() =
        serde_json::json!({"keys": [ed_jwk("ed-1", ED_X), ed_jwk("ed-2", ED2_X)]});
    let rotated = sign(Algorithm::EdDSA, Some("ed-2"), ED2_PEM, user);
    assert_eq!(v.verify(&rotated).await.unwrap(), user);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_refetches_at_most_once_per_interval() {
    let (v, _, hits) = setup(serde_json::json!({"keys": [ed_jwk("ed-1", ED_X)]})).await;
    let user = Uuid::new_v4();
    assert!(
        v.verify(&sign(Algorithm::EdDSA, Some("ed-1"), ED_PEM, user))
            .await
            .is_ok()
    );
    for i in 0..20 {
        let forged = sign(Algorithm::EdDSA, Some(&format!("nope-{i}")), ED_PEM, user);
        assert!(v.verify(&forged).await.is_err());
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "fetched at start only: the 10 s throttle holds"
    );
}

#[tokio::test]
async fn a_token_signed_by_a_key_that_is_not_published_is_refused() {
    let (v, _, _) = setup(serde_json::json!({"keys": [ed_jwk("ed-1", ED_X)]})).await;
    let forged = sign(Algorithm::EdDSA, Some("ed-1"), ED2_PEM, Uuid::new_v4());
    assert!(v.verify(&forged).await.is_err());
}

#[tokio::test]
async fn the_algorithm_must_match_the_key() {
    // An ES256 token naming the kid of an EdDSA key is refused.
    let (v, _, _) = setup(serde_json::json!({"keys": [ed_jwk("k", ED_X)]})).await;
    let token = sign(Algorithm::ES256, Some("k"), ES_PEM, Uuid::new_v4());
    assert!(v.verify(&token).await.is_err());
    // HS256 is never verified with JWKS keys (no secret configured).
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": Uuid::new_v4().to_string(), "exp": 4_000_000_000u64}),
        &EncodingKey::from_secret(b"k"),
    )
    .unwrap();
    assert!(v.verify(&hs).await.is_err());
}
