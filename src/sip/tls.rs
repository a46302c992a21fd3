//! SIP over TLS: the certificate and key files of `sip.tls_cert` and `sip.tls_key`, read and
//! checked at start, and the process-wide rustls crypto provider.
//!
//! rsipstack 0.7.14 reads PKCS#8 and PKCS#1 (RSA) keys only, and logs a failure to build its
//! acceptor instead of failing, so everything it would refuse is refused here first, with the
//! config key named. The key's content never appears in an error or a log line.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::sign::CertifiedKey;

use crate::config::{ConfigError, SipConfig};

impl TlsFiles {
    /// The certificate and key `[sip]` names, read and checked; `None` when TLS is off.
    pub fn from_config(cfg: &SipConfig) -> Result<Option<Self>, ConfigError> {
        let Some((cert, key)) = cfg.tls_paths()? else {
            return Ok(None);
        };
        Self::load(cert, key)
            .map(Some)
            .map_err(|e| ConfigError::Parse(e.to_string()))
    }
}

/// A certificate chain and its private key, both PEM, checked to belong together.
#[derive(Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first, as read from `sip.tls_cert`.
    pub cert_pem: Vec<u8>,
    /// The private key as read from `sip.tls_key`.
    pub key_pem: Vec<u8>,
    /// How many certificates the chain holds.
    pub chain_len: usize,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("chain_len", &self.chain_len)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// Why the TLS files cannot be used, naming the config key at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid config: {key} = {path:?}: {reason}")]
pub struct TlsFileError {
    /// `sip.tls_cert` or `sip.tls_key`.
    pub key: &'static str,
    /// The path as configured.
    pub path: PathBuf,
    /// What is wrong (never the key material).
    pub reason: String,
}

impl TlsFiles {
    /// Reads both files and checks that the certificate parses, the key is a PKCS#8 or
    /// PKCS#1 PEM key rustls can sign with, and the key matches the certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsFileError> {
        let cert_err = |reason: String| TlsFileError {
            key: "sip.tls_cert",
            path: cert.to_path_buf(),
            reason,
        };
        let key_err = |reason: String| TlsFileError {
            key: "sip.tls_key",
            path: key.to_path_buf(),
            reason,
        };
        let cert_pem =
            std::fs::read(cert).map_err(|e| cert_err(format!("cannot read the file: {e}")))?;
        let key_pem =
            std::fs::read(key).map_err(|e| key_err(format!("cannot read the file: {e}")))?;

        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| cert_err(format!("not a PEM certificate: {e}")))?;
        if chain.is_empty() {
            return Err(cert_err(
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        let private = parse_key(&key_pem).map_err(key_err)?;
        let provider = rustls::crypto::ring::default_provider();
        CertifiedKey::from_der(chain.clone(), private, &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                key_err("does not belong to the certificate in sip.tls_cert".into())
            }
            _ => key_err("not a private key rustls can sign with".into()),
        })?;
        Ok(Self {
            cert_pem,
            key_pem,
            chain_len: chain.len(),
        })
    }
}

/// The first PKCS#8 or PKCS#1 key in `pem`, as rsipstack will look for it. Parse errors are
/// described without quoting the file.
fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    const UNREADABLE: &str = "not a readable PEM private key";
    let pkcs8 = PrivatePkcs8KeyDer::pem_slice_iter(pem)
        .next()
        .transpose()
        .map_err(|_| UNREADABLE.to_string())?;
    if let Some(k) = pkcs8 {
        return Ok(PrivateKeyDer::Pkcs8(k));
    }
    let pkcs1 = PrivatePkcs1KeyDer::pem_slice_iter(pem)
        .next()
        .transpose()
        .map_err(|_| UNREADABLE.to_string())?;
    if let Some(k) = pkcs1 {
        return Ok(PrivateKeyDer::Pkcs1(k));
    }
    let sec1 = PrivateSec1KeyDer::pem_slice_iter(pem)
        .next()
        .transpose()
        .map_err(|_| UNREADABLE.to_string())?;
    if sec1.is_some() {
        return Err(
            "an EC PRIVATE KEY (SEC1) is not supported: convert it to PKCS#8 with \
             `openssl pkcs8 -topk8 -nocrypt`"
                .into(),
        );
    }
    Err(
        "holds no PEM private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)"
            .into(),
    )
}

/// Makes ring rustls's process-wide provider, as rsipstack's TLS expects. Another provider
/// already installed is kept: harmless, since every provider rustls ships can serve TLS.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    fn self_signed() -> (String, String) {
        let k = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (k.cert.pem(), k.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_and_never_shows_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let c = write(dir.path(), "c.pem", cert.as_bytes());
        let k = write(dir.path(), "k.pem", key.as_bytes());
        let files = TlsFiles::load(&c, &k).unwrap();
        assert_eq!(files.chain_len, 1);
        assert_eq!(files.key_pem, key.as_bytes());
        let shown = format!("{files:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }

    #[test]
    fn each_fault_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let c = write(dir.path(), "c.pem", cert.as_bytes());
        let k = write(dir.path(), "k.pem", key.as_bytes());
        let missing = dir.path().join("nope.pem");
        let garbage = write(dir.path(), "g.pem", b"hello\n");
        let broken = write(
            dir.path(),
            "b.pem",
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let other = write(dir.path(), "o.pem", other_key.as_bytes());
        let sec1 = write(
            dir.path(),
            "s.pem",
            b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        );
        let cases: [(&Path, &Path, &str, &str); 7] = [
            (&missing, &k, "sip.tls_cert", "cannot read"),
            (&c, &missing, "sip.tls_key", "cannot read"),
            (&garbage, &k, "sip.tls_cert", "no PEM certificate"),
            (&broken, &k, "sip.tls_cert", "not a PEM certificate"),
            (&c, &garbage, "sip.tls_key", "no PEM private key"),
            (&c, &other, "sip.tls_key", "does not belong"),
            (&c, &sec1, "sip.tls_key", "SEC1"),
        ];
        for (cert, key_path, name, reason) in cases {
            let e = TlsFiles::load(cert, key_path).unwrap_err();
            let text = e.to_string();
            assert_eq!(e.key, name, "{text}");
            assert!(text.contains(name) && text.contains(reason), "{text}");
            assert!(!text.contains(&other_key) && !text.contains(&key), "{text}");
        }
    }

    #[test]
    fn a_certificate_file_with_the_key_in_it_is_fine() {
        // One file holding both, as some tools write it.
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let both = write(dir.path(), "both.pem", format!("{cert}{key}").as_bytes());
        let files = TlsFiles::load(&both, &both).unwrap();
        assert_eq!(files.chain_len, 1);
    }
}
