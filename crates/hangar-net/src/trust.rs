//! The CAs an administrator trusts besides the image's roots (a TLS-inspecting egress's, a
//! private registry's): by default the host's locally added ones, else the files
//! `hangar serve --trust-ca` names. Each is kept as its PEM text (sandboxes get it in
//! their trust stores) after it decodes as a certificate.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::error::{NetError, Result};

/// Where hosts keep the CAs their administrator added: Debian's, Ubuntu's and Alpine's
/// `update-ca-certificates`, and Fedora's and RHEL's `update-ca-trust`.
const HOST_CA_DIRS: [&str; 2] = [
    "/usr/local/share/ca-certificates",
    "/etc/pki/ca-trust/source/anchors",
];

/// The host's locally added CAs; a file there without a certificate is skipped, as the
/// host's own tools skip it.
pub fn host_cas() -> Vec<String> {
    let mut files = Vec::new();
    for dir in HOST_CA_DIRS {
        collect_files(Path::new(dir), &mut files);
    }
    files.sort();
    let mut pems = Vec::new();
    for f in files {
        match read_ca_file(&f) {
            Ok(found) => pems.extend(found),
            Err(e) => tracing::warn!("{e}"),
        }
    }
    pems
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "crt" || x == "pem") {
            out.push(path);
        }
    }
}

/// The CA certificates of the files an administrator named.
pub fn read_cas(files: &[PathBuf]) -> Result<Vec<String>> {
    let mut pems = Vec::new();
    for f in files {
        pems.extend(read_ca_file(f)?);
    }
    Ok(pems)
}

/// Each PEM certificate in `path`; a file without one, or with one that does not
/// decode, is an error naming it.
fn read_ca_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| NetError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let pems = pem_certificates(&text);
    if pems.is_empty() {
        return Err(NetError::NoCertificate {
            path: path.to_path_buf(),
            reason: "it holds no PEM certificate".into(),
        });
    }
    for pem in &pems {
        CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| NetError::NoCertificate {
            path: path.to_path_buf(),
            reason: format!("a certificate does not decode: {e}"),
        })?;
    }
    Ok(pems)
}

/// The `CERTIFICATE` blocks of a PEM text, each ending in a newline.
fn pem_certificates(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec!["ca.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem()
    }

    fn check(text: &str, expected: usize) {
        let found = pem_certificates(text);
        assert_eq!(found.len(), expected, "{text}");
        assert!(found
            .iter()
            .all(|p| p.starts_with("-----BEGIN") && p.ends_with("-----\n")));
    }

    #[test]
    fn certificates_are_read_from_pem_text() {
        let c = cert();
        check(&c, 1);
        check(&format!("# a comment\n{c}\n\n{c}\n"), 2);
        check(
            "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n",
            0,
        );
        check("-----BEGIN CERTIFICATE-----\ncut short", 0);
    }

    #[test]
    fn a_named_file_without_a_certificate_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.crt");
        std::fs::write(&good, cert()).unwrap();
        assert_eq!(read_cas(std::slice::from_ref(&good)).unwrap().len(), 1);
        let check_err = |name: &str, text: &str, reason: &str| {
            let bad = dir.path().join(name);
            std::fs::write(&bad, text).unwrap();
            let e = read_cas(&[good.clone(), bad.clone()])
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!(
                    "failed to read CA certificates from {}: {reason}",
                    bad.display()
                )),
                "{e}"
            );
        };
        check_err(
            "none.crt",
            "not a certificate",
            "it holds no PEM certificate",
        );
        check_err(
            "broken.crt",
            "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
            "a certificate does not decode",
        );
        let missing = dir.path().join("missing.crt");
        let e = read_cas(std::slice::from_ref(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("failed to read {}", missing.display())),
            "{e}"
        );
    }
}
