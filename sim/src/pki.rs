//! TLS for the simulated partners: a throwaway certificate authority generated when the
//! fleet starts, the server certificates it signs for a replica (good, expired, for another
//! name), client certificates for mutual TLS, and the rustls server configurations the
//! replicas serve with. Nothing here is meant to protect anything: it exists so the gateway
//! is tested against real TLS on loopback, the way it meets real partners.

use std::fmt;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::SimError;

/// The names every simulated server certificate is valid for: loopback, spelled every way
/// a test or the demo reaches a replica.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A certificate and its private key, PEM-encoded. `Debug` shows the certificate only.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Which server certificate a replica presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// Valid now, for [`LOOPBACK_NAMES`].
    Good,
    /// Expired yesterday.
    Expired,
    /// Valid now, but for these names only.
    Names(Vec<String>),
}

/// How a replica negotiates HTTP over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alpn {
    /// `h2` and `http/1.1`: HTTP/2 for clients that offer it.
    #[default]
    Both,
    /// `http/1.1` only.
    Http1,
}

fn failed(what: &str, e: impl fmt::Display) -> SimError {
    SimError::Tls(format!("{what}: {e}"))
}

/// A certificate authority of the simulation.
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// Now, moved by `n` days.
fn days(n: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(n)
}

impl Pki {
    /// A new CA named `name`, valid from yesterday for a year.
    pub fn generate(name: &str) -> Result<Self, SimError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA parameters", e))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = days(-1);
        params.not_after = days(365);
        let key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| failed("CA certificate", e))?;
        Ok(Self {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM: what a client trusts (a connector's `tls.ca`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn sign(
        &self,
        names: Vec<String>,
        purpose: ExtendedKeyUsagePurpose,
        expired: bool,
    ) -> Result<Identity, SimError> {
        let common = names.first().cloned().unwrap_or_else(|| "client".into());
        let mut params =
            CertificateParams::new(names).map_err(|e| failed("certificate parameters", e))?;
        params.distinguished_name.push(DnType::CommonName, common);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        if expired {
            params.not_before = days(-30);
            params.not_after = days(-1);
        } else {
            params.not_before = days(-1);
            params.not_after = days(90);
        }
        let key = KeyPair::generate().map_err(|e| failed("key", e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| failed("certificate", e))?;
        Ok(Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A server certificate signed by this CA.
    pub fn server(&self, leaf: &Leaf) -> Result<Identity, SimError> {
        let loopback = || LOOPBACK_NAMES.iter().map(|n| (*n).to_owned()).collect();
        match leaf {
            Leaf::Good => self.sign(loopback(), ExtendedKeyUsagePurpose::ServerAuth, false),
            Leaf::Expired => self.sign(loopback(), ExtendedKeyUsagePurpose::ServerAuth, true),
            Leaf::Names(names) => {
                self.sign(names.clone(), ExtendedKeyUsagePurpose::ServerAuth, false)
            }
        }
    }

    /// A client certificate (for mutual TLS) signed by this CA.
    pub fn client(&self, name: &str) -> Result<Identity, SimError> {
        self.sign(
            vec![name.to_owned()],
            ExtendedKeyUsagePurpose::ClientAuth,
            false,
        )
    }

    /// A server configuration presenting `leaf`; with `clients`, a client certificate
    /// signed by that CA is required.
    pub fn server_config(
        &self,
        leaf: &Leaf,
        clients: Option<&Pki>,
        alpn: Alpn,
    ) -> Result<Arc<ServerConfig>, SimError> {
        let identity = self.server(leaf)?;
        server_config(&identity, clients.map(Pki::ca_pem), alpn)
    }
}

fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, SimError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed("certificate PEM", e))
}

/// A server configuration presenting `identity`; with `client_ca` (PEM), a client
/// certificate signed by it is required.
pub fn server_config(
    identity: &Identity,
    client_ca: Option<&str>,
    alpn: Alpn,
) -> Result<Arc<ServerConfig>, SimError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| failed("protocol versions", e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(pem)? {
                roots.add(cert).map_err(|e| failed("client CA", e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| failed("client verifier", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| failed("key PEM", e))?;
    let mut config = builder
        .with_single_cert(certificates(&identity.cert_pem)?, key)
        .map_err(|e| failed("server certificate", e))?;
    config.alpn_protocols = match alpn {
        Alpn::Both => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}
