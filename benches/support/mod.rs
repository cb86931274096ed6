//! What the benchmarks share: the operator key their servers are given and
//! channels that call with it.

/// The operator key this run's servers are configured with.
pub fn operator_key() -> &'static str {
    static KEY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| userdir_domain::apikey::NewApiKey::generate().expect("random").token());
    &KEY
}

/// `channel` calling with the operator key.
pub fn authed(channel: tonic::transport::Channel) -> userdir::client::AuthedChannel {
    userdir::client::authed(
        channel,
        userdir::client::BearerAuth::new(Some(operator_key())).expect("key"),
    )
}

/// A connection to `addr` (`http://host:port`) calling with the operator key.
#[allow(dead_code)] // not every benchmark connects this way
pub async fn connect(addr: &str) -> userdir::client::AuthedChannel {
    authed(
        tonic::transport::Channel::from_shared(addr.to_owned())
            .expect("address")
            .connect()
            .await
            .expect("connect"),
    )
}
