//! A TCP proxy in front of PostgreSQL that a test can take down and bring back,
//! to watch the server's health follow the database.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct PgProxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl PgProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (up, _) = watch::channel(true);
        let states = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut state = states.subscribe();
                if !*state.borrow() {
                    continue; // down: close at once
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|up| !up) => {}
                    }
                });
            }
        });
        Self { addr, up }
    }

    /// Takes the database "down" (cutting every connection) or back "up".
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let (head, rest) = url.split_once('@').expect("a postgres://user@host:port/db URL");
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        format!("{head}@{}{path}", self.addr)
    }
}

/// Host and port of a `postgres://user@host:port/db` URL.
pub fn pg_target(url: &str) -> SocketAddr {
    let rest = url.split_once('@').map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport.parse().expect("host:port of the PostgreSQL URL")
}
