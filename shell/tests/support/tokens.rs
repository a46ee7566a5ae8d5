//! Bearer tokens for the security tests: an HS256 secret and valid claims.
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

pub const ISS: &str = "https://issuer.knhk.test";
pub const AUD: &str = "knhk-test";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Valid claims: `sub`, `iss`, `aud`, `exp` in an hour, and `permissions`.
pub fn claims(sub: &str, perms: &[&str]) -> serde_json::Value {
    json!({ "sub": sub, "iss": ISS, "aud": AUD, "exp": now() + 3600, "iat": now(),
            "permissions": perms })
}

pub fn hs256(claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("mint HS256")
}
