//! A small HTTP/2 load generator for `bench/http2`: h2load does not go through a `CONNECT`
//! proxy, and the benchmark needs the same client against nginx directly and against remedy
//! through `HTTPS_PROXY`.
//!
//!     h2load URL --ca FILE [--connect HOST:PORT | --proxy HOST:PORT]
//!            [-c CONNECTIONS] [-m STREAMS] [-d SECONDS]
//!
//! Opens CONNECTIONS TLS connections that negotiate h2 (through the proxy's `CONNECT`, or to
//! `--connect`), keeps STREAMS GETs of URL in flight on each for SECONDS, reads every body, and
//! prints `requests N seconds S p99_us P non_200 M` on one line.

use std::io::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    url: http::Uri,
    ca: String,
    connect: Option<String>,
    proxy: Option<String>,
    connections: usize,
    streams: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        url: "https://localhost/".parse().unwrap(),
        ca: String::new(),
        connect: None,
        proxy: None,
        connections: 4,
        streams: 8,
        seconds: 10,
    };
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("a value after each option");
        match arg.as_str() {
            "--ca" => a.ca = value(),
            "--connect" => a.connect = Some(value()),
            "--proxy" => a.proxy = Some(value()),
            "-c" => a.connections = value().parse().expect("connections"),
            "-m" => a.streams = value().parse().expect("streams"),
            "-d" => a.seconds = value().parse().expect("seconds"),
            url => a.url = url.parse().expect("a URL"),
        }
    }
    a
}

/// A TCP connection to the origin: through the proxy's `CONNECT`, or straight to `--connect`.
async fn tcp(a: &Args, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let Some(proxy) = &a.proxy else {
        return TcpStream::connect(a.connect.as_deref().unwrap_or(host)).await;
    };
    let mut s = TcpStream::connect(proxy).await?;
    s.set_nodelay(true)?;
    s.write_all(
        format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await?);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(Error::other(String::from_utf8_lossy(&head).into_owned()));
    }
    Ok(s)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let a = Arc::new(args());
    let host = a.url.host().expect("a host").to_owned();
    let port = a.url.port_u16().unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&a.ca).expect("the CA file") {
        roots.add(cert.expect("a certificate")).expect("a CA");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));

    let requests = Arc::new(AtomicU64::new(0));
    let non_200 = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let until = started + Duration::from_secs(a.seconds);
    let mut calls = Vec::new();
    for _ in 0..a.connections {
        let s = tcp(&a, &host, port).await?;
        s.set_nodelay(true)?;
        let name = ServerName::try_from(host.clone()).expect("a server name");
        let s = connector.connect(name, s).await?;
        assert_eq!(
            s.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "h2 negotiated"
        );
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
                .await
                .map_err(Error::other)?;
        tokio::spawn(conn);
        for _ in 0..a.streams {
            let (mut sender, url) = (sender.clone(), a.url.clone());
            let (requests, non_200, latencies) =
                (requests.clone(), non_200.clone(), latencies.clone());
            calls.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let req = http::Request::get(url.clone())
                        .body(Empty::<bytes::Bytes>::new())
                        .unwrap();
                    let Ok(resp) = sender.send_request(req).await else {
                        break;
                    };
                    if resp.status() != 200 {
                        non_200.fetch_add(1, Ordering::Relaxed);
                    }
                    if resp.into_body().collect().await.is_err() {
                        break;
                    }
                    mine.push(t.elapsed().as_micros() as u64);
                    requests.fetch_add(1, Ordering::Relaxed);
                }
                latencies.lock().unwrap().extend(mine);
            }));
        }
    }
    for c in calls {
        let _ = c.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    let p99 = l
        .get(l.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or(0);
    println!(
        "requests {} seconds {seconds:.3} p99_us {p99} non_200 {}",
        requests.load(Ordering::Relaxed),
        non_200.load(Ordering::Relaxed)
    );
    Ok(())
}
