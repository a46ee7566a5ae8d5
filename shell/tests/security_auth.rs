//! Authentication and authorization against the real `knhk serve` binary (docs/security.md):
//! bearer JWTs (HS256 secret file, JWKS of ES256/EdDSA/RS256 public keys), client certificate
//! names mapped to roles, the RPC access table against the served descriptors, every role ×
//! RPC pair, `/metrics` and `/health` off loopback, the start-up refusal, tokens kept out of
//! the server's log, and an outside client (Python grpcio with a PyJWT-minted token).
//!
//! Tokens are minted here with `jsonwebtoken` (and PyJWT); keys with rcgen (ECDSA, Ed25519) and
//! `openssl genpkey` (RSA). Outside tools missing are skipped with a note, except under CI
//! (`CI` set), where `.ci/run` installs them and a missing tool fails the test.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use knhk_shell::auth::{Need, Role, Scope, RPC_TABLE};
use knhk_shell::proto;
use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::tls::ClientTls;
use prost::Message;
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::Code;

use support::tokens::{claims, hs256, now, AUD, ISS, SECRET};

// ---------------------------------------------------------------- keys and tokens

fn put(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn signed(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, c: &serde_json::Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, c, key).expect("mint")
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An rcgen key pair as a jsonwebtoken signing key and its public JWK (pinned to `alg`).
fn rcgen_key(alg: Algorithm, kid: &str) -> (EncodingKey, Jwk) {
    let (rc, from_pem): (&rcgen::SignatureAlgorithm, fn(&[u8]) -> _) = match alg {
        Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, EncodingKey::from_ec_pem),
        Algorithm::EdDSA => (&rcgen::PKCS_ED25519, EncodingKey::from_ed_pem),
        other => panic!("no rcgen key for {other:?}"),
    };
    let kp = rcgen::KeyPair::generate_for(rc).expect("key pair");
    let enc: EncodingKey = from_pem(kp.serialize_pem().as_bytes()).expect("encoding key");
    let jwk = if alg == Algorithm::EdDSA {
        // jsonwebtoken derives no public JWK from ring's PKCS#8 v2 Ed25519 keys: the raw
        // public key is the JWK's `x` (RFC 8037).
        serde_json::from_value(json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
            "kid": kid, "x": b64url(kp.public_key_raw()) }))
        .expect("jwk")
    } else {
        let mut jwk = Jwk::from_encoding_key(&enc, alg).expect("jwk");
        jwk.common.key_id = Some(kid.to_string());
        jwk
    };
    (enc, jwk)
}

/// An RSA key made by `openssl genpkey`: (signing key, public JWK, public key PEM). `None`
/// (skipped with a note) without openssl outside CI.
fn openssl_rsa(dir: &Path, kid: &str) -> Option<(EncodingKey, Jwk, Vec<u8>)> {
    let key = dir.join("rsa.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but openssl is missing"
        );
        eprintln!("openssl not installed: the RSA checks are skipped");
        return None;
    }
    let pub_pem = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .expect("openssl pkey")
        .stdout;
    let enc = EncodingKey::from_rsa_pem(&std::fs::read(&key).expect("key")).expect("rsa key");
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::RS256).expect("jwk");
    jwk.common.key_id = Some(kid.to_string());
    Some((enc, jwk, pub_pem))
}

fn jwks_file(dir: &Path, keys: Vec<Jwk>) -> PathBuf {
    let set = JwkSet { keys };
    put(
        dir,
        "jwks.json",
        &serde_json::to_string_pretty(&set).expect("json"),
    )
}

// ---------------------------------------------------------------- server and calls

fn auth_flags(secret: &Path, jwks: Option<&Path>) -> Vec<String> {
    let mut v = vec![
        "--durability".to_string(),
        "off".into(),
        "--auth-hs256-secret-file".into(),
        s(secret),
        "--auth-issuer".into(),
        ISS.into(),
        "--auth-audience".into(),
        AUD.into(),
    ];
    if let Some(j) = jwks {
        v.extend(["--auth-jwks-file".to_string(), s(j)]);
    }
    v
}

fn serve(dir: &Path, name: &str, flags: &[String], wrap: Option<&str>) -> support::Proc {
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    support::spawn(
        &dir.join(format!("{name}-data")),
        &dir.join(format!("{name}.log")),
        &args,
        wrap,
    )
}

/// Calls `path` with one empty message (every knhk.v1, health and reflection request decodes
/// from it), as a streaming call (any method's wire form), with `md` metadata; the status code
/// (OK once the response headers say the call was let through).
async fn call(url: &str, path: &str, md: &[(&str, String)]) -> (Code, String) {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    call_on(ch, path, md).await
}

async fn call_on(
    ch: tonic::transport::Channel,
    path: &str,
    md: &[(&str, String)],
) -> (Code, String) {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.expect("ready");
    let mut req = tonic::Request::new(tokio_stream::iter(vec![()]));
    for (k, v) in md {
        let v: MetadataValue<_> = v.parse().expect("metadata value");
        let k = tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).expect("key");
        req.metadata_mut().insert(k, v);
    }
    let path: http::uri::PathAndQuery = path.parse().expect("path");
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        grpc.streaming(req, path, tonic_prost::ProstCodec::<(), ()>::default()),
    )
    .await
    .expect("call answered within 10 s");
    match r {
        Ok(_) => (Code::Ok, String::new()),
        Err(st) => (st.code(), st.message().to_string()),
    }
}

fn bearer(t: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {t}"))]
}

/// Waits until the server answers ListWorkflows with `token`.
async fn ready(p: &mut support::Proc, token: &str) {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!("knhk serve exited ({st}): {}", p.log_text());
        }
        if tonic::transport::Endpoint::from_shared(p.url.clone())
            .expect("url")
            .connect()
            .await
            .is_ok()
        {
            let (code, msg) = call(&p.url, "/knhk.v1.Knhk/ListWorkflows", &bearer(token)).await;
            assert_ne!(code, Code::Unauthenticated, "{msg}");
            if code == Code::Ok {
                return;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not ready: {}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every `/package.Service/Method` in the descriptor sets the server serves.
fn served_methods() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for set in knhk_shell::server::served_descriptor_sets() {
        let fds = prost_types::FileDescriptorSet::decode(set).expect("descriptor set");
        for f in fds.file {
            let pkg = f.package.clone().unwrap_or_default();
            for svc in &f.service {
                for m in &svc.method {
                    out.insert(format!(
                        "/{pkg}.{}/{}",
                        svc.name.as_deref().unwrap_or(""),
                        m.name.as_deref().unwrap_or("")
                    ));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------- tests

/// The access table covers exactly the served methods: a method added to a proto without a
/// table entry fails here (and would be refused by the server meanwhile).
#[test]
fn access_table_covers_every_served_method() {
    let served = served_methods();
    assert!(served.contains("/knhk.v1.Knhk/SubmitEvents"), "{served:?}");
    assert!(
        served.contains("/grpc.health.v1.Health/Check"),
        "{served:?}"
    );
    let table: BTreeSet<String> = RPC_TABLE.iter().map(|(p, _)| p.to_string()).collect();
    let missing: Vec<_> = served.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "methods without an access table entry: {missing:?}"
    );
    let stale: Vec<_> = table.difference(&served).collect();
    assert!(
        stale.is_empty(),
        "table entries no server method has: {stale:?}"
    );
}

/// Bad tokens of every kind are UNAUTHENTICATED with a message naming what was wrong and never
/// the token; no token (nor its signature) appears in the server's log, even at trace level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_unauthenticated_and_never_logged() {
    let dir = support::scratch("auth-tokens");
    let secret = put(&dir, "secret", &format!("{SECRET}\n"));
    let (es_key, es_jwk) = rcgen_key(Algorithm::ES256, "es");
    let (ed_key, ed_jwk) = rcgen_key(Algorithm::EdDSA, "ed");
    let (other_es, _) = rcgen_key(Algorithm::ES256, "es");
    let rsa = openssl_rsa(&dir, "rs");
    let mut keys = vec![es_jwk, ed_jwk];
    if let Some((_, j, _)) = &rsa {
        keys.push(j.clone());
    }
    let jwks = jwks_file(&dir, keys);
    let flags = auth_flags(&secret, Some(&jwks));
    // Trace level everywhere: h2, hyper, tonic and knhk log what they log at their chattiest.
    let mut p = serve(&dir, "tokens", &flags, Some("export RUST_LOG=trace"));
    let admin = hs256(&claims("alice", &["*:admin"]));
    ready(&mut p, &admin).await;

    let path = "/knhk.v1.Knhk/ListWorkflows";
    // Each good key works.
    let good = [
        signed(
            Algorithm::ES256,
            Some("es"),
            &es_key,
            &claims("es-user", &["default:reader"]),
        ),
        signed(
            Algorithm::EdDSA,
            Some("ed"),
            &ed_key,
            &claims("ed-user", &["default:reader"]),
        ),
    ];
    for t in &good {
        let (code, msg) = call(&p.url, path, &bearer(t)).await;
        assert_eq!(code, Code::Ok, "{msg}");
    }
    let mut sent: Vec<String> = good.to_vec();
    sent.push(admin.clone());

    let mut c = claims("bob", &["*:admin"]);
    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    c["exp"] = json!(now() - 3600);
    cases.push(("expired", hs256(&c), "expired"));
    let mut c = claims("bob", &["*:admin"]);
    c["nbf"] = json!(now() + 3600);
    cases.push(("not yet valid", hs256(&c), "not yet valid"));
    let mut c = claims("bob", &["*:admin"]);
    c["iss"] = json!("https://evil.test");
    cases.push(("wrong issuer", hs256(&c), "issuer"));
    let mut c = claims("bob", &["*:admin"]);
    c["aud"] = json!("another-service");
    cases.push(("wrong audience", hs256(&c), "audience"));
    let mut c = claims("bob", &["*:admin"]);
    c.as_object_mut().expect("obj").remove("sub");
    cases.push(("no sub", hs256(&c), "sub"));
    let mut c = claims("bob", &["*:admin"]);
    c.as_object_mut().expect("obj").remove("exp");
    cases.push(("no exp", hs256(&c), "exp"));
    let mut c = claims("bob", &["*:admin"]);
    c["exp"] = json!(format!("{}", now() + 3600));
    cases.push(("exp as a string", hs256(&c), "exp"));
    cases.push((
        "wrong key (another ES256 key under the same kid)",
        signed(
            Algorithm::ES256,
            Some("es"),
            &other_es,
            &claims("bob", &["*:admin"]),
        ),
        "signature",
    ));
    cases.push((
        "wrong HS256 secret",
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("bob", &["*:admin"]),
            &EncodingKey::from_secret(b"another-secret-another-secret-another"),
        )
        .expect("mint"),
        "signature",
    ));
    cases.push((
        "unknown kid",
        signed(
            Algorithm::ES256,
            Some("nope"),
            &es_key,
            &claims("bob", &["*:admin"]),
        ),
        "key id",
    ));
    cases.push((
        "EdDSA key used for an ES256 header",
        signed(
            Algorithm::ES256,
            Some("ed"),
            &es_key,
            &claims("bob", &["*:admin"]),
        ),
        "pinned",
    ));
    let none_header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let none_claims = b64url(claims("bob", &["*:admin"]).to_string().as_bytes());
    cases.push((
        "alg none",
        format!("{none_header}.{none_claims}."),
        "alg none",
    ));
    cases.push(("malformed", "not-a-jwt".to_string(), "malformed"));
    cases.push(("two dots only", "..".to_string(), "malformed"));
    cases.push((
        "too long",
        format!("{}.{}.x", "a".repeat(6000), "b".repeat(6000)),
        "longer",
    ));
    if let Some((rs_key, _, rs_pub)) = &rsa {
        let t = signed(
            Algorithm::RS256,
            Some("rs"),
            rs_key,
            &claims("rsa-user", &["default:reader"]),
        );
        let (code, msg) = call(&p.url, path, &bearer(&t)).await;
        assert_eq!(code, Code::Ok, "RS256: {msg}");
        sent.push(t);
        // Algorithm confusion: HS256 with the RSA public key (PEM bytes) as the HMAC secret,
        // naming the RSA key, and naming none (then the HS256 secret is the key: no match).
        let confused = |kid: Option<&str>| {
            signed(
                Algorithm::HS256,
                kid,
                &EncodingKey::from_secret(rs_pub),
                &claims("mallory", &["*:admin"]),
            )
        };
        cases.push((
            "HS256 signed with the RSA public key, kid rs",
            confused(Some("rs")),
            "pinned",
        ));
        cases.push((
            "HS256 signed with the RSA public key, no kid",
            confused(None),
            "signature",
        ));
    }
    for (what, token, needle) in &cases {
        let (code, msg) = call(&p.url, path, &bearer(token)).await;
        assert_eq!(code, Code::Unauthenticated, "{what}: {msg}");
        assert!(
            msg.contains(needle),
            "{what}: '{msg}' does not name '{needle}'"
        );
        assert!(
            !msg.contains(token.as_str()),
            "{what}: the message echoes the token"
        );
        sent.push(token.clone());
    }
    // Other malformed headers.
    for (what, md, needle) in [
        ("no credentials", vec![], "no credentials"),
        (
            "Basic scheme",
            vec![("authorization", "Basic YWxpY2U6cHc=".to_string())],
            "Bearer",
        ),
        (
            "empty bearer",
            vec![("authorization", "Bearer ".to_string())],
            "empty token",
        ),
    ] {
        let (code, msg) = call(&p.url, path, &md).await;
        assert_eq!(code, Code::Unauthenticated, "{what}: {msg}");
        assert!(
            msg.contains(needle),
            "{what}: '{msg}' does not name '{needle}'"
        );
    }
    // Health stays open, with or without a bad token.
    for md in [vec![], bearer("garbage")] {
        let (code, msg) = call(&p.url, "/grpc.health.v1.Health/Check", &md).await;
        assert_eq!(code, Code::Ok, "{msg}");
    }

    p.kill();
    let log = p.log_text();
    assert!(log.contains("access refused"), "refusals are logged: {log}");
    assert!(log.contains("TRACE"), "the server logged at trace level");
    for t in &sent {
        // The whole token, and its signature part alone (the secret-bearing part).
        let sig = t.rsplit('.').next().unwrap_or("");
        assert!(
            !log.contains(t.as_str()),
            "a token appears in the server log"
        );
        if sig.len() >= 16 {
            assert!(
                !log.contains(sig),
                "a token's signature appears in the server log"
            );
        }
    }
}

/// For every served method and every kind of principal, the call is let through exactly when
/// the access table says so; an unknown method is refused whoever calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_and_rpc_pair_follows_the_table() {
    let dir = support::scratch("auth-matrix");
    let secret = put(&dir, "secret", SECRET);
    let flags = auth_flags(&secret, None);
    let mut p = serve(&dir, "matrix", &flags, None);
    let admin = hs256(&claims("root", &["*:admin"]));
    ready(&mut p, &admin).await;

    // (name, permissions, role held in `default`, role held anywhere)
    let principals: Vec<(&str, Vec<&str>)> = vec![
        ("no permissions", vec![]),
        ("reader", vec!["default:reader"]),
        ("operator", vec!["default:operator"]),
        ("admin", vec!["default:admin"]),
        ("admin of another namespace", vec!["other:admin"]),
        (
            "reader everywhere",
            vec!["*:reader", "unknown-form", "x:root"],
        ),
    ];
    let methods = served_methods();
    let mut checked = 0;
    for (who, perms) in &principals {
        let (p_set, _) = knhk_shell::auth::Permissions::parse_all(perms.iter().copied());
        let token = hs256(&claims(who, perms));
        for m in &methods {
            let need = knhk_shell::auth::policy::need(m).expect("in the table");
            let allowed = match need {
                Need::Open => true,
                Need::Role(r, Scope::Namespace) => p_set.role_in("default").is_some_and(|h| h >= r),
                Need::Role(r, Scope::AnyNamespace) => p_set.any_role().is_some_and(|h| h >= r),
            };
            let (code, msg) = call(&p.url, m, &bearer(&token)).await;
            if allowed {
                assert!(
                    !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                    "{who} on {m}: expected to be let through, got {code:?}: {msg}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{who} on {m}: {msg}");
                if let Need::Role(r, _) = need {
                    assert!(
                        msg.contains(r.name()),
                        "{who} on {m}: '{msg}' names no role"
                    );
                }
            }
            checked += 1;
        }
        let (code, _) = call(&p.url, "/knhk.v1.Knhk/NoSuchMethod", &bearer(&token)).await;
        assert_eq!(code, Code::PermissionDenied, "{who}: an unknown method");
    }
    // Without a token: only the open methods.
    for m in &methods {
        let open = knhk_shell::auth::policy::need(m) == Some(Need::Open);
        let (code, msg) = call(&p.url, m, &[]).await;
        if open {
            assert!(
                !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                "{m}: {msg}"
            );
        } else {
            assert_eq!(code, Code::Unauthenticated, "{m} without a token: {msg}");
        }
    }
    assert!(checked >= principals.len() * 18, "{checked} pairs checked");
    // The namespace metadata picks the namespace; a bad one is INVALID_ARGUMENT.
    let other_admin = hs256(&claims("o", &["other:admin"]));
    let mut md = bearer(&other_admin);
    md.push(("knhk-namespace", "other".into()));
    let (code, msg) = call(&p.url, "/knhk.v1.Knhk/ListWorkflows", &md).await;
    assert_eq!(code, Code::Ok, "{msg}");
    let mut md = bearer(&other_admin);
    md.push(("knhk-namespace", "Not A Namespace".into()));
    let (code, msg) = call(&p.url, "/knhk.v1.Knhk/ListWorkflows", &md).await;
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    // Roles are cumulative in the table's order.
    assert!(Role::ALL.windows(2).all(|w| w[0] < w[1]));
}

/// Without authentication configured (loopback) every call is let through, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_on_loopback_everything_is_allowed() {
    let dir = support::scratch("auth-off");
    let mut p = serve(&dir, "off", &["--durability".into(), "off".into()], None);
    p.ready().await.expect("ready");
    for m in served_methods() {
        let (code, msg) = call(&p.url, &m, &[]).await;
        assert!(
            !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
            "{m}: {msg}"
        );
    }
    // An unknown method is UNIMPLEMENTED here (the router's answer).
    let (code, _) = call(&p.url, "/knhk.v1.Knhk/NoSuchMethod", &[]).await;
    assert_eq!(code, Code::Unimplemented);
    p.kill();
    assert!(
        p.log_text().contains("authentication is off"),
        "{}",
        p.log_text()
    );
}

// ---------------------------------------------------------------- start-up refusal

fn run_serve(args: &[&str], secs: u64) -> (Option<i32>, String) {
    let mut child = Command::new(support::bin())
        .arg("serve")
        .args(args)
        .env_remove("KNHK_HTTP_ADDR")
        .env_remove("KNHK_GRPC_ADDR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            let mut out = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut out);
            }
            return (st.code(), out);
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            let mut out = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut out);
            }
            return (None, out);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A non-loopback bind (gRPC or HTTP) without authentication refuses to start, naming
/// `--insecure-no-auth`; with it (or with authentication) the server starts. Bad auth files
/// and missing claims flags stop the start, naming the file or flag.
#[test]
fn startup_refuses_exposed_binds_without_auth() {
    let dir = support::scratch("auth-start");
    let data = s(&dir.join("data"));
    let port = support::free_port().to_string();
    let grpc_any = format!("0.0.0.0:{port}");
    let base = [
        "--durability",
        "off",
        "--data-dir",
        data.as_str(),
        "--no-pin",
        "--workers",
        "1",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter()
            .chain(extra.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>, secs| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run_serve(&a, secs)
    };

    let (code, err) = run(with(&["--grpc-addr", &grpc_any, "--http-addr", "off"]), 20);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--insecure-no-auth") && err.contains(&grpc_any),
        "{err}"
    );
    let http_port = support::free_port();
    let http_any = format!("0.0.0.0:{http_port}");
    let (code, err) = run(
        with(&["--grpc-addr", "127.0.0.1:0", "--http-addr", &http_any]),
        20,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--insecure-no-auth") && err.contains("HTTP"),
        "{err}"
    );

    // Accepted risk: it starts (still running after 2 s) and says so.
    let (code, err) = run(
        with(&[
            "--grpc-addr",
            &grpc_any,
            "--http-addr",
            "off",
            "--insecure-no-auth",
        ]),
        2,
    );
    assert_eq!(code, None, "exited: {err}");
    // With authentication it starts too.
    let secret = put(&dir, "secret", SECRET);
    let (code, err) = run(
        with(&[
            "--grpc-addr",
            &grpc_any,
            "--http-addr",
            "off",
            "--auth-hs256-secret-file",
            &s(&secret),
            "--auth-issuer",
            ISS,
            "--auth-audience",
            AUD,
        ]),
        2,
    );
    assert_eq!(code, None, "exited: {err}");

    // Configuration errors stop the start, naming what is wrong.
    let short = put(&dir, "short", "too-short\n");
    let (es_key, mut es_jwk) = rcgen_key(Algorithm::ES256, "es");
    drop(es_key);
    let no_alg = {
        es_jwk.common.key_algorithm = None;
        jwks_file(&dir, vec![es_jwk])
    };
    let private = put(
        &dir,
        "private.json",
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256","kid":"x"}]}"#,
    );
    let bad_map = put(&dir, "map", "client.test default:reader\n");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            with(&[
                "--auth-hs256-secret-file",
                &s(&secret),
                "--auth-audience",
                AUD,
            ]),
            "--auth-issuer",
        ),
        (
            with(&[
                "--auth-hs256-secret-file",
                &s(&secret),
                "--auth-issuer",
                ISS,
            ]),
            "--auth-audience",
        ),
        (
            with(&[
                "--auth-hs256-secret-file",
                &s(&short),
                "--auth-issuer",
                ISS,
                "--auth-audience",
                AUD,
            ]),
            "fewer than the 32",
        ),
        (
            with(&[
                "--auth-jwks-file",
                &s(&no_alg),
                "--auth-issuer",
                ISS,
                "--auth-audience",
                AUD,
            ]),
            "\"alg\"",
        ),
        (
            with(&[
                "--auth-jwks-file",
                &s(&private),
                "--auth-issuer",
                ISS,
                "--auth-audience",
                AUD,
            ]),
            "public keys only",
        ),
        (
            with(&[
                "--auth-jwks-file",
                &s(&dir.join("absent.json")),
                "--auth-issuer",
                ISS,
                "--auth-audience",
                AUD,
            ]),
            "absent.json",
        ),
    ];
    for (args, needle) in cases {
        let (code, err) = run(args.clone(), 20);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: '{err}' does not name '{needle}'"
        );
    }
    // The certificate map needs client certificates, and a valid file.
    let (code, err) = run(with(&["--auth-cert-map", &s(&bad_map)]), 20);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("tls-client-ca"), "{err}");
}

// ---------------------------------------------------------------- HTTP endpoints

/// One HTTP/1.1 GET: (status code, body).
fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

/// On a non-loopback HTTP bind with authentication, `/metrics` and `/health` need a reader's
/// token (the rule follows the bind address: a loopback peer needs one too); the probes stay
/// open. On a loopback bind they stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_need_a_token_off_loopback() {
    let dir = support::scratch("auth-http");
    let secret = put(&dir, "secret", SECRET);
    let http_port = support::free_port();
    let mut flags = auth_flags(&secret, None);
    flags.extend(["--http-addr".to_string(), format!("0.0.0.0:{http_port}")]);
    let mut p = serve(&dir, "http", &flags, None);
    let admin = hs256(&claims("root", &["*:admin"]));
    ready(&mut p, &admin).await;
    let reader = hs256(&claims("scraper", &["monitoring:reader"]));
    let nobody = hs256(&claims("nobody", &[]));
    for path in ["/metrics", "/health"] {
        let (code, body) = http_get(http_port, path, None);
        assert_eq!(code, 401, "{path}: {body}");
        assert!(
            body.contains("WWW-Authenticate") || body.contains("www-authenticate"),
            "{body}"
        );
        let (code, body) = http_get(http_port, path, Some("garbage"));
        assert_eq!(code, 401, "{path}: {body}");
        let (code, body) = http_get(http_port, path, Some(&nobody));
        assert_eq!(code, 403, "{path}: {body}");
        let (code, body) = http_get(http_port, path, Some(&reader));
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (_, body) = http_get(http_port, "/metrics", Some(&reader));
    assert!(body.contains("knhk_"), "{body}");
    for path in ["/health/live", "/health/ready", "/health/startup"] {
        let (code, body) = http_get(http_port, path, None);
        assert_eq!(code, 200, "{path}: {body}");
    }
    p.kill();

    // Loopback bind: open, as before.
    let http_port = support::free_port();
    let mut flags = auth_flags(&secret, None);
    flags.extend(["--http-addr".to_string(), format!("127.0.0.1:{http_port}")]);
    let mut p = serve(&dir, "http-lo", &flags, None);
    ready(&mut p, &admin).await;
    let (code, body) = http_get(http_port, "/metrics", None);
    assert_eq!(code, 200, "{body}");
}

// ---------------------------------------------------------------- client certificates

struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca() -> Ca {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "knhk auth test CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().expect("ca key");
    let cert = p.self_signed(&key).expect("ca cert");
    Ca {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(p, key),
    }
}

fn leaf(ca: &Ca, names: &[&str], server: bool) -> (String, String) {
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyUsagePurpose};
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("leaf params");
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let cert = p.signed_by(&key, &ca.issuer).expect("leaf cert");
    (cert.pem(), key.serialize_pem())
}

/// mTLS with a certificate map: a mapped certificate gets its roles, an unmapped one none
/// (PERMISSION_DENIED), a bearer token on the same connection takes precedence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_names_map_to_roles() {
    let dir = support::scratch("auth-cert");
    let ca = ca();
    let ca_pem = put(&dir, "ca.pem", &ca.pem);
    let (sc, sk) = leaf(&ca, &["localhost", "127.0.0.1"], true);
    let (c1, k1) = leaf(&ca, &["worker-1.knhk.test"], false);
    let (c2, k2) = leaf(&ca, &["stranger.knhk.test"], false);
    let files = [
        ("server.pem", sc),
        ("server.key", sk),
        ("c1.pem", c1),
        ("c1.key", k1),
        ("c2.pem", c2),
        ("c2.key", k2),
    ];
    for (n, t) in &files {
        put(&dir, n, t);
    }
    let map = put(
        &dir,
        "certmap",
        "# test map\ndns:worker-1.knhk.test  default:operator\nuri:spiffe://x/admin *:admin\n",
    );
    let secret = put(&dir, "secret", SECRET);
    let mut flags = auth_flags(&secret, None);
    for f in [
        "--tls-cert",
        &s(&dir.join("server.pem")),
        "--tls-key",
        &s(&dir.join("server.key")),
        "--tls-client-ca",
        &s(&ca_pem),
        "--tls-client-auth",
        "optional",
        "--auth-cert-map",
        &s(&map),
    ] {
        flags.push(f.to_string());
    }
    let p = serve(&dir, "cert", &flags, None);
    let url = p.url.replacen("http://", "https://", 1);
    let tls = |who: Option<&str>| ClientTls {
        ca: Some(ca_pem.clone()),
        cert: who.map(|w| dir.join(format!("{w}.pem"))),
        key: who.map(|w| dir.join(format!("{w}.key"))),
        server_name: Some("localhost".into()),
    };
    // Wait for the TLS port.
    let t0 = Instant::now();
    let ch1 = loop {
        if let Ok(ch) = tls(Some("c1")).channel(&url).await {
            break ch;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "TLS port not up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ch2 = tls(Some("c2")).channel(&url).await.expect("c2 connects");
    let ch0 = tls(None)
        .channel(&url)
        .await
        .expect("no-cert client connects");

    let list = "/knhk.v1.Knhk/ListWorkflows";
    let create = "/knhk.v1.Knhk/CreateCase";
    let register = "/knhk.v1.Knhk/RegisterWorkflow";
    // worker-1: operator in default.
    let (code, msg) = call_on(ch1.clone(), list, &[]).await;
    assert_eq!(code, Code::Ok, "{msg}");
    let (code, msg) = call_on(ch1.clone(), create, &[]).await;
    assert!(
        !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
        "{msg}"
    );
    let (code, msg) = call_on(ch1.clone(), register, &[]).await;
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    assert!(
        msg.contains("dns:worker-1.knhk.test") && msg.contains("admin"),
        "{msg}"
    );
    let mut md = vec![("knhk-namespace", "elsewhere".to_string())];
    let (code, msg) = call_on(ch1.clone(), list, &md).await;
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    // A token on a certificate connection wins (admin here).
    let admin = hs256(&claims("root", &["*:admin"]));
    md.extend(bearer(&admin));
    let (code, msg) = call_on(ch1.clone(), list, &md).await;
    assert_eq!(code, Code::Ok, "{msg}");
    // A bad token is refused even with a mapped certificate (no fallback).
    let (code, msg) = call_on(ch1, list, &bearer("garbage")).await;
    assert_eq!(code, Code::Unauthenticated, "{msg}");
    // The stranger: verified, unmapped → no role.
    let (code, msg) = call_on(ch2.clone(), list, &[]).await;
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    assert!(msg.contains("dns:stranger.knhk.test"), "{msg}");
    let (code, msg) = call_on(ch2, "/grpc.health.v1.Health/Check", &[]).await;
    assert_eq!(code, Code::Ok, "{msg}");
    // No certificate, no token: unauthenticated.
    let (code, msg) = call_on(ch0.clone(), list, &[]).await;
    assert_eq!(code, Code::Unauthenticated, "{msg}");
    assert!(msg.contains("client certificate"), "{msg}");
    let (code, msg) = call_on(ch0, list, &bearer(&admin)).await;
    assert_eq!(code, Code::Ok, "{msg}");
    // The knhk client commands carry a token file.
    let token_file = put(&dir, "token", &format!("{admin}\n"));
    let out = Command::new(support::bin())
        .env_remove("KNHK_SERVER")
        .args([
            "--server",
            &url,
            "--tls-ca",
            &s(&ca_pem),
            "--tls-server-name",
            "localhost",
        ])
        .args(["--token-file", &s(&token_file), "workflows"])
        .output()
        .expect("knhk workflows");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(support::bin())
        .env_remove("KNHK_SERVER")
        .args([
            "--server",
            &url,
            "--tls-ca",
            &s(&ca_pem),
            "--tls-server-name",
            "localhost",
        ])
        .arg("workflows")
        .output()
        .expect("knhk workflows");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));
    drop(p);
}

// ---------------------------------------------------------------- outside client

fn python_with(modules: &str) -> Option<String> {
    let candidates = match std::env::var("KNHK_GRPC_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["/usr/bin/python3".to_string(), "python3".to_string()],
    };
    for py in &candidates {
        let ok = Command::new(py)
            .args(["-c", &format!("import {modules}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Some(py.clone());
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but python3 with {modules} is missing (.ci/run installs python3-grpcio and python3-jwt)"
    );
    eprintln!("python3 with {modules} not installed: the outside-client check is skipped");
    None
}

/// Python grpcio calls with a token PyJWT minted from the same secret file; a tampered token is
/// UNAUTHENTICATED. Raw protobuf bytes: no generated code.
const PY_CLIENT: &str = r#"
import sys, time, grpc, jwt
target, secret_file, iss, aud = sys.argv[1:5]
secret = open(secret_file, 'rb').read().strip()
now = int(time.time())
tok = jwt.encode({'sub': 'py', 'iss': iss, 'aud': aud, 'exp': now + 600, 'nbf': now - 5,
                  'permissions': ['default:reader']}, secret, algorithm='HS256')
ch = grpc.insecure_channel(target)
call = ch.unary_unary('/knhk.v1.Knhk/ListWorkflows', request_serializer=None, response_deserializer=None)
def go(t):
    try:
        call(b'', timeout=5, metadata=[('authorization', 'Bearer ' + t)])
        return 'OK'
    except grpc.RpcError as e:
        return e.code().name
print(go(tok), go(tok[:-4] + ('AAAA' if not tok.endswith('AAAA') else 'BBBB')))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_with_a_pyjwt_token() {
    let Some(py) = python_with("grpc, jwt") else {
        return;
    };
    let dir = support::scratch("auth-py");
    let secret = put(&dir, "secret", &format!("{SECRET}\n"));
    let flags = auth_flags(&secret, None);
    let mut p = serve(&dir, "py", &flags, None);
    ready(&mut p, &hs256(&claims("root", &["*:admin"]))).await;
    let target = p.url.trim_start_matches("http://").to_string();
    let out = Command::new(&py)
        .args(["-c", PY_CLIENT, &target, &s(&secret), ISS, AUD])
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "OK UNAUTHENTICATED");
}

// ---------------------------------------------------------------- namespaces

/// Adds a bearer token and a namespace to every call.
#[derive(Clone)]
struct As {
    token: String,
    ns: String,
}

impl tonic::service::Interceptor for As {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let t: MetadataValue<_> = format!("Bearer {}", self.token).parse().expect("token");
        req.metadata_mut().insert("authorization", t);
        req.metadata_mut()
            .insert("knhk-namespace", self.ns.parse().expect("namespace"));
        Ok(req)
    }
}

type NsClient =
    KnhkClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, As>>;

async fn client_as(url: &str, token: &str, ns: &str) -> NsClient {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    KnhkClient::with_interceptor(
        ch,
        As {
            token: token.into(),
            ns: ns.into(),
        },
    )
}

async fn register_as(c: &mut NsClient, id: &str) -> Result<proto::Workflow, tonic::Status> {
    register_model_as(c, id, "yawl/WPC1Sequence.yawl").await
}

async fn register_model_as(
    c: &mut NsClient,
    id: &str,
    file: &str,
) -> Result<proto::Workflow, tonic::Status> {
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: support::corpus(file),
        format: 0,
        workflow_id: id.into(),
        // Cases wait for their first task whatever the model (WPC3Synchronization's tasks have
        // no decomposition: they would otherwise run, and the case finish, at creation).
        manual_silent_tasks: true,
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().workflow.expect("workflow"))
}

fn task_req(case_id: u64, task: &str) -> proto::TaskRequest {
    proto::TaskRequest {
        case_id,
        task: task.into(),
        ..Default::default()
    }
}

/// NOT_FOUND with the very message an unknown object of that id gets.
fn same_as_unknown<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    unknown: &tonic::Status,
    what: &str,
) {
    let s = r.expect_err(what);
    assert_eq!(s.code(), Code::NotFound, "{what}: {}", s.message());
    assert_eq!(
        unknown.code(),
        Code::NotFound,
        "{what}: {}",
        unknown.message()
    );
    assert_eq!(
        s.message(),
        unknown.message(),
        "{what}: the answer differs from an unknown id's"
    );
}

async fn cases_of(c: &mut NsClient, workflow: &str) -> Vec<u64> {
    use tokio_stream::StreamExt;
    let mut s = c
        .list_cases(proto::ListCasesRequest {
            workflow_id: workflow.into(),
            ..Default::default()
        })
        .await
        .expect("ListCases")
        .into_inner();
    let mut v = Vec::new();
    while let Some(c) = s.next().await {
        v.push(c.expect("case").case_id);
    }
    v
}

/// Workflows and cases belong to the namespace they were registered in: every RPC naming
/// another namespace's workflow or case answers NOT_FOUND exactly as for an unknown one, lists,
/// watches and exports show only the caller's namespace, bulk events on foreign cases are
/// NOT_FOUND and change nothing; the namespace survives a restart (event log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_namespaces_objects_are_not_found() {
    use tokio_stream::StreamExt;
    let dir = support::scratch("auth-ns");
    let secret = put(&dir, "secret", SECRET);
    let mut flags = auth_flags(&secret, None);
    flags.retain(|f| f != "--durability" && f != "off");
    let token_a = hs256(&claims("alice", &["team-a:admin"]));
    let token_b = hs256(&claims("bob", &["team-b:admin"]));
    let mut p = serve(&dir, "ns", &flags, None);
    ready(&mut p, &hs256(&claims("root", &["*:admin"]))).await;
    let mut a = client_as(&p.url, &token_a, "team-a").await;
    let mut b = client_as(&p.url, &token_b, "team-b").await;

    let wa = register_as(&mut a, "wf-a").await.expect("register a");
    let wb = register_as(&mut b, "wf-b").await.expect("register b");
    assert_eq!(
        (wa.workflow_id.as_str(), wb.workflow_id.as_str()),
        ("wf-a", "wf-b")
    );
    // Workflow ids are per namespace: b registers its own "wf-a", version 1 (nothing tells b
    // that a has one); another model under it in a's namespace is version 2 there.
    let b_wf_a = register_as(&mut b, "wf-a").await.expect("b's own wf-a");
    assert_eq!((b_wf_a.workflow_id.as_str(), b_wf_a.version), ("wf-a", 1));
    let a_v2 = register_model_as(&mut a, "wf-a", "yawl/WPC3Synchronization.yawl")
        .await
        .expect("version 2 in a");
    assert_eq!(a_v2.version, 2);
    // The same content again is idempotent: the existing workflow, no new one.
    let again = register_as(&mut a, "wf-a")
        .await
        .expect("a retried registration");
    assert_eq!(again, wa, "the existing workflow");
    let ca = a
        .create_case(proto::CreateCaseRequest {
            workflow_id: "wf-a".into(),
            data: Default::default(),
            ..Default::default()
        })
        .await
        .expect("create a")
        .into_inner()
        .case_id;
    let cb = b
        .create_case(proto::CreateCaseRequest {
            workflow_id: "wf-b".into(),
            data: Default::default(),
            ..Default::default()
        })
        .await
        .expect("create b")
        .into_inner();
    let cb_seq = cb.seq;
    let cb = cb.case_id;

    // What an unknown workflow and case answer (ids that never existed).
    let nowf = a
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "wf-b".into(),
            version: 0,
        })
        .await;
    let never = a
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "wf-never".into(),
            version: 0,
        })
        .await
        .expect_err("unknown");
    let never_as_b = tonic::Status::new(never.code(), never.message().replace("wf-never", "wf-b"));
    same_as_unknown(nowf, &never_as_b, "GetWorkflow of b's workflow");
    let missing_case = cb + (1 << 40); // same slot, another generation: never existed
    let unknown_case = a
        .get_case(proto::GetCaseRequest {
            case_id: missing_case,
            ..Default::default()
        })
        .await
        .expect_err("unknown");
    let unknown_cb = tonic::Status::new(
        unknown_case.code(),
        unknown_case
            .message()
            .replace(&missing_case.to_string(), &cb.to_string()),
    );
    same_as_unknown(
        a.get_case(proto::GetCaseRequest {
            case_id: cb,
            ..Default::default()
        })
        .await,
        &unknown_cb,
        "GetCase",
    );
    for (what, r) in [
        ("StartTask", a.start_task(task_req(cb, "A")).await),
        ("FireTask", a.fire_task(task_req(cb, "A")).await),
        ("CompleteTask", a.complete_task(task_req(cb, "A")).await),
        ("CancelTask", a.cancel_task(task_req(cb, "A")).await),
        (
            "CancelCase",
            a.cancel_case(proto::CancelCaseRequest { case_id: cb })
                .await,
        ),
    ] {
        same_as_unknown(r, &unknown_cb, what);
    }
    let r = a
        .create_case(proto::CreateCaseRequest {
            workflow_id: "wf-b".into(),
            data: Default::default(),
            ..Default::default()
        })
        .await;
    same_as_unknown(r, &never_as_b, "CreateCase of b's workflow");
    let r = a
        .watch_case(proto::WatchCaseRequest {
            case_id: cb,
            ..Default::default()
        })
        .await;
    same_as_unknown(r.map(|_| ()), &unknown_cb, "WatchCase of b's case");
    let r = a
        .watch_case(proto::WatchCaseRequest {
            workflow_id: "wf-b".into(),
            ..Default::default()
        })
        .await;
    same_as_unknown(r.map(|_| ()), &never_as_b, "WatchCase of b's workflow");
    let r = a
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: cb,
            ..Default::default()
        })
        .await;
    same_as_unknown(r, &unknown_cb, "ExportCaseXes of b's case");
    let r = a
        .export_xes(proto::ExportXesRequest {
            workflow_id: "wf-b".into(),
            ..Default::default()
        })
        .await;
    same_as_unknown(r.map(|_| ()), &never_as_b, "ExportXes of b's workflow");
    let r = a
        .list_cases(proto::ListCasesRequest {
            workflow_id: "wf-b".into(),
            ..Default::default()
        })
        .await;
    same_as_unknown(r.map(|_| ()), &never_as_b, "ListCases of b's workflow");

    // Lists and exports show only the caller's namespace.
    let names: Vec<String> = a
        .list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("list")
        .into_inner()
        .workflows
        .into_iter()
        .map(|w| format!("{}@{}", w.workflow_id, w.version))
        .collect();
    // a's two versions of wf-a; nothing of b's (neither b's wf-a nor wf-b).
    assert_eq!(names, ["wf-a@1", "wf-a@2"]);
    assert_eq!(cases_of(&mut a, "").await, vec![ca]);
    assert_eq!(cases_of(&mut b, "").await, vec![cb]);
    let x = a
        .export_case_xes(proto::ExportCaseXesRequest::default())
        .await
        .expect("export")
        .into_inner();
    assert_eq!(x.traces, 1, "a's export holds a's case only");
    assert!(!String::from_utf8_lossy(&x.xes).contains(&format!("\"{cb}\"")));
    let mut chunks = a
        .export_xes(proto::ExportXesRequest::default())
        .await
        .expect("export stream")
        .into_inner();
    let mut last = None;
    while let Some(c) = chunks.next().await {
        last = Some(c.expect("chunk"));
    }
    assert_eq!(last.expect("last chunk").traces, 1);

    // A watcher of "everything" sees its own namespace's events only.
    let mut watch = a
        .watch_case(proto::WatchCaseRequest::default())
        .await
        .expect("watch all")
        .into_inner();
    b.fire_task(task_req(cb, "A"))
        .await
        .expect("b fires on its case");
    a.fire_task(task_req(ca, "A"))
        .await
        .expect("a fires on its case");
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("an event within 5 s")
        .expect("stream open")
        .expect("event");
    assert_eq!(
        first.case_id, ca,
        "a's watcher saw another namespace's event: {first:?}"
    );
    let cb_seq = cb_seq + 1;

    // Bulk: events on b's objects are NOT_FOUND in place, the others run.
    let batch = proto::SubmitEventsRequest {
        events: vec![
            proto::Event {
                op: proto::EventOp::CreateCase as i32,
                workflow_id: "wf-b".into(),
                ..Default::default()
            },
            proto::Event {
                op: proto::EventOp::Fire as i32,
                case_id: cb,
                task: Some(proto::event::Task::TaskName("B".into())),
                ..Default::default()
            },
            proto::Event {
                op: proto::EventOp::Fire as i32,
                case_id: ca,
                task: Some(proto::event::Task::TaskName("B".into())),
                ..Default::default()
            },
            proto::Event {
                op: proto::EventOp::CancelCase as i32,
                case_id: cb,
                ..Default::default()
            },
        ],
    };
    let mut out = a
        .submit_events(tokio_stream::iter(vec![batch]))
        .await
        .expect("submit")
        .into_inner();
    let results = out.next().await.expect("a response").expect("ok").results;
    let codes: Vec<i32> = results.iter().map(|r| r.code).collect();
    assert_eq!(codes, vec![5, 5, 0, 5], "{results:?}");
    assert!(results[1].message.contains(&cb.to_string()), "{results:?}");
    // b's case is as b left it.
    let after = b
        .get_case(proto::GetCaseRequest {
            case_id: cb,
            ..Default::default()
        })
        .await
        .expect("b's case")
        .into_inner();
    assert_eq!(after.seq, cb_seq, "{after:?}");
    assert_eq!(
        cases_of(&mut b, "").await,
        vec![cb],
        "no case was created in b by a"
    );

    // The namespace is durable: after a restart the same answers.
    p.kill();
    let mut p = serve(&dir, "ns", &flags, None);
    ready(&mut p, &hs256(&claims("root", &["*:admin"]))).await;
    let mut a = client_as(&p.url, &token_a, "team-a").await;
    let mut b = client_as(&p.url, &token_b, "team-b").await;
    let r = a
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "wf-b".into(),
            version: 0,
        })
        .await;
    same_as_unknown(
        r,
        &never_as_b,
        "GetWorkflow of b's workflow after a restart",
    );
    b.get_workflow(proto::GetWorkflowRequest {
        workflow_id: "wf-b".into(),
        version: 0,
    })
    .await
    .expect("b's workflow after a restart");
    assert_eq!(cases_of(&mut a, "").await, vec![ca]);
    // Both "wf-a" come back, each in its namespace: a's has a's case, b's none.
    assert_eq!(cases_of(&mut a, "wf-a").await, vec![ca]);
    assert_eq!(cases_of(&mut b, "wf-a").await, Vec::<u64>::new());
    let b_v2 = register_model_as(&mut b, "wf-a", "yawl/WPC3Synchronization.yawl")
        .await
        .expect("version 2 in b");
    assert_eq!(b_v2.version, 2);
    // Idempotence survives the restart (the digest is recomputed from the log): version 1.
    let same = register_as(&mut b, "wf-a")
        .await
        .expect("b's retried registration");
    assert_eq!((same.workflow_id.as_str(), same.version), ("wf-a", 1));
}

// ---------------------------------------------------------------- rate limits

/// Each principal has its own call budget: one client over it gets RESOURCE_EXHAUSTED with
/// `knhk-retry-after-ms`, another in the same instant is unaffected, health is never limited.
/// A bulk batch larger than the event burst is refused event by event; one within it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_per_principal() {
    use tokio_stream::StreamExt;
    let dir = support::scratch("auth-rate");
    let secret = put(&dir, "secret", SECRET);
    let mut flags = auth_flags(&secret, None);
    for f in [
        "--rate-calls",
        "2",
        "--rate-calls-burst",
        "2",
        "--rate-events",
        "100",
    ] {
        flags.push(f.to_string());
    }
    let mut p = serve(&dir, "rate", &flags, None);
    ready(&mut p, &hs256(&claims("probe", &["*:reader"]))).await;
    let a = hs256(&claims("client-a", &["default:operator"]));
    let b = hs256(&claims("client-b", &["default:operator"]));
    let ch = tonic::transport::Endpoint::from_shared(p.url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let list = "/knhk.v1.Knhk/ListWorkflows";
    // A: 20 calls in a row against 2 a second (burst 2): the first passes, most do not.
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(call_on(ch.clone(), list, &bearer(&a)).await);
    }
    assert_eq!(codes[0].0, Code::Ok, "{:?}", codes[0]);
    let throttled: Vec<_> = codes
        .iter()
        .filter(|c| c.0 == Code::ResourceExhausted)
        .collect();
    assert!(throttled.len() >= 10, "{codes:?}");
    assert!(
        throttled[0].1.contains("rate limit") && throttled[0].1.contains("retry in"),
        "{codes:?}"
    );
    // The retry hint travels as metadata.
    let mut c = KnhkClient::with_interceptor(
        ch.clone(),
        As {
            token: a.clone(),
            ns: "default".into(),
        },
    );
    let st = c
        .list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect_err("throttled");
    assert_eq!(st.code(), Code::ResourceExhausted, "{}", st.message());
    let ms: u64 = st
        .metadata()
        .get("knhk-retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("knhk-retry-after-ms");
    assert!((1..=1000).contains(&ms), "{ms}");
    // B, right away: its own budget.
    let (code, msg) = call_on(ch.clone(), list, &bearer(&b)).await;
    assert_eq!(code, Code::Ok, "{msg}");
    // Health is not limited.
    for _ in 0..10 {
        let (code, msg) = call_on(ch.clone(), "/grpc.health.v1.Health/Check", &[]).await;
        assert_eq!(code, Code::Ok, "{msg}");
    }

    // Bulk: C's batch of 150 events is over the burst of 100: each event RESOURCE_EXHAUSTED;
    // a batch of 50 runs (its events answered by the engine: NOT_FOUND for a case 0).
    let cc = hs256(&claims("client-c", &["default:operator"]));
    let mut c = KnhkClient::with_interceptor(
        ch,
        As {
            token: cc,
            ns: "default".into(),
        },
    );
    let ev = |n: usize| proto::SubmitEventsRequest {
        events: (0..n)
            .map(|_| proto::Event {
                op: proto::EventOp::CancelCase as i32,
                case_id: 0,
                ..Default::default()
            })
            .collect(),
    };
    let mut out = c
        .submit_events(tokio_stream::iter(vec![ev(150), ev(50)]))
        .await
        .expect("submit")
        .into_inner();
    let first = out.next().await.expect("response").expect("ok").results;
    assert_eq!(first.len(), 150);
    assert!(first.iter().all(|r| r.code == 8), "{:?}", &first[..2]);
    assert!(
        first[0].message.contains("--rate-events-burst"),
        "{}",
        first[0].message
    );
    let second = out.next().await.expect("response").expect("ok").results;
    assert_eq!(second.len(), 50);
    assert!(second.iter().all(|r| r.code == 5), "{:?}", &second[..2]);
}

// ---------------------------------------------------------------- key rotation

/// Polls `call` until it answers `want` (10 s at most).
async fn wait_code(url: &str, token: &str, want: Code, what: &str) {
    let t0 = Instant::now();
    loop {
        let (code, msg) = call(url, "/knhk.v1.Knhk/ListWorkflows", &bearer(token)).await;
        if code == want {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}: still {code:?}: {msg}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes then renames (a reader never sees half a file).
fn replace(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

/// The JWKS is reloaded on SIGHUP (a new key's tokens pass, no restart) and a broken file
/// keeps the keys in use; with `--auth-reload-interval-ms`, a changed file is picked up by
/// itself and a removed key's tokens fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_reload_without_restart() {
    let dir = support::scratch("auth-reload");
    let (k1, j1) = rcgen_key(Algorithm::ES256, "k1");
    let (k2, j2) = rcgen_key(Algorithm::ES256, "k2");
    let set = |keys: Vec<Jwk>| serde_json::to_string(&JwkSet { keys }).expect("json");
    replace(&dir, "jwks.json", &set(vec![j1.clone()]));
    let jwks = dir.join("jwks.json");
    let base = |interval: &str| -> Vec<String> {
        [
            "--durability",
            "off",
            "--auth-jwks-file",
            &s(&jwks),
            "--auth-issuer",
            ISS,
            "--auth-audience",
            AUD,
            "--auth-reload-interval-ms",
            interval,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let t1 = signed(
        Algorithm::ES256,
        Some("k1"),
        &k1,
        &claims("one", &["*:reader"]),
    );
    let t2 = signed(
        Algorithm::ES256,
        Some("k2"),
        &k2,
        &claims("two", &["*:reader"]),
    );

    // SIGHUP only.
    let mut p = serve(&dir, "hup", &base("0"), None);
    ready(&mut p, &t1).await;
    let (code, msg) = call(&p.url, "/knhk.v1.Knhk/ListWorkflows", &bearer(&t2)).await;
    assert_eq!(code, Code::Unauthenticated, "{msg}");
    assert!(msg.contains("key id"), "{msg}");
    let hup = |pid: u32| {
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -HUP");
    };
    replace(&dir, "jwks.json", &set(vec![j1.clone(), j2.clone()]));
    hup(p.child.id());
    wait_code(&p.url, &t2, Code::Ok, "k2 after SIGHUP").await;
    // A broken file: the keys in use stay, the failure is logged naming the file.
    let mut no_alg = j2.clone();
    no_alg.common.key_algorithm = None;
    replace(&dir, "jwks.json", &set(vec![j1.clone(), no_alg]));
    hup(p.child.id());
    let t0 = Instant::now();
    while !p.log_text().contains("auth reload failed") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no reload failure logged: {}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(p.log_text().contains("jwks.json"), "{}", p.log_text());
    let (code, msg) = call(&p.url, "/knhk.v1.Knhk/ListWorkflows", &bearer(&t2)).await;
    assert_eq!(code, Code::Ok, "the previous keys stay: {msg}");
    assert!(
        p.child.try_wait().expect("wait").is_none(),
        "SIGHUP ended the server"
    );
    p.kill();

    // On file change: k1 removed, k2 kept.
    replace(&dir, "jwks.json", &set(vec![j1, j2.clone()]));
    let mut p = serve(&dir, "change", &base("50"), None);
    ready(&mut p, &t1).await;
    replace(&dir, "jwks.json", &set(vec![j2]));
    wait_code(&p.url, &t1, Code::Unauthenticated, "k1 removed").await;
    let (code, msg) = call(&p.url, "/knhk.v1.Knhk/ListWorkflows", &bearer(&t2)).await;
    assert_eq!(code, Code::Ok, "{msg}");
}

// ---------------------------------------------------------------- token expiry on streams

/// A stream lives no longer than the token it was opened with: WatchCase and SubmitEvents
/// opened with a token that expires in 2 s end with UNAUTHENTICATED (leeway 0 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_their_token_expires() {
    use tokio_stream::StreamExt;
    let dir = support::scratch("auth-expiry");
    let secret = put(&dir, "secret", SECRET);
    let mut flags = auth_flags(&secret, None);
    flags.extend(["--auth-leeway-secs".to_string(), "0".to_string()]);
    let mut p = serve(&dir, "expiry", &flags, None);
    ready(&mut p, &hs256(&claims("probe", &["*:reader"]))).await;
    let mut c = claims("short", &["default:operator"]);
    c["exp"] = json!(now() + 2);
    let short = hs256(&c);
    let long = hs256(&claims("long", &["default:operator"]));
    let mut watcher = client_as(&p.url, &short, "default").await;
    let mut watch = watcher
        .watch_case(proto::WatchCaseRequest::default())
        .await
        .expect("watch opens while the token is valid")
        .into_inner();
    let mut bulk = client_as(&p.url, &short, "default").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::SubmitEventsRequest>(4);
    let mut out = bulk
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("bulk opens while the token is valid")
        .into_inner();
    // A stream opened with a long-lived token goes on meanwhile.
    let mut other = client_as(&p.url, &long, "default").await;
    let mut other_watch = other
        .watch_case(proto::WatchCaseRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let end = tokio::time::timeout(Duration::from_secs(15), watch.next())
        .await
        .expect("the watch ends within 15 s");
    let st = end.expect("a status").expect_err("UNAUTHENTICATED");
    assert_eq!(st.code(), Code::Unauthenticated, "{}", st.message());
    assert!(st.message().contains("expired"), "{}", st.message());
    let end = tokio::time::timeout(Duration::from_secs(15), out.next())
        .await
        .expect("the bulk stream ends within 15 s");
    let st = end.expect("a status").expect_err("UNAUTHENTICATED");
    assert_eq!(st.code(), Code::Unauthenticated, "{}", st.message());
    drop(tx);
    // The long-lived watcher still receives.
    let wf = register_as(
        &mut client_as(&p.url, &hs256(&claims("root", &["*:admin"])), "default").await,
        "",
    )
    .await
    .expect("register");
    other
        .create_case(proto::CreateCaseRequest {
            workflow_id: wf.workflow_id,
            data: Default::default(),
            ..Default::default()
        })
        .await
        .expect("create");
    let ev = tokio::time::timeout(Duration::from_secs(5), other_watch.next())
        .await
        .expect("an event within 5 s")
        .expect("open")
        .expect("event");
    assert_eq!(ev.kind, proto::EventKind::CaseCreated as i32);
}
