//! The installation's key: an age x25519 identity in a file only root can read. It
//! encrypts secret values at rest and derives the keyed hashes (cache keys) and
//! placeholders, so neither says anything about a value without the key file.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{io_err, Result, Secret, SecretError};

/// The key that protects one installation's secrets.
pub struct Keyring {
    identity: age::x25519::Identity,
    /// Derived from the identity: keys the hashes and placeholders.
    mac_key: Zeroizing<Vec<u8>>,
    path: PathBuf,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({})", self.path.display())
    }
}

impl Keyring {
    /// Opens the key file, creating it (mode 0600) when it does not exist. A key file that
    /// group or others can read is refused.
    pub fn open(path: &Path) -> Result<Keyring> {
        let key_err = |reason: String| SecretError::Key {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut f) => {
                let identity = age::x25519::Identity::generate();
                let text = Zeroizing::new(format!("{}\n", expose(&identity).as_str()));
                f.write_all(text.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io_err("write", path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", path)(e)),
        }
        let meta = std::fs::metadata(path).map_err(io_err("read", path))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_err(format!(
                "group or others can read it (mode {mode:o}); `chmod 600` it"
            )));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io_err("read", path))?);
        let identity: age::x25519::Identity = text
            .trim()
            .parse()
            .map_err(|e: &str| key_err(format!("it holds no age identity ({e})")))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(expose(&identity).as_bytes())
            .expect("HMAC takes any key");
        mac.update(b"hangar: keyed hashes and placeholders, v1");
        Ok(Keyring {
            mac_key: Zeroizing::new(mac.finalize().into_bytes().to_vec()),
            identity,
            path: path.to_path_buf(),
        })
    }

    /// Encrypts a value to this installation's key.
    pub fn encrypt(&self, name: &str, value: &Secret) -> Result<Vec<u8>> {
        age::encrypt(&self.identity.to_public(), value.expose()).map_err(|e| SecretError::Encrypt {
            name: name.to_string(),
            reason: e.to_string(),
        })
    }

    /// Decrypts what [`Keyring::encrypt`] made.
    pub fn decrypt(&self, name: &str, ciphertext: &[u8]) -> Result<Secret> {
        let plain = age::decrypt(&self.identity, ciphertext).map_err(|e| SecretError::Decrypt {
            name: name.to_string(),
            reason: format!("{e} (was it set with another key file?)"),
        })?;
        Ok(Secret(Zeroizing::new(plain)))
    }

    /// A keyed hash of a named value: equal on this installation for equal values, and
    /// meaningless without the key file.
    pub fn hash(&self, name: &str, value: &Secret) -> String {
        self.mac(b"hash", name, value)
    }

    /// The stand-in a sandbox sees instead of a projected secret (and that a scrubbed file
    /// holds): stable for a value, revealing nothing of it.
    pub fn placeholder(&self, name: &str, value: &Secret) -> String {
        format!(
            "hangar-placeholder-{}",
            &self.mac(b"placeholder", name, value)[..32]
        )
    }

    fn mac(&self, purpose: &[u8], name: &str, value: &Secret) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.mac_key).expect("HMAC takes any key");
        for part in [purpose, name.as_bytes(), value.expose()] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

fn expose(identity: &age::x25519::Identity) -> Zeroizing<String> {
    use age::secrecy::ExposeSecret;
    Zeroizing::new(identity.to_string().expose_secret().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(v: &str) -> Secret {
        Secret::new(v.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secret.key");
        let k1 = Keyring::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = k1.encrypt("T", &secret("value-1")).unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"value-1"));
        let k2 = Keyring::open(&path).unwrap();
        assert_eq!(k2.decrypt("T", &sealed).unwrap(), secret("value-1"));
        assert_eq!(k1.hash("T", &secret("v1v1")), k2.hash("T", &secret("v1v1")));
        assert_eq!(
            k1.placeholder("T", &secret("v1v1")),
            k2.placeholder("T", &secret("v1v1"))
        );

        let other = Keyring::open(&dir.path().join("other.key")).unwrap();
        assert_ne!(
            other.hash("T", &secret("v1v1")),
            k1.hash("T", &secret("v1v1"))
        );
        let err = other.decrypt("T", &sealed).unwrap_err().to_string();
        assert!(err.starts_with("failed to decrypt secret `T`: "), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Keyring::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("group or others can read it (mode 644)"),
            "{err}"
        );
        std::fs::write(dir.path().join("bad.key"), "nope").unwrap();
        std::fs::set_permissions(
            dir.path().join("bad.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let err = Keyring::open(&dir.path().join("bad.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no age identity"), "{err}");
    }

    #[test]
    fn hashes_and_placeholders_differ_by_name_value_and_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let k = Keyring::open(&dir.path().join("k")).unwrap();
        let h = k.hash("T", &secret("value"));
        assert_ne!(h, k.hash("U", &secret("value")));
        assert_ne!(h, k.hash("T", &secret("value2")));
        let p = k.placeholder("T", &secret("value"));
        assert!(
            p.starts_with("hangar-placeholder-") && p.len() == 19 + 32,
            "{p}"
        );
        assert!(!h.starts_with(&p[19..]));
    }
}
