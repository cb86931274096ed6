//! What a client of userdir sends with each call: the API key, as
//! `authorization: Bearer udk_...`. The CLI, the tests and the benchmarks
//! all call through this.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds the bearer credential to every call (none: calls go without, as a
/// health check may).
#[derive(Clone, Default)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerAuth(***)"
        } else {
            "BearerAuth(none)"
        })
    }
}

impl BearerAuth {
    /// The credential `key` (`udk_...`); an error, naming no part of the
    /// key, when it cannot be a header value.
    pub fn new(key: Option<&str>) -> Result<Self, String> {
        key.map(|key| {
            let mut value: MetadataValue<Ascii> = format!("Bearer {}", key.trim())
                .parse()
                .map_err(|_| "the API key holds characters a header cannot carry: is it a udk_... key?".to_owned())?;
            value.set_sensitive(true);
            Ok(value)
        })
        .transpose()
        .map(Self)
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry the credential.
pub type AuthedChannel = InterceptedService<Channel, BearerAuth>;

/// `channel` with `auth` on every call.
pub fn authed(channel: Channel, auth: BearerAuth) -> AuthedChannel {
    InterceptedService::new(channel, auth)
}
