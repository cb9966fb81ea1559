//! Credential directories: `ca.pem` (the cluster CA), and with an identity `cert.pem` +
//! `key.pem` (0600). Heads, agents and users each keep one.
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

/// What a party needs for TLS: the CA it trusts and, once it has one, its own identity.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    /// (certificate PEM, private key PEM)
    pub identity: Option<(String, String)>,
}

/// Written by hand so that a debug log of a config holding credentials never carries
/// the private key (the derived `Debug` printed the PEM text).
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field(
                "identity",
                &self
                    .identity
                    .as_ref()
                    .map(|_| "<certificate and private key: redacted>"),
            )
            .finish()
    }
}

impl Credentials {
    /// Whether `dir` holds credentials (a CA file).
    pub fn exist(dir: &Path) -> bool {
        dir.join(CA_FILE).is_file()
    }

    /// Reads `dir`: the CA is required, the identity is loaded if both files are there.
    pub fn load(dir: &Path) -> Result<Credentials, TlsError> {
        let ca_pem = read(&dir.join(CA_FILE))?;
        parse_certs(&ca_pem, "CA certificate")?;
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        let identity = if cert.is_file() && key.is_file() {
            check_private(&key)?;
            let (c, k) = (read(&cert)?, read(&key)?);
            parse_certs(&c, &cert.display().to_string())?;
            parse_key(&k, &key.display().to_string())?;
            Some((c, k))
        } else {
            None
        };
        Ok(Credentials { ca_pem, identity })
    }

    /// Writes the files (directory 0700, key 0600), each atomically.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| TlsError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        write_atomic(&dir.join(CA_FILE), &self.ca_pem, 0o644)?;
        if let Some((cert, key)) = &self.identity {
            write_atomic(&dir.join(KEY_FILE), key, 0o600)?;
            write_atomic(&dir.join(CERT_FILE), cert, 0o644)?;
        }
        Ok(())
    }

    /// The identity's certificate chain and key, parsed.
    pub(crate) fn parsed_identity(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
        match &self.identity {
            None => Ok(None),
            Some((c, k)) => Ok(Some((parse_certs(c, "certificate")?, parse_key(k, "private key")?))),
        }
    }

    /// SHA-256 of the identity's certificate.
    pub fn fingerprint(&self) -> Result<Option<[u8; 32]>, TlsError> {
        match &self.identity {
            None => Ok(None),
            Some((c, _)) => {
                let certs = parse_certs(c, "certificate")?;
                Ok(certs.first().map(|d| crate::fingerprint(d.as_ref())))
            }
        }
    }
}

/// Refuses a key file that group or others may read: another local user could have
/// copied the key, and a node that goes on with it would hide that.
pub fn check_private(p: &Path) -> Result<(), TlsError> {
    let meta = std::fs::metadata(p).map_err(|source| TlsError::Io {
        path: p.display().to_string(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::Bad {
            what: p.display().to_string(),
            detail: format!(
                "holds a private key but is readable by group or others (mode {mode:o}); \
                 fix it with `chmod 600 {}`",
                p.display()
            ),
        });
    }
    Ok(())
}

fn read(p: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(p).map_err(|source| TlsError::Io {
        path: p.display().to_string(),
        source,
    })
}

/// Writes `text` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    let tmp: PathBuf = path.with_extension("tmp");
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// All certificates in a PEM text (at least one).
pub fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| TlsError::Bad {
        what: what.to_string(),
        detail: format!("not a PEM certificate: {e:?}"),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Bad {
            what: what.to_string(),
            detail: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// The private key in a PEM text.
pub fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsError::Bad {
        what: what.to_string(),
        detail: format!("not a PEM private key: {e:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_with_private_key_mode() {
        let ca = crate::Ca::generate("test ca").unwrap();
        let key = crate::ca::new_key().unwrap();
        let issued = ca
            .issue("agent", "n1", key.public_key_raw(), crate::now_ms() + 60_000, false)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("creds");
        assert!(!Credentials::exist(&d));
        let c = Credentials {
            ca_pem: ca.cert_pem().to_string(),
            identity: Some((issued.cert_pem.clone(), key.serialize_pem())),
        };
        c.save(&d).unwrap();
        let mode = std::fs::metadata(d.join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Credentials::load(&d).unwrap();
        assert_eq!(back.fingerprint().unwrap(), Some(issued.fingerprint));
        std::fs::write(d.join(CERT_FILE), "garbage").unwrap();
        assert!(Credentials::load(&d).is_err());
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    /// Every credential type of this crate, formatted with `{:?}` (and `{}` where it has
    /// one), carries no private key and no token secret.
    #[test]
    fn no_credential_type_prints_a_secret() {
        let ca = crate::Ca::generate("test ca").unwrap();
        let key = crate::ca::new_key().unwrap();
        let key_pem = key.serialize_pem();
        let issued = ca
            .issue("agent", "n1", key.public_key_raw(), crate::now_ms() + 60_000, false)
            .unwrap();
        let c = Credentials {
            ca_pem: ca.cert_pem().to_string(),
            identity: Some((issued.cert_pem.clone(), key_pem.clone())),
        };
        let token = crate::JoinToken::generate(&issued.fingerprint);
        let secret_hex: String = token.secret.iter().map(|b| format!("{b:02x}")).collect();
        let ca_key = ca.key_pem();
        let texts = [format!("{c:?}"), format!("{issued:?}"), format!("{token:?}")];
        for t in &texts {
            assert!(!t.contains("PRIVATE KEY"), "{t}");
            assert!(!t.contains(key_pem.lines().nth(1).unwrap()), "{t}");
            assert!(!t.contains(ca_key.lines().nth(1).unwrap()), "{t}");
            assert!(!t.contains(&secret_hex), "{t}");
        }
    }

    #[test]
    fn a_key_file_others_can_read_is_refused_with_the_fix() {
        let ca = crate::Ca::generate("test ca").unwrap();
        let key = crate::ca::new_key().unwrap();
        let issued = ca
            .issue("agent", "n1", key.public_key_raw(), crate::now_ms() + 60_000, false)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let c = Credentials {
            ca_pem: ca.cert_pem().to_string(),
            identity: Some((issued.cert_pem.clone(), key.serialize_pem())),
        };
        c.save(dir.path()).unwrap();
        let k = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credentials::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("readable by group or others") && e.contains("chmod 600"),
            "{e}"
        );
        assert!(!e.contains("PRIVATE KEY"), "{e}");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Credentials::load(dir.path()).is_ok());
    }
}
