//! The cluster certificate authority: created once by the first head, kept in the
//! replicated state, used by the leader to sign certificates for heads, agents and users.
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};

use crate::{fingerprint, TlsError, HEAD_SERVER_NAME};

/// Lifetime of the CA certificate.
const CA_VALIDITY_SECS: i64 = 20 * 365 * 24 * 3600;
/// Certificates are valid from this long before they are issued, so a peer whose clock
/// is a little behind does not see them as "not yet valid".
const BACKDATE_SECS: i64 = 3600;

/// A loaded CA: its certificate and the key that signs with it.
pub struct Ca {
    name: String,
    key: KeyPair,
    /// The CA as rcgen needs it for signing (subject and key identifier).
    issuer: rcgen::Certificate,
    cert_pem: String,
}

/// A freshly signed certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    /// SHA-256 of the DER encoding.
    pub fingerprint: [u8; 32],
    pub expires_unix_ms: u64,
}

/// A raw ECDSA P-256 public key sent by a joining node (its private key stays there).
struct RawP256(Vec<u8>);

impl PublicKeyData for RawP256 {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

fn ca_params(name: &str, now_s: i64) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "rudel");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = time_at(now_s - BACKDATE_SECS)?;
    p.not_after = time_at(now_s + CA_VALIDITY_SECS)?;
    Ok(p)
}

fn time_at(unix_s: i64) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(unix_s).map_err(|e| TlsError::Generate(e.to_string()))
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

/// A new ECDSA P-256 key pair (the only kind rudel issues certificates for).
pub fn new_key() -> Result<KeyPair, TlsError> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

impl Ca {
    /// A new CA named `name` (e.g. "rudel cluster 4f3a...").
    pub fn generate(name: &str) -> Result<Ca, TlsError> {
        let key = new_key()?;
        let now_s = (crate::now_ms() / 1000) as i64;
        let cert = ca_params(name, now_s)?.self_signed(&key)?;
        let cert_pem = cert.pem();
        Ok(Ca {
            name: name.to_string(),
            key,
            issuer: cert,
            cert_pem,
        })
    }

    /// The CA kept in the cluster state.
    pub fn load(name: &str, cert_pem: &str, key_pem: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| TlsError::Bad {
            what: "CA key".into(),
            detail: e.to_string(),
        })?;
        // Signing needs the CA's subject and key identifier only; both follow from the
        // name and the key, so an equivalent certificate is rebuilt rather than parsed.
        let issuer = ca_params(name, (crate::now_ms() / 1000) as i64)?.self_signed(&key)?;
        Ok(Ca {
            name: name.to_string(),
            key,
            issuer,
            cert_pem: cert_pem.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// SHA-256 of the CA certificate (what join tokens pin).
    pub fn fingerprint(&self) -> Result<[u8; 32], TlsError> {
        let der = crate::creds::parse_certs(&self.cert_pem, "CA certificate")?;
        let first = der.first().ok_or_else(|| TlsError::Bad {
            what: "CA certificate".into(),
            detail: "no certificate in PEM".into(),
        })?;
        Ok(fingerprint(first.as_ref()))
    }

    /// Signs a certificate for `public_key` (raw P-256 point). Head certificates can serve
    /// (`rudel-head`, serverAuth); every certificate can authenticate a client.
    pub fn issue(
        &self,
        role: &str,
        name: &str,
        public_key: &[u8],
        expires_unix_ms: u64,
        head: bool,
    ) -> Result<Issued, TlsError> {
        if public_key.len() != 65 || public_key[0] != 4 {
            return Err(TlsError::Bad {
                what: "public key".into(),
                detail: "expected an uncompressed ECDSA P-256 point (65 bytes)".into(),
            });
        }
        let now_s = (crate::now_ms() / 1000) as i64;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationalUnitName, role);
        dn.push(DnType::OrganizationName, "rudel");
        p.distinguished_name = dn;
        p.serial_number = Some(random_serial());
        p.not_before = time_at(now_s - BACKDATE_SECS)?;
        p.not_after = time_at((expires_unix_ms / 1000) as i64)?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        if head {
            p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
            let dns = HEAD_SERVER_NAME
                .try_into()
                .map_err(|e: rcgen::Error| TlsError::Generate(e.to_string()))?;
            p.subject_alt_names = vec![SanType::DnsName(dns)];
        }
        let cert = p.signed_by(&RawP256(public_key.to_vec()), &self.issuer, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            fingerprint: fingerprint(cert.der().as_ref()),
            expires_unix_ms: expires_unix_ms / 1000 * 1000,
        })
    }
}
