//! A TLS connection through remedy's `CONNECT`, as an `HTTPS_PROXY` client opens one: the
//! `CONNECT`, then TLS to the host trusting remedy's `ca.pem`, with the ALPN protocols given.
//! The raw stream lets a test write what no well-behaved client would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

pub type Tunnel = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Opens a tunnel to `host:443` through `proxy` and does the TLS handshake, offering `alpn`.
pub fn open(proxy: SocketAddr, host: &str, ca: &Path, alpn: &[&[u8]]) -> Tunnel {
    let mut tcp = TcpStream::connect(proxy).expect("connect to the proxy");
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            tcp.read(&mut byte).expect("CONNECT answered"),
            1,
            "{head:?}"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(host.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tunnel = rustls::StreamOwned::new(conn, tcp);
    while tunnel.conn.is_handshaking() {
        tunnel
            .conn
            .complete_io(&mut tunnel.sock)
            .expect("TLS handshake");
    }
    tunnel
}

/// Everything the tunnel yields until it closes (or 30 s pass without a byte).
pub fn read_all(tunnel: &mut Tunnel) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tunnel.read_to_end(&mut out);
    out
}
