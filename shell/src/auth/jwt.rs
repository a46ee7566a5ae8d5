//! Bearer JWTs: the verification keys (an HS256 secret file, a JWKS file of public keys), each
//! pinned to one algorithm, and the checks a token must pass. Parsing and signature checks are
//! the `jsonwebtoken` crate's; this module picks the key, pins the algorithm and names what was
//! wrong without ever repeating the token.

use std::collections::HashMap;
use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::policy::Permissions;
use super::{AuthFileError, Principal, Via};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;

/// An HS256 secret shorter than this is refused at start (RFC 7518 §3.2: at least the hash
/// size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Key files larger than this are refused.
const MAX_KEY_FILE_BYTES: u64 = 1 << 20;

/// Asymmetric algorithms a JWKS key may be pinned to.
const JWKS_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// One verification key and the only algorithm it verifies.
struct Key {
    alg: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

/// What a token is checked against.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The `iss` a token must carry.
    pub issuer: String,
    /// The `aud` a token must carry (one of its audiences).
    pub audience: String,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// The claim holding the `namespace:role` permissions.
    pub permissions_claim: String,
}

/// The verification keys: by `kid`, and at most one without (used by tokens that name none).
pub struct Keys {
    by_kid: HashMap<String, Key>,
    unnamed: Option<Key>,
    settings: JwtSettings,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        let mut kids: Vec<(&String, Algorithm)> =
            self.by_kid.iter().map(|(k, v)| (k, v.alg)).collect();
        kids.sort_by(|a, b| a.0.cmp(b.0));
        f.debug_struct("Keys")
            .field("by_kid", &kids)
            .field("unnamed", &self.unnamed.as_ref().map(|k| k.alg))
            .field("settings", &self.settings)
            .finish()
    }
}

fn read_limited(what: &'static str, path: &Path) -> Result<Vec<u8>, AuthFileError> {
    let e = |reason: String| AuthFileError::new(what, path, reason);
    let meta = std::fs::metadata(path).map_err(|x| e(format!("cannot read: {x}")))?;
    if !meta.is_file() {
        return Err(e("not a regular file".into()));
    }
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(e(format!(
            "{} bytes, more than the {MAX_KEY_FILE_BYTES} allowed",
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|x| e(format!("cannot read: {x}")))
}

pub(super) const SECRET_FILE: &str = "HS256 secret file";
pub(super) const JWKS_FILE: &str = "JWKS file";

impl Keys {
    /// Loads the keys: the HS256 secret (the file's bytes, trailing whitespace removed, at
    /// least 32 bytes) and the JWKS keys (each with an `alg` among RS256/384/512,
    /// PS256/384/512, ES256/384, EdDSA; a `kid` on each when there are several; no private or
    /// symmetric keys). Errors name the file and the key.
    pub fn load(
        secret: Option<&Path>,
        jwks: Option<&Path>,
        settings: JwtSettings,
    ) -> Result<Keys, AuthFileError> {
        let validation = |alg: Algorithm| {
            let mut v = Validation::new(alg);
            v.algorithms = vec![alg];
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            v.validate_exp = true;
            v.validate_nbf = true;
            v.validate_aud = true;
            v.leeway = settings.leeway_secs;
            v.set_issuer(&[settings.issuer.as_str()]);
            v.set_audience(&[settings.audience.as_str()]);
            v
        };
        let mut keys = Keys {
            by_kid: HashMap::new(),
            unnamed: None,
            settings: settings.clone(),
        };
        if let Some(path) = secret {
            let raw = read_limited(SECRET_FILE, path)?;
            let end = raw
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())
                .map_or(0, |i| i + 1);
            let secret = &raw[..end];
            if secret.len() < MIN_SECRET_BYTES {
                return Err(AuthFileError::new(
                    SECRET_FILE,
                    path,
                    format!(
                        "{} bytes, fewer than the {MIN_SECRET_BYTES} an HS256 secret needs \
                         (e.g. `openssl rand -hex 32`)",
                        secret.len()
                    ),
                ));
            }
            keys.unnamed = Some(Key {
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
                validation: validation(Algorithm::HS256),
            });
        }
        if let Some(path) = jwks {
            let raw = read_limited(JWKS_FILE, path)?;
            let e = |reason: String| AuthFileError::new(JWKS_FILE, path, reason);
            // Private members first: a private key in a file of public keys is refused outright.
            let doc: serde_json::Value =
                serde_json::from_slice(&raw).map_err(|x| e(format!("not JSON: {x}")))?;
            let list = doc
                .get("keys")
                .and_then(|k| k.as_array())
                .ok_or_else(|| e("no \"keys\" array (expected a JWK Set)".into()))?;
            if list.is_empty() {
                return Err(e("the \"keys\" array is empty".into()));
            }
            for (i, k) in list.iter().enumerate() {
                if ["d", "p", "q", "dp", "dq", "qi", "k"]
                    .iter()
                    .any(|m| k.get(m).is_some())
                {
                    return Err(e(format!(
                        "key #{} holds private or symmetric key material: a JWKS file holds \
                         public keys only (the HS256 secret has its own flag)",
                        i + 1
                    )));
                }
            }
            let set: JwkSet =
                serde_json::from_value(doc).map_err(|x| e(format!("not a JWK Set: {x}")))?;
            let n = set.keys.len();
            for (i, jwk) in set.keys.iter().enumerate() {
                let which = match &jwk.common.key_id {
                    Some(kid) => format!("key #{} (kid {kid:?})", i + 1),
                    None => format!("key #{}", i + 1),
                };
                let alg = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                    .ok_or_else(|| {
                        e(format!(
                            "{which}: no usable \"alg\" (every key is pinned to its algorithm: \
                             RS256, ES256, EdDSA...)"
                        ))
                    })?;
                if !JWKS_ALGS.contains(&alg) {
                    return Err(e(format!(
                        "{which}: alg {alg:?} is not a public-key signature algorithm"
                    )));
                }
                let family_ok = matches!(
                    (&jwk.algorithm, alg),
                    (
                        AlgorithmParameters::RSA(_),
                        Algorithm::RS256
                            | Algorithm::RS384
                            | Algorithm::RS512
                            | Algorithm::PS256
                            | Algorithm::PS384
                            | Algorithm::PS512
                    ) | (
                        AlgorithmParameters::EllipticCurve(_),
                        Algorithm::ES256 | Algorithm::ES384
                    ) | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
                );
                if !family_ok {
                    return Err(e(format!(
                        "{which}: its key type does not fit its alg {alg:?}"
                    )));
                }
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|x| e(format!("{which}: unusable key: {x}")))?;
                let key = Key {
                    alg,
                    key,
                    validation: validation(alg),
                };
                match &jwk.common.key_id {
                    Some(kid) => {
                        if keys.by_kid.insert(kid.clone(), key).is_some() {
                            return Err(e(format!("{which}: kid {kid:?} is used twice")));
                        }
                    }
                    None if n == 1 && keys.unnamed.is_none() => keys.unnamed = Some(key),
                    None => {
                        return Err(e(format!(
                            "{which}: no \"kid\" (needed when there are several keys, the \
                             HS256 secret counting as one)"
                        )))
                    }
                }
            }
        }
        Ok(keys)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + usize::from(self.unnamed.is_some())
    }

    /// True when there is no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies `token` and returns its principal. The error names what was wrong, never the
    /// token or its claims' values.
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!(
                "token longer than {MAX_TOKEN_BYTES} bytes (refused unread)"
            ));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_) => {
                "malformed token header: not JSON with a supported \"alg\" (alg none is never \
                 accepted)"
                    .to_string()
            }
            _ => "malformed token: expected three base64url parts (header.claims.signature)"
                .to_string(),
        })?;
        let key = match &header.kid {
            Some(kid) => self.by_kid.get(kid).ok_or_else(|| {
                "token names a key id (kid) this server does not have".to_string()
            })?,
            None => self.unnamed.as_ref().ok_or_else(|| {
                "token names no key id (kid) and this server has no key without one".to_string()
            })?,
        };
        if header.alg != key.alg {
            return Err(format!(
                "token algorithm {:?} is not the one its key is pinned to ({:?})",
                header.alg, key.alg
            ));
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.key,
            &key.validation,
        )
        .map_err(|e| describe(e.kind()))?;
        let claims = data.claims;
        let sub = match claims.get("sub") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err("token claim sub is not a non-empty string".into()),
        };
        let name = &self.settings.permissions_claim;
        let permissions = match claims.get(name) {
            None | Some(serde_json::Value::Null) => Permissions::default(),
            Some(serde_json::Value::Array(a)) => {
                let mut strs = Vec::with_capacity(a.len());
                for v in a {
                    match v.as_str() {
                        Some(s) => strs.push(s),
                        None => {
                            return Err(format!(
                                "token claim {name} is not a list of \"namespace:role\" strings"
                            ))
                        }
                    }
                }
                Permissions::parse_all(strs).0
            }
            Some(_) => {
                return Err(format!(
                    "token claim {name} is not a list of \"namespace:role\" strings"
                ))
            }
        };
        let exp = claims.get("exp").and_then(|v| v.as_u64());
        Ok(Principal {
            subject: sub,
            via: Via::Token,
            permissions,
            expires_unix: exp,
        })
    }
}

/// What was wrong with a token, in words (no values from the token).
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token expired (exp is past)".into(),
        ErrorKind::ImmatureSignature => "token not yet valid (nbf is in the future)".into(),
        ErrorKind::InvalidIssuer => "token issuer (iss) is not the one this server accepts".into(),
        ErrorKind::InvalidAudience => {
            "token audience (aud) does not name this server's audience".into()
        }
        ErrorKind::MissingRequiredClaim(c) => format!("token lacks the required claim {c}"),
        ErrorKind::InvalidClaimFormat(c) => format!("token claim {c} has the wrong type"),
        ErrorKind::InvalidSignature => "token signature does not verify with its key".into(),
        ErrorKind::InvalidAlgorithm => "token algorithm does not fit its key".into(),
        ErrorKind::InvalidToken => "token refused: malformed or expiring".into(),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            "malformed token: a part is not base64url-encoded UTF-8".into()
        }
        ErrorKind::Json(_) => "malformed token: the claims are not a JSON object".into(),
        _ => "token refused".into(),
    }
}
