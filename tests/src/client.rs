//! A recording HTTP/1.1 client over a plain TCP socket: it keeps every byte
//! it sent and received, the ground truth a capture is compared with, and
//! each exchange as it saw it: the exact request bytes it sent, and the
//! status, headers and de-chunked body of the response it read, the ground
//! truth for the agent's exchanges.
//!
//! [`exchanges`] is the client; [`keep_alive`] is its view for captures
//! (GETs only, bytes and body lengths). The response parser and the socket
//! helpers here serve the other test clients too (see [`crate::faults`]).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// One request to send.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: &'static str,
    pub path: &'static str,
    /// Extra header lines, each ending in CRLF.
    pub headers: &'static str,
}

impl Req {
    pub const fn get(path: &'static str) -> Self {
        Self {
            method: "GET",
            path,
            headers: "",
        }
    }

    pub const fn head(path: &'static str) -> Self {
        Self {
            method: "HEAD",
            path,
            headers: "",
        }
    }
}

/// What the client saw of one exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub request: Vec<u8>,
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// One connection as the client saw it.
#[derive(Clone, Debug)]
pub struct Connection {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Every byte sent, in order.
    pub sent: Vec<u8>,
    /// Every byte received, in order, up to the server's FIN.
    pub received: Vec<u8>,
    pub exchanges: Vec<Seen>,
}

/// Sends `reqs` on one keep-alive connection (the last with `Connection:
/// close`). With `pipelined`, all requests go out in one write before any
/// response is read; otherwise one at a time, each after the previous
/// response was read whole (Content-Length or chunked). Reads to EOF, so
/// both FINs are on the wire before the test looks at the capture. Runs in
/// the calling thread's network namespace.
pub fn exchanges(server: SocketAddr, reqs: &[Req], pipelined: bool) -> Connection {
    let reqs: Vec<(&str, &str, &str)> =
        reqs.iter().map(|r| (r.method, r.path, r.headers)).collect();
    record(server, &reqs, pipelined)
}

/// One connection of GETs as the client saw it: the bytes both ways and
/// each response's body length.
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
/// connection, as [`exchanges`] does. Runs in the calling thread's network
/// namespace.
pub fn keep_alive(server: SocketAddr, paths: &[&str]) -> Conversation {
    let reqs: Vec<(&str, &str, &str)> = paths.iter().map(|p| ("GET", *p, "")).collect();
    let conn = record(server, &reqs, false);
    Conversation {
        local: conn.local,
        peer: conn.peer,
        sent: conn.sent,
        received: conn.received,
        body_lens: conn.exchanges.iter().map(|e| e.body.len()).collect(),
    }
}

/// The client: `(method, path, extra header lines)` on one connection.
fn record(server: SocketAddr, reqs: &[(&str, &str, &str)], pipelined: bool) -> Connection {
    let mut s = connect(server);
    let wire: Vec<Vec<u8>> = reqs
        .iter()
        .enumerate()
        .map(|(i, (method, path, headers))| {
            let close = if i + 1 == reqs.len() {
                "Connection: close\r\n"
            } else {
                ""
            };
            format!(
                "{method} {path} HTTP/1.1\r\nHost: old.test\r\nUser-Agent: parallelrun-tests\r\n{headers}{close}\r\n"
            )
            .into_bytes()
        })
        .collect();
    let mut conn = Connection {
        local: s.local_addr().expect("local address"),
        peer: server,
        sent: Vec::new(),
        received: Vec::new(),
        exchanges: Vec::new(),
    };
    if pipelined {
        conn.sent = wire.concat();
        s.write_all(&conn.sent).expect("send the requests");
    }
    let mut buf = Vec::new();
    for ((method, path, _), bytes) in reqs.iter().zip(&wire) {
        if !pipelined {
            s.write_all(bytes).expect("send the request");
            conn.sent.extend_from_slice(bytes);
        }
        let (used, (status, headers, body)) = read_one(&mut s, &mut buf, method, path);
        conn.received.extend(buf.drain(..used));
        conn.exchanges.push(Seen {
            request: bytes.clone(),
            status,
            headers,
            body,
        });
    }
    // The server closes after `Connection: close`: read to EOF.
    s.read_to_end(&mut buf).expect("read to EOF");
    conn.received.extend_from_slice(&buf);
    conn
}

/// A connection to `server` (5 s to connect) whose reads time out after
/// 20 s, from the calling thread's network namespace.
pub fn connect(server: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&server, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {server}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("set a read timeout");
    s
}

/// Status, headers and de-chunked body of a response.
pub type Parsed = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

/// Reads until `buf` starts with one whole response to `method` (`what`
/// names the request in a panic), takes it from `buf` and returns it.
pub fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, method: &str, what: &str) -> Parsed {
    let (used, parsed) = read_one(s, buf, method, what);
    buf.drain(..used);
    parsed
}

/// Like [`read_response`], leaving the response in `buf`: its length there.
fn read_one(s: &mut TcpStream, buf: &mut Vec<u8>, method: &str, what: &str) -> (usize, Parsed) {
    loop {
        if let Some(done) = parse(buf, method) {
            return done;
        }
        let mut chunk = [0u8; 65536];
        let n = s
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("{what}: read response: {e}"));
        assert!(
            n > 0,
            "{what}: server closed before the response was complete"
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A complete response to `method` at the start of `buf`: bytes used and
/// its status, headers and de-chunked body. Panics on a response our
/// servers would never send (the tests' clients talk to them only).
pub fn parse(buf: &[u8], method: &str) -> Option<(usize, Parsed)> {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut hs);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return None,
        Err(e) => panic!("invalid response head: {e}"),
    };
    let status = resp.code.expect("a complete head has a status");
    let headers = owned_headers(resp.headers);
    if method == "HEAD" || status == 204 || status == 304 || status < 200 {
        return Some((head, (status, headers, Vec::new())));
    }
    if header(&headers, "transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        let mut pos = head;
        let mut body = Vec::new();
        loop {
            let (consumed, size) = match httparse::parse_chunk_size(&buf[pos..]).ok()? {
                httparse::Status::Complete(c) => c,
                httparse::Status::Partial => return None,
            };
            pos += consumed;
            if size == 0 {
                // Our server sends no trailers: the final CRLF follows.
                return (buf.len() >= pos + 2).then(|| (pos + 2, (status, headers, body)));
            }
            let size = usize::try_from(size).expect("chunk size fits in memory");
            if buf.len() < pos + size + 2 {
                return None;
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    }
    let cl: usize = header(&headers, "content-length").map_or(0, |v| {
        v.parse()
            .unwrap_or_else(|e| panic!("invalid Content-Length {v:?}: {e}"))
    });
    (buf.len() >= head + cl).then(|| (head + cl, (status, headers, buf[head..head + cl].to_vec())))
}

/// Header fields as owned `(name, value)` pairs, in order.
pub(crate) fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect()
}

/// The first value of header `name` (any case), trimmed and lower-cased.
pub(crate) fn header(headers: &[(String, Vec<u8>)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
}
