//! A recording HTTP/1.1 client that keeps each exchange as it saw it: the
//! exact request bytes it sent, and the status, headers and de-chunked body
//! of the response it read. The ground truth for the agent's exchanges.

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

/// One connection's exchanges.
#[derive(Clone, Debug)]
pub struct Connection {
    pub local: SocketAddr,
    pub exchanges: Vec<Seen>,
}

/// Sends `reqs` on one keep-alive connection (the last with `Connection:
/// close`). With `pipelined`, all requests go out in one write before any
/// response is read; otherwise one at a time. Runs in the calling thread's
/// network namespace.
pub fn run(server: SocketAddr, reqs: &[Req], pipelined: bool) -> Connection {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {server}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let wire: Vec<Vec<u8>> = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let close = if i + 1 == reqs.len() {
                "Connection: close\r\n"
            } else {
                ""
            };
            format!(
                "{} {} HTTP/1.1\r\nHost: old.test\r\nUser-Agent: parallelrun-tests\r\n{}{close}\r\n",
                r.method, r.path, r.headers
            )
            .into_bytes()
        })
        .collect();
    let mut conn = Connection {
        local: s.local_addr().unwrap(),
        exchanges: Vec::new(),
    };
    if pipelined {
        s.write_all(&wire.concat()).unwrap();
    }
    let mut buf = Vec::new();
    for (req, bytes) in reqs.iter().zip(&wire) {
        if !pipelined {
            s.write_all(bytes).unwrap();
        }
        let (status, headers, body) = read_response(&mut s, &mut buf, req.method);
        conn.exchanges.push(Seen {
            request: bytes.clone(),
            status,
            headers,
            body,
        });
    }
    // Read to EOF so both FINs are on the wire before the test looks.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    conn
}

/// Status, headers and de-chunked body of a response.
pub type Parsed = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, method: &str) -> Parsed {
    loop {
        if let Some((used, parsed)) = parse(buf, method) {
            buf.drain(..used);
            return parsed;
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).expect("read response");
        assert!(n > 0, "server closed before the response was complete");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A complete response to `method` at the start of `buf`: bytes used and
/// its status, headers and de-chunked body.
pub fn parse(buf: &[u8], method: &str) -> Option<(usize, Parsed)> {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut hs);
    let httparse::Status::Complete(head) = resp.parse(buf).expect("valid response head") else {
        return None;
    };
    let status = resp.code.unwrap();
    let headers: Vec<(String, Vec<u8>)> = resp
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
    };
    if method == "HEAD" || status == 204 || status == 304 || status < 200 {
        return Some((head, (status, headers, Vec::new())));
    }
    if get("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
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
            let size = size as usize;
            if buf.len() < pos + size + 2 {
                return None;
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    }
    let cl: usize = get("content-length").map_or(0, |v| v.trim().parse().unwrap());
    (buf.len() >= head + cl).then(|| (head + cl, (status, headers, buf[head..head + cl].to_vec())))
}
