//! The hangar CA: one per installation, its key in a 0600 file, and the per-host leaf
//! certificates it signs when the proxy has to see inside TLS.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::error::{NetError, Result};

pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// One key for every leaf: signing is what costs, not the key.
    leaf_key: KeyPair,
    leaves: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads `dir/ca.pem` (certificate and key), creating it on first use. Creation is
    /// atomic (a hard link into place), so concurrent first users agree on one CA.
    pub fn load_or_create(dir: &Path) -> Result<Ca> {
        let path = dir.join("ca.pem");
        if !path.exists() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
            let tmp = dir.join(format!("ca.pem.{}.tmp", std::process::id()));
            let pem = generate()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            f.write_all(pem.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io("write", &tmp))?;
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("create", &path)(e)),
            }
            let _ = std::fs::remove_file(&tmp);
        }
        let pem = std::fs::read_to_string(&path).map_err(io("read", &path))?;
        Ca::from_pem(&pem).map_err(|reason| NetError::Ca { path, reason })
    }

    fn from_pem(pem: &str) -> std::result::Result<Ca, String> {
        let key_start = pem
            .find("-----BEGIN PRIVATE KEY-----")
            .ok_or("it holds no private key")?;
        let (cert_pem, key_pem) = pem.split_at(key_start);
        let key = KeyPair::from_pem(key_pem).map_err(|e| e.to_string())?;
        let cert_der: CertificateDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
                .map_err(|e| format!("bad certificate: {e}"))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| e.to_string())?;
        Ok(Ca {
            cert_pem: cert_pem.trim().to_string() + "\n",
            cert_der,
            issuer,
            leaf_key: KeyPair::generate().map_err(|e| e.to_string())?,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM: what sandboxes trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A TLS server configuration presenting a certificate for `host`, made once per host.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>> {
        if let Some(c) = self.leaves.lock().expect("leaf cache").get(host) {
            return Ok(c.clone());
        }
        let leaf_err = |reason: String| NetError::Leaf {
            host: host.to_string(),
            reason,
        };
        let mut params =
            CertificateParams::new(vec![host.to_string()]).map_err(|e| leaf_err(e.to_string()))?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| leaf_err(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.cert_der.clone()], key)
            .map_err(|e| leaf_err(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        self.leaves
            .lock()
            .expect("leaf cache")
            .insert(host.to_string(), config.clone());
        Ok(config)
    }
}

/// A new CA: certificate then key, PEM.
fn generate() -> Result<String> {
    let err = |e: rcgen::Error| NetError::Ca {
        path: PathBuf::from("(new)"),
        reason: e.to_string(),
    };
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    let tag: u32 = rand_tag();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("hangar egress proxy CA {tag:08x}"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(err)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// Tells one installation's CA from another's in a certificate viewer.
fn rand_tag() -> u32 {
    let mut b = [0u8; 4];
    // The CN tag needs no strength; the process id will do if urandom cannot be read.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        return std::process::id();
    }
    u32::from_le_bytes(b)
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> NetError + 'a {
    move |source| NetError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_ca_is_made_once_kept_private_and_signs_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ca::load_or_create(dir.path()).unwrap();
        let b = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem());
        let mode = std::fs::metadata(dir.path().join("ca.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!a.cert_pem().contains("PRIVATE KEY"));
        let first = a.server_config("api.test").unwrap();
        let again = a.server_config("api.test").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        a.server_config("203.0.113.10").unwrap();
    }

    #[test]
    fn a_ca_file_without_a_key_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        let err = Ca::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ca.pem: it holds no private key"), "{err}");
    }
}
