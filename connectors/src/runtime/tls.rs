//! TLS to partners, with rustls (the stack pingora already brings; no OpenSSL).
//!
//! Trust is the platform's roots (read once, honouring `SSL_CERT_FILE` as
//! `rustls-native-certs` does) plus a connector's own `tls.ca`; a connector may present a
//! client certificate for mutual TLS and verify its endpoints against another name
//! (`tls.server_name`). TLS 1.2 is the minimum, HTTP/2 is offered by ALPN and HTTP/1.1
//! taken otherwise, and verification cannot be turned off: there is no setting for it.
//!
//! Key material arrives as [`Secret`]s resolved from references; the configuration built
//! from it is keyed by a digest, so every connector of a partner presenting the same
//! identity shares one pooled client, and a rotated secret builds a new one.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use sha2::{Digest, Sha256};

use super::secrets::Secret;
use crate::error::ConnectorError;
use crate::spec::Tls;

/// The platform's trusted roots, read once per process. A store that cannot be read
/// leaves only the connectors' own CAs trusted (every other https call then fails with an
/// unknown issuer, which says what is wrong).
fn platform_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        if let Ok(certs) = rustls_native_certs::load_native_certs() {
            roots.add_parsable_certificates(certs);
        }
        roots
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// A connector's TLS settings with their references resolved. `Debug` names no value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TlsMaterial {
    ca: Option<(String, Secret)>,
    client: Option<((String, Secret), (String, Secret))>,
    server_name: Option<String>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &self.ca.as_ref().map(|(r, _)| r))
            .field(
                "client_certificate",
                &self.client.as_ref().map(|(c, _)| &c.0),
            )
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsMaterial {
    /// Resolves `tls`'s references with `resolve` (the connector's own namespace rules).
    pub fn resolve(
        tls: &Tls,
        resolve: impl Fn(&str) -> Result<Secret, ConnectorError>,
    ) -> Result<Self, ConnectorError> {
        let get = |r: &Option<crate::spec::SecretRef>| -> Result<_, ConnectorError> {
            r.as_ref()
                .map(|r| Ok((r.0.clone(), resolve(&r.0)?)))
                .transpose()
        };
        let client = match (get(&tls.client_certificate)?, get(&tls.client_key)?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        };
        Ok(Self {
            ca: get(&tls.ca)?,
            client,
            server_name: tls.server_name.clone(),
        })
    }

    /// A digest of everything the configuration for `hosts` is built from (the pool key):
    /// with a `server_name`, the hosts it applies to are part of it, so a client never
    /// verifies hosts it was not built for against the override.
    pub fn digest(&self, hosts: &[String]) -> [u8; 32] {
        let mut hash = Sha256::new();
        let mut put = |tag: &[u8], value: &str| {
            hash.update(tag);
            hash.update((value.len() as u64).to_le_bytes());
            hash.update(value.as_bytes());
        };
        if let Some((_, ca)) = &self.ca {
            put(b"ca", ca.expose());
        }
        if let Some(((_, cert), (_, key))) = &self.client {
            put(b"cert", cert.expose());
            put(b"key", key.expose());
        }
        if let Some(name) = &self.server_name {
            put(b"name", name);
            let mut hosts = hosts.to_vec();
            hosts.sort_unstable();
            hosts.dedup();
            for host in &hosts {
                put(b"host", host);
            }
        }
        hash.finalize().into()
    }
}

/// A secret that should hold PEM and does not: the reference is named, never the value.
fn not_pem(reference: &str, what: &str) -> ConnectorError {
    ConnectorError::Secret {
        reference: reference.to_owned(),
        reason: format!("does not hold {what}"),
    }
}

fn certificates(
    reference: &str,
    pem: &Secret,
) -> Result<Vec<CertificateDer<'static>>, ConnectorError> {
    let certs = CertificateDer::pem_slice_iter(pem.expose().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| not_pem(reference, "PEM certificates"))?;
    if certs.is_empty() {
        return Err(not_pem(reference, "a PEM certificate"));
    }
    Ok(certs)
}

/// The client configuration for `material`; `hosts` are the endpoint hosts a
/// `server_name` override applies to (the token URL's host keeps its own name).
pub fn client_config(
    material: &TlsMaterial,
    hosts: &[String],
) -> Result<ClientConfig, ConnectorError> {
    let mut roots = platform_roots().clone();
    if let Some((reference, pem)) = &material.ca {
        for cert in certificates(reference, pem)? {
            roots
                .add(cert)
                .map_err(|_| not_pem(reference, "a usable CA certificate"))?;
        }
    }
    let roots = Arc::new(roots);
    let builder = ClientConfig::builder_with_provider(provider())
        // TLS 1.3 and 1.2: the floor the issue and every partner security review ask for.
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectorError::Request {
            reason: format!("TLS versions: {e}"),
        })?;
    let builder = match &material.server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let verifier = NameOverride::new(roots, hosts, name)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
    };
    let mut config = match &material.client {
        None => builder.with_no_client_auth(),
        Some(((cert_ref, cert), (key_ref, key))) => {
            let chain = certificates(cert_ref, cert)?;
            let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
                .map_err(|_| not_pem(key_ref, "a PEM private key"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|_| ConnectorError::Secret {
                    reference: key_ref.clone(),
                    reason: format!("is not the private key of `{cert_ref}`"),
                })?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The platform-roots configuration every connector without a `tls` block uses.
pub fn default_config() -> Result<ClientConfig, ConnectorError> {
    client_config(&TlsMaterial::default(), &[])
}

/// Verifies the certificates of `hosts` against `name` instead of the host itself, with
/// the full WebPKI verification otherwise (chain, expiry, signatures).
#[derive(Debug)]
struct NameOverride {
    inner: Arc<WebPkiServerVerifier>,
    hosts: Vec<ServerName<'static>>,
    name: ServerName<'static>,
}

impl NameOverride {
    fn new(
        roots: Arc<RootCertStore>,
        hosts: &[String],
        name: &str,
    ) -> Result<Self, ConnectorError> {
        let invalid = |what: &str| ConnectorError::Request {
            reason: format!("tls.server_name: `{what}` is not a DNS name"),
        };
        let name = ServerName::try_from(name.trim_end_matches('.').to_owned())
            .map_err(|_| invalid(name))?;
        let hosts = hosts
            .iter()
            .filter_map(|h| {
                ServerName::try_from(h.trim_start_matches('[').trim_end_matches(']').to_owned())
                    .ok()
            })
            .collect();
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| ConnectorError::Request {
                reason: format!("TLS verifier: {e}"),
            })?;
        Ok(Self { inner, hosts, name })
    }
}

impl ServerCertVerifier for NameOverride {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = if self.hosts.iter().any(|h| h == server_name) {
            &self.name
        } else {
            server_name
        };
        self.inner
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The rustls error somewhere in `error`'s chain. `io::Error` hides a wrapped error from
/// `source()` (it returns the inner error's source), and `h2::Error` has no `source()` at
/// all, so their inner errors are looked at too.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = at {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        let io = e
            .downcast_ref::<std::io::Error>()
            .or_else(|| e.downcast_ref::<h2::Error>().and_then(h2::Error::get_io));
        if let Some(inner) = io.and_then(std::io::Error::get_ref)
            && let Some(found) = rustls_error(inner)
        {
            return Some(found);
        }
        at = e.source();
    }
    None
}

/// The alert of a post-handshake TLS failure. In TLS 1.3 a server verifies the client's
/// certificate after the client has finished its handshake, so the refusal arrives on the
/// first read, where rustls reports it as an `io::Error` carrying only its text.
fn late_alert(error: &(dyn std::error::Error + 'static)) -> Option<AlertDescription> {
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = at {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::InvalidData
            && let Some(inner) = io.get_ref()
            && let Some(name) = inner.to_string().strip_prefix("received fatal alert: ")
        {
            return [
                AlertDescription::CertificateRequired,
                AlertDescription::BadCertificate,
                AlertDescription::UnknownCA,
                AlertDescription::CertificateUnknown,
                AlertDescription::CertificateExpired,
                AlertDescription::CertificateRevoked,
                AlertDescription::UnsupportedCertificate,
                AlertDescription::AccessDenied,
                AlertDescription::HandshakeFailure,
            ]
            .into_iter()
            .find(|a| format!("{a:?}") == name);
        }
        at = e.source();
    }
    None
}

/// A plain reason for a TLS failure in `error`'s chain, or `None` when it is not one.
pub fn failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let late;
    let e = match rustls_error(error) {
        Some(e) => e,
        None => {
            late = rustls::Error::AlertReceived(late_alert(error)?);
            &late
        }
    };
    Some(match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                "unknown issuer: the partner's certificate is not signed by a trusted CA".into()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "expired: the partner's certificate is past its validity".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not yet valid: the partner's certificate starts in the future".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "name mismatch: the partner's certificate is for another name".into()
            }
            CertificateError::Revoked => "revoked: the partner's certificate is revoked".into(),
            other => format!("invalid certificate: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => {
                "client certificate refused: the partner requires one".into()
            }
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied => {
                format!("client certificate refused: the partner answered {alert:?}")
            }
            other => format!("the partner ended the handshake: {other:?}"),
        },
        rustls::Error::NoApplicationProtocol => {
            "the partner offers neither HTTP/2 nor HTTP/1.1 by ALPN".into()
        }
        other => format!("handshake failed: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(server_name: Option<&str>) -> TlsMaterial {
        let tls = Tls {
            ca: Some(crate::spec::SecretRef("secret:ca".into())),
            server_name: server_name.map(str::to_owned),
            ..Tls::default()
        };
        TlsMaterial::resolve(&tls, |_| Ok(Secret::new("-----BEGIN CERTIFICATE-----")))
            .expect("material")
    }

    #[test]
    fn a_server_name_pool_is_keyed_by_its_hosts_too() {
        let hosts = |h: &[&str]| h.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let named = material(Some("api.partner.example"));
        assert_ne!(
            named.digest(&hosts(&["10.0.0.1"])),
            named.digest(&hosts(&["10.0.0.2"])),
            "another connector's hosts get another client"
        );
        assert_eq!(
            named.digest(&hosts(&["a", "b"])),
            named.digest(&hosts(&["b", "a", "a"])),
            "the order and repeats of hosts do not matter"
        );
        let plain = material(None);
        assert_eq!(
            plain.digest(&hosts(&["10.0.0.1"])),
            plain.digest(&hosts(&["10.0.0.2"])),
            "without server_name the hosts change nothing: one pool per identity"
        );
        assert!(
            !format!("{named:?}").contains("BEGIN"),
            "Debug names references only"
        );
    }
}
