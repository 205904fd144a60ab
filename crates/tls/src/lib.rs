//! rustls configuration builders shared by mailstorm's sink and blaster:
//! server configs for STARTTLS and implicit-TLS listeners (from PEM files or
//! a generated self-signed certificate) and client configs (trusting given
//! certificates, or skipping verification for tests against self-signed
//! servers). The connection-level I/O stays with each binary.
//!
//! Every config is built with an explicit [`rustls::crypto::ring::default_provider`],
//! so no process-wide default provider has to be installed.

#![deny(missing_docs)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// Where PEM material came from, for error messages: a file, or bytes handed
/// over in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file on disk.
    File(PathBuf),
    /// In-memory PEM (e.g. [`server_config_from_pem`]); the text says which part.
    Memory(&'static str),
}

impl fmt::Display for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File(p) => write!(f, "{}", p.display()),
            PemSource::Memory(what) => write!(f, "<in-memory {what}>"),
        }
    }
}

/// Why TLS material could not be loaded, generated or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read (missing, unreadable...).
    #[error("cannot read TLS file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM text itself is broken (bad base64, unterminated section...).
    #[error("{source_name}: invalid PEM: {detail}")]
    BadPem {
        /// Where the PEM came from.
        source_name: PemSource,
        /// What the PEM parser said.
        detail: String,
    },
    /// No `CERTIFICATE` section was found.
    #[error("{source_name}: no certificate found (expected a PEM \"BEGIN CERTIFICATE\" section)")]
    NoCertificate {
        /// Where the PEM came from.
        source_name: PemSource,
    },
    /// No private key section (PKCS#8, PKCS#1 or SEC1) was found.
    #[error("{source_name}: no private key found (expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" section)")]
    NoKey {
        /// Where the PEM came from.
        source_name: PemSource,
    },
    /// The key was found but rustls/ring cannot use it.
    #[error("{source_name}: unusable private key: {detail}")]
    BadKey {
        /// Where the key came from.
        source_name: PemSource,
        /// What rustls said.
        detail: String,
    },
    /// The private key does not belong to the (first) certificate.
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch {
        /// Where the certificate came from.
        cert: PemSource,
        /// Where the key came from.
        key: PemSource,
    },
    /// Only a key was given; a certificate is required with it.
    #[error("TLS key {key} given without a certificate: give both, or neither for a self-signed certificate")]
    KeyWithoutCert {
        /// The key file.
        key: PathBuf,
    },
    /// A certificate could not be added to a client's trust store.
    #[error("{source_name}: certificate cannot be trusted as a root: {detail}")]
    BadRoot {
        /// Where the certificate came from.
        source_name: PemSource,
        /// What rustls/webpki said.
        detail: String,
    },
    /// rcgen failed to generate the self-signed certificate.
    #[error("cannot generate a self-signed certificate for {hostname:?}: {source}")]
    Generate {
        /// The host name it was generated for.
        hostname: String,
        /// The rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// Any other rustls configuration error.
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A freshly generated self-signed certificate and its private key, both PEM.
///
/// Hand `cert_pem` to [`client_config_trusting`] to make a client that trusts
/// the sink.
#[derive(Clone)]
pub struct SelfSigned {
    /// The certificate, PEM (`BEGIN CERTIFICATE`).
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8, `BEGIN PRIVATE KEY`).
    pub key_pem: String,
}

impl fmt::Debug for SelfSigned {
    // Keep private keys out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A server config together with the self-signed material it was built from,
/// when it was generated rather than loaded.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The config to hand to `tokio_rustls::TlsAcceptor`.
    pub config: Arc<ServerConfig>,
    /// `Some` when no files were given and a certificate was generated.
    pub generated: Option<SelfSigned>,
}

/// The crypto provider used everywhere in mailstorm.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the sink's server config: loads `cert` (PEM chain, leaf first) and
/// `key` (PEM private key), or generates a self-signed certificate for
/// `hostname`, `localhost`, `127.0.0.1` and `::1` when both are `None`.
///
/// When only `cert` is given, the key is looked for in the same file
/// (a combined PEM, as many tools write).
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    hostname: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    load_server_config(cert, key, hostname).map(|t| t.config)
}

/// Like [`server_config`], but also returns the generated certificate (if
/// any), so an embedding test can trust it or the sink can log it.
pub fn load_server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    hostname: &str,
) -> Result<ServerTls, TlsError> {
    match (cert, key) {
        (None, None) => {
            let generated = generate_self_signed(hostname)?;
            let config = build_server_config(
                generated.cert_pem.as_bytes(),
                PemSource::Memory("generated certificate"),
                generated.key_pem.as_bytes(),
                PemSource::Memory("generated key"),
            )?;
            Ok(ServerTls {
                config,
                generated: Some(generated),
            })
        }
        (None, Some(key)) => Err(TlsError::KeyWithoutCert {
            key: key.to_path_buf(),
        }),
        (Some(cert), key) => {
            let cert_pem = read_file(cert)?;
            // Only read the key file separately when it is a different file.
            let key_pem;
            let key_path = key.unwrap_or(cert);
            let key_bytes = if key_path == cert {
                &cert_pem
            } else {
                key_pem = read_file(key_path)?;
                &key_pem
            };
            let config = build_server_config(
                &cert_pem,
                PemSource::File(cert.to_path_buf()),
                key_bytes,
                PemSource::File(key_path.to_path_buf()),
            )?;
            Ok(ServerTls {
                config,
                generated: None,
            })
        }
    }
}

/// Builds a server config from in-memory PEM (certificate chain and key).
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    build_server_config(
        cert_pem,
        PemSource::Memory("certificate"),
        key_pem,
        PemSource::Memory("key"),
    )
}

/// Generates a self-signed certificate (ECDSA P-256) valid for `hostname`,
/// `localhost`, `127.0.0.1` and `::1`.
pub fn generate_self_signed(hostname: &str) -> Result<SelfSigned, TlsError> {
    let gen_err = |source| TlsError::Generate {
        hostname: hostname.to_owned(),
        source,
    };
    let mut names = Vec::with_capacity(4);
    for name in [hostname, "localhost", "127.0.0.1", "::1"] {
        if !name.is_empty() && !names.iter().any(|n: &String| n.eq_ignore_ascii_case(name)) {
            names.push(name.to_owned());
        }
    }
    let mut params = rcgen::CertificateParams::new(names).map_err(gen_err)?;
    let cn = if hostname.is_empty() {
        "localhost"
    } else {
        hostname
    };
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    dn.push(
        rcgen::DnType::OrganizationName,
        "mailstorm-sink (self-signed)",
    );
    params.distinguished_name = dn;
    let key = rcgen::KeyPair::generate().map_err(gen_err)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A client config that accepts **any** server certificate (expired,
/// self-signed, wrong name...).
///
/// For tests and the load generator's `--insecure` only: it gives no
/// protection against an active attacker. Handshake signatures are still
/// checked against the presented certificate, so the TLS handshake itself is
/// complete and realistic in cost.
pub fn insecure_client_config() -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(AcceptAnyServerCert {
        provider: provider.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // The ring provider always supports TLS 1.2 and 1.3; failing here is a build bug.
        .expect("ring provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

/// A client config that trusts exactly the certificates in `cert_pem` (e.g.
/// [`SelfSigned::cert_pem`]) as roots, with normal webpki verification
/// (including the server name).
pub fn client_config_trusting(cert_pem: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let source = PemSource::Memory("trusted certificate");
    let certs = parse_certs(cert_pem, &source)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::BadRoot {
            source_name: source.clone(),
            detail: e.to_string(),
        })?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    mailstorm_config::read_bounded(path, mailstorm_config::MAX_CONFIG_FILE_BYTES).map_err(
        |source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        },
    )
}

fn pem_error(source: &PemSource, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::BadPem {
        source_name: source.clone(),
        detail: e.to_string(),
    }
}

fn parse_certs(pem: &[u8], source: &PemSource) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(source, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            source_name: source.clone(),
        });
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], source: &PemSource) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            source_name: source.clone(),
        },
        other => pem_error(source, other),
    })
}

fn build_server_config(
    cert_pem: &[u8],
    cert_source: PemSource,
    key_pem: &[u8],
    key_source: PemSource,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = parse_certs(cert_pem, &cert_source)?;
    let key = parse_key(key_pem, &key_source)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth();
    // with_single_cert parses the key and checks it against the leaf's public key.
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert_source,
            key: key_source.clone(),
        },
        rustls::Error::General(detail) => TlsError::BadKey {
            source_name: key_source,
            detail,
        },
        other => TlsError::Rustls(other),
    })?;
    // Stateless session tickets (keys rotated by rustls): any shard can
    // resume any session without a shared, locked cache, and a resumed
    // handshake skips the certificate and its signature.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}

/// Certificate verifier behind [`insecure_client_config`].
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests;
