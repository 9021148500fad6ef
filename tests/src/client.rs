//! A recording HTTP/1.1 client over a plain TCP socket: it keeps every byte
//! it sent and received, the ground truth a capture is compared with.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// One connection's traffic as the client saw it.
#[derive(Clone, Debug)]
pub struct Conversation {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub sent: Vec<u8>,
    pub received: Vec<u8>,
    /// Body length of each response, in order.
    pub body_lens: Vec<usize>,
}

/// Sends `GET path` for each path, one after the other on one keep-alive
/// connection, the last with `Connection: close`, and reads each response
/// whole (Content-Length or chunked) before sending the next. Runs in the
/// calling thread's network namespace.
pub fn keep_alive(server: SocketAddr, paths: &[&str]) -> Conversation {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {server}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut conv = Conversation {
        local: s.local_addr().unwrap(),
        peer: server,
        sent: Vec::new(),
        received: Vec::new(),
        body_lens: Vec::new(),
    };
    let mut buf = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let close = if i + 1 == paths.len() {
            "Connection: close\r\n"
        } else {
            ""
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: old.test\r\nUser-Agent: parallelrun-tests\r\n{close}\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        conv.sent.extend_from_slice(req.as_bytes());
        let (consumed, body_len) = read_response(&mut s, &mut buf);
        conv.received.extend_from_slice(&buf[..consumed]);
        conv.body_lens.push(body_len);
        buf.drain(..consumed);
    }
    // The server closes after `Connection: close`: read to EOF, so both FINs
    // are on the wire before the test looks at the capture.
    s.read_to_end(&mut buf).unwrap();
    conv.received.extend_from_slice(&buf);
    conv
}

/// Reads until `buf` holds one whole response; returns its length in `buf`
/// and its body length.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (usize, usize) {
    loop {
        if let Some(done) = complete_response(buf) {
            return done;
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).expect("read response");
        assert!(n > 0, "server closed before the response was complete");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// If `buf` starts with a complete response to a GET, its total length
/// and body length.
fn complete_response(buf: &[u8]) -> Option<(usize, usize)> {
    crate::exchange::parse(buf, "GET").map(|(used, (_, _, body))| (used, body.len()))
}
