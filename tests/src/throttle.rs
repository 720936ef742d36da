//! A TCP relay in front of a registry that hands replies back slowly, so a
//! pull through it is still under way when a scenario wants it to be.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A relay on 127.0.0.1 to `upstream` (`HOST:PORT`); it stops with the
/// runtime it was started on.
pub struct SlowRelay {
    /// `127.0.0.1:PORT`, a registry host for image references.
    pub addr: String,
    /// Reply bytes relayed so far, over every connection.
    pub relayed: Arc<AtomicU64>,
    /// Reply bytes a second per connection; 0 for no limit.
    pub rate: Arc<AtomicU64>,
}

/// The slice of reply written at a time: small enough that a rate of a
/// few KiB/s is kept evenly.
const CHUNK: usize = 4096;

impl SlowRelay {
    pub async fn start(upstream: &str, bytes_per_second: u64) -> SlowRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let addr = listener.local_addr().expect("relay addr").to_string();
        let relayed = Arc::new(AtomicU64::new(0));
        let rate = Arc::new(AtomicU64::new(bytes_per_second));
        let upstream = upstream.to_string();
        let (relayed_all, rate_all) = (relayed.clone(), rate.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let (relayed, rate) = (relayed_all.clone(), rate_all.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, relayed, rate).await;
                    }
                });
            }
        });
        SlowRelay {
            addr,
            relayed,
            rate,
        }
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    relayed: Arc<AtomicU64>,
    rate: Arc<AtomicU64>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        relayed.fetch_add(n as u64, Ordering::Relaxed);
        let limit = rate.load(Ordering::Relaxed);
        if limit > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / limit as f64)).await;
        }
    }
    let _ = client_write.shutdown().await;
    requests.abort();
}
