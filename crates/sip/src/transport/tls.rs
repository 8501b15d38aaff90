//! TLS settings for SIP over TLS (RFC 3261 §26.2), certificates from PEM.

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The PEM held no certificate.
    #[error("no certificate in pem")]
    NoCertificate,
    /// The PEM held no private key.
    #[error("no private key in pem")]
    NoKey,
    /// The PEM was malformed.
    #[error("bad pem: {0}")]
    Pem(std::io::Error),
    /// rustls refused the certificate, key or roots.
    #[error("tls config: {0}")]
    Rustls(#[from] rustls::Error),
    /// A server name that is neither a DNS name nor an IP address.
    #[error("invalid tls server name {0}")]
    ServerName(String),
}

/// Certificates for TLS listeners (`server`) and outgoing TLS connections (`client`).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Server side: our certificate chain and key. Needed to listen on TLS.
    pub server: Option<Arc<rustls::ServerConfig>>,
    /// Client side: the roots we trust. Needed to connect over TLS.
    pub client: Option<Arc<rustls::ClientConfig>>,
}

impl TlsSettings {
    /// Builds settings from PEM text: a certificate chain and key for the server side, and
    /// optionally CA certificates to trust as a client.
    pub fn from_pem(cert_chain: &[u8], key: &[u8], ca: Option<&[u8]>) -> Result<Self, TlsError> {
        let certs = read_certs(cert_chain)?;
        let key = rustls_pemfile::private_key(&mut BufReader::new(key))
            .map_err(TlsError::Pem)?
            .ok_or(TlsError::NoKey)?;
        let server = server_config(certs, key)?;
        let client = ca.map(client_config).transpose()?;
        Ok(Self {
            server: Some(Arc::new(server)),
            client: client.map(Arc::new),
        })
    }

    /// Like [`TlsSettings::from_pem`], reading the PEM files at the given paths.
    pub fn from_pem_files(
        cert_chain: &Path,
        key: &Path,
        ca: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let ca = ca.map(read).transpose()?;
        Self::from_pem(&read(cert_chain)?, &read(key)?, ca.as_deref())
    }

    /// Client-only settings trusting the CA certificates in `ca` (PEM).
    pub fn client_from_pem(ca: &[u8]) -> Result<Self, TlsError> {
        Ok(Self {
            server: None,
            client: Some(Arc::new(client_config(ca)?)),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Explicit provider: the workspace links both ring and aws-lc-rs, which makes rustls'
    // process-wide default ambiguous.
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, TlsError> {
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
}

fn client_config(ca: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots.add(cert)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The name to verify: the configured one, else the peer's IP address.
pub(super) fn server_name(
    name: Option<&str>,
    addr: SocketAddr,
) -> Result<ServerName<'static>, TlsError> {
    match name {
        Some(n) => ServerName::try_from(n.to_owned()).map_err(|_| TlsError::ServerName(cut(n))),
        None => Ok(ServerName::IpAddress(addr.ip().into())),
    }
}

fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}
