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

/// A port nothing listens on now, for a server the benchmark starts: never
/// a fixed one, where a server left from an earlier run could answer.
#[allow(dead_code)] // not every benchmark starts a server process
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until `child`, listening at `addr`, answers health SERVING; panics
/// if it exits first (a port taken after all, a bad setting) or never does.
#[allow(dead_code)] // not every benchmark starts a server process
pub async fn wait_serving(addr: &str, child: &mut std::process::Child) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    for _ in 0..200 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the userdir server at {addr} exited before it served: {status}");
        }
        if let Ok(channel) = tonic::transport::Channel::from_shared(addr.to_owned())
            .expect("address")
            .connect()
            .await
            && HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().status == 1)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    panic!("the userdir server at {addr} did not serve within 20 s");
}
