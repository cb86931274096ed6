//! Who a client certificate says the caller is (mTLS): the leaf
//! certificate's subject and subject alternative names, put into every
//! request's extensions by [`PeerIdentityLayer`]. The RPC log line names the
//! subject; mapping an identity to a principal is the callers' issue.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

/// The identity in a verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject as x509-parser displays it (`CN=ops, O=Example`), for
    /// logs only: its values are not escaped, so never compare it.
    pub subject: String,
    /// The subject's attributes, each as (dotted OID, value), in the
    /// certificate's order (several per RDN flattened); `None` for a value
    /// that is not a string. What mappings compare.
    pub subject_attributes: Vec<(String, Option<String>)>,
    /// DNS names among the subject alternative names.
    pub dns_names: Vec<String>,
    /// URIs among them (a SPIFFE id, `spiffe://cluster/ns/x/sa/y`).
    pub uris: Vec<String>,
    /// Email addresses among them.
    pub emails: Vec<String>,
}

impl PeerIdentity {
    /// Reads a DER certificate; `None` when it does not parse (the TLS
    /// handshake verified it, so that does not happen in practice).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject_attributes = cert
            .subject()
            .iter()
            .flat_map(|rdn| rdn.iter())
            .map(|attr| (attr.attr_type().to_id_string(), attr.as_str().ok().map(str::to_owned)))
            .collect();
        let mut identity = Self {
            subject: cert.subject().to_string(),
            subject_attributes,
            dns_names: Vec::new(),
            uris: Vec::new(),
            emails: Vec::new(),
        };
        if let Ok(Some(sans)) = cert.subject_alternative_name() {
            for name in &sans.value.general_names {
                match name {
                    GeneralName::DNSName(n) => identity.dns_names.push((*n).to_owned()),
                    GeneralName::URI(u) => identity.uris.push((*u).to_owned()),
                    GeneralName::RFC822Name(e) => identity.emails.push((*e).to_owned()),
                    _ => {}
                }
            }
        }
        Some(identity)
    }

    /// The identity of the client certificate of a request's connection, if any.
    pub fn of<B>(request: &http::Request<B>) -> Option<Arc<Self>> {
        request.extensions().get::<Arc<Self>>().cloned()
    }
}

/// Tower layer: reads the connection's client certificate and puts its
/// [`PeerIdentity`] (as `Arc<PeerIdentity>`) into the request's extensions,
/// where handlers find it through `tonic::Request::extensions`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerIdentityLayer;

impl<S> Layer<S> for PeerIdentityLayer {
    type Service = PeerIdentityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerIdentityService { inner, last: None }
    }
}

#[derive(Clone, Debug)]
pub struct PeerIdentityService<S> {
    inner: S,
    /// The last certificate read and its identity: the calls of one
    /// connection present the same certificate, which is then parsed once,
    /// not on every call (a comparison of its bytes stays correct whatever
    /// connection the service serves).
    last: Option<(Vec<u8>, Arc<PeerIdentity>)>,
}

impl<S, B> Service<http::Request<B>> for PeerIdentityService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let chain = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        if let Some(leaf) = chain.as_deref().and_then(|c| c.first()) {
            let known = match &self.last {
                Some((der, identity)) if der.as_slice() == leaf.as_ref() => Some(Arc::clone(identity)),
                _ => None,
            };
            let identity = known.or_else(|| {
                let identity = Arc::new(PeerIdentity::from_der(leaf)?);
                self.last = Some((leaf.to_vec(), Arc::clone(&identity)));
                Some(identity)
            });
            if let Some(identity) = identity {
                request.extensions_mut().insert(identity);
            }
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::PeerIdentity;

    #[test]
    fn subject_and_alternative_names_of_a_client_certificate() {
        let mut params = CertificateParams::new(vec!["ops.example.com".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "ops");
        params.distinguished_name.push(DnType::OrganizationName, "Example");
        params.subject_alt_names.push(SanType::URI(
            "spiffe://example.org/ns/ops/sa/importer".try_into().unwrap(),
        ));
        params
            .subject_alt_names
            .push(SanType::Rfc822Name("ops@example.com".try_into().unwrap()));
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let identity = PeerIdentity::from_der(cert.der()).unwrap();
        assert!(identity.subject.contains("CN=ops"), "{}", identity.subject);
        assert!(identity.subject.contains("O=Example"), "{}", identity.subject);
        assert_eq!(
            identity.subject_attributes,
            [
                ("2.5.4.3".to_owned(), Some("ops".to_owned())),
                ("2.5.4.10".to_owned(), Some("Example".to_owned()))
            ]
        );
        assert_eq!(identity.dns_names, ["ops.example.com"]);
        assert_eq!(identity.uris, ["spiffe://example.org/ns/ops/sa/importer"]);
        assert_eq!(identity.emails, ["ops@example.com"]);
        assert_eq!(PeerIdentity::from_der(b"not a certificate"), None);
    }
}
