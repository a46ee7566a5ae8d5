//! Certificates for the TLS tests, made with rcgen (ring, the one crypto provider): a CA and
//! leaves it signs.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

pub struct Ca {
    pub pem: String,
    pub issuer: Issuer<'static, KeyPair>,
}

pub fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("ca key");
    let cert = p.self_signed(&key).expect("ca cert");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A leaf signed by `ca`: (certificate PEM, key PEM). Server leaves carry `localhost` and
/// 127.0.0.1.
pub fn leaf(ca: &Ca, serial: u64, server: bool) -> (String, String) {
    let names: Vec<String> = if server {
        vec!["localhost".into(), "127.0.0.1".into()]
    } else {
        vec![format!("client-{serial}.knhk.test")]
    };
    let mut p = CertificateParams::new(names).expect("leaf params");
    p.distinguished_name
        .push(DnType::CommonName, format!("knhk test {serial}"));
    p.serial_number = Some(SerialNumber::from(serial));
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = KeyPair::generate().expect("leaf key");
    let cert = p.signed_by(&key, &ca.issuer).expect("leaf cert");
    (cert.pem(), key.serialize_pem())
}
