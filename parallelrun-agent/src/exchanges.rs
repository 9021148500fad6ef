//! `parallelrun exchanges`: the HTTP exchanges of the old service, live or
//! from a pcap, as JSON Lines: see what parallelrun would replay, and check
//! reassembly and pairing independently of any new service.

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    path::Path,
    time::Instant,
};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use parallelrun_agent::{
    capture::{
        Capture, CaptureConfig, Clock, Follower, IfaceSelector, InterfaceStats, Segment,
        SegmentError,
    },
    http::{HttpConfig, HttpLimits, HttpTracker},
    model::{Exchange, Header, Outcome, Protocol, Response, wall_ns},
    pcap::read::PcapSource,
    private_file,
    reassembly::{Reassembler, ReassemblyConfig},
};
use serde_json::{Value, json};
use tracing::info;

use crate::{cli::ExchangesArgs, live};

/// Packets read from a pcap per slice.
const BATCH: usize = 4096;

fn headers(h: &[Header]) -> Value {
    Value::Array(
        h.iter()
            .map(|h| json!([h.name, String::from_utf8_lossy(&h.value)]))
            .collect(),
    )
}

/// A response body: `body_b64` when it was kept, else `body_digest`
/// (`sent_bytes` as sent, `bytes` and `xxh3_128` of what is compared: the
/// decoded body, or the bytes as sent when `undecodable` says why), never
/// both: a digested body's bytes are gone.
fn response_body(r: &Response) -> (&'static str, Value) {
    match &r.digest {
        None => ("body_b64", Value::String(STANDARD.encode(&r.body))),
        Some(d) => (
            "body_digest",
            json!({
                "sent_bytes": d.sent_len,
                "bytes": d.len,
                "xxh3_128": format!("{:032x}", d.xxh3),
                "undecodable": d.undecodable,
            }),
        ),
    }
}

/// One exchange as a JSON object; bytes in base64 so that any body survives.
pub fn exchange_json(ex: &Exchange) -> Value {
    let (body_key, body) = response_body(&ex.response);
    let version = |minor: u8| match ex.protocol {
        Protocol::Http1 => format!("HTTP/1.{minor}"),
        Protocol::Http2 => "HTTP/2".to_owned(),
    };
    let mut v = json!({
        "id": ex.id,
        "client": ex.conn.client.to_string(),
        "server": ex.conn.server.to_string(),
        "protocol": ex.protocol.name(),
        "stream": ex.stream_id,
        "request": {
            "method": ex.request.method,
            "target": ex.request.target,
            "version": version(ex.request.version),
            "headers": headers(&ex.request.headers),
            "body_b64": STANDARD.encode(&ex.request.body),
            "trailers": headers(&ex.request.trailers),
            "raw_b64": STANDARD.encode(&ex.request.raw),
        },
        "response": {
            "version": version(ex.response.version),
            "status": ex.response.status,
            "reason": ex.response.reason,
            "headers": headers(&ex.response.headers),
            "trailers": headers(&ex.response.trailers),
        },
        "request_ts_ns": ex.request_ts_ns,
        "response_ts_ns": ex.response_ts_ns,
        "latency_ms": ex.old_latency_ns() as f64 / 1e6,
    });
    v["response"][body_key] = body;
    v
}

struct Writer {
    out: BufWriter<File>,
    error: Option<std::io::Error>,
}

impl Writer {
    fn drain(&mut self, r: &mut Reassembler<HttpTracker>) {
        for o in r.handler_mut().outcomes() {
            let line = match &o {
                Outcome::Paired(ex) => exchange_json(ex),
                Outcome::Lost(l) => json!({
                    "lost": l.cause.name(),
                    "client": l.conn.client.to_string(),
                    "server": l.conn.server.to_string(),
                    "method": l.method,
                    "target": l.target,
                }),
            };
            if self.error.is_none()
                && let Err(e) = serde_json::to_writer(&mut self.out, &line)
                    .map_err(std::io::Error::from)
                    .and_then(|()| self.out.write_all(b"\n"))
            {
                self.error = Some(e);
            }
        }
    }
}

/// Live capture into reassembly, exchanges written as they complete.
struct Live {
    r: Reassembler<HttpTracker>,
    w: Writer,
    clock: Clock,
    malformed: u64,
}

impl live::Handler for Live {
    fn record(&mut self, seg: Result<Segment<'_>, SegmentError>) {
        live::feed(&mut self.r, &self.clock, &mut self.malformed, seg);
    }

    async fn batch(&mut self) {
        self.w.drain(&mut self.r);
    }

    async fn tick(&mut self, _capture: &Capture, _interfaces: &InterfaceStats) {
        self.r.expire(wall_ns());
        self.w.drain(&mut self.r);
    }

    fn stop(&self) -> Option<&'static str> {
        self.w.error.as_ref().map(|_| "output write error")
    }
}

pub async fn run(args: ExchangesArgs) -> anyhow::Result<()> {
    let file = private_file::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut w = Writer {
        out: BufWriter::new(file),
        error: None,
    };
    let http = HttpConfig {
        limits: HttpLimits {
            max_body: usize::try_from(args.max_body).unwrap_or(usize::MAX),
            ..HttpLimits::default()
        },
        ..HttpConfig::default()
    };
    let reassembly = ReassemblyConfig {
        lossless_capture: !args.iface.is_empty(),
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::new(reassembly, HttpTracker::new(http));
    let started = Instant::now();
    let mut kernel = None;
    let mut malformed = 0;
    let mut stopped = None;
    if let Some(path) = &args.pcap {
        let mut source = PcapSource::open(path, &args.old)?;
        loop {
            let more = source.read_batch(BATCH, |seg| r.push(seg))?;
            w.drain(&mut r);
            if !more || w.error.is_some() {
                break;
            }
        }
        info!(stats = ?source.stats(), "pcap read");
        source.warn_if_nothing_found();
    } else {
        let (mut capture, follower) = Follower::start(&CaptureConfig {
            iface: IfaceSelector::new(&args.iface)?,
            services: args.old.clone(),
            ring_bytes: args.ring_size,
            sample_threshold: parallelrun_common::SAMPLE_ALL,
        })?;
        let mut h = Live {
            r,
            w,
            clock: capture.clock(),
            malformed: 0,
        };
        stopped = Some(live::run(&mut capture, follower, args.duration, &mut h).await?);
        kernel = Some(capture.kernel_counters());
        (r, w, malformed) = (h.r, h.w, h.malformed);
    }
    r.finish(wall_ns());
    w.drain(&mut r);
    if let Some(e) = w.error {
        return Err(e).with_context(|| format!("writing {}", args.out.display()));
    }
    w.out
        .flush()
        .with_context(|| format!("writing {}", args.out.display()))?;
    let http = r.handler().stats();
    let summary = json!({
        "seconds": started.elapsed().as_secs_f64(),
        "http": http,
        "reassembly": r.stats(),
        "kernel": kernel,
        "interfaces": stopped.as_ref().map(|s| s.interfaces),
        "malformed_records": malformed,
    });
    eprintln!(
        "parallelrun exchanges: {} requests seen: {} paired, {} lost; written to {}",
        http.requests_seen,
        http.paired,
        http.lost_total(),
        args.out.display()
    );
    if let Some(p) = &args.stats_json {
        write_json(p, &summary)?;
    }
    stopped.map_or(Ok(()), live::Stopped::into_result)
}

fn write_json(path: &Path, v: &Value) -> anyhow::Result<()> {
    private_file::write(path, &serde_json::to_vec_pretty(v)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use bytes::Bytes;
    use parallelrun_agent::model::{BodyDigest, ConnKey, Protocol, Request};

    use super::*;

    fn exchange(body: &[u8], digest: Option<Box<BodyDigest>>) -> Exchange {
        let addr: SocketAddr = "10.0.0.1:1234".parse().unwrap();
        Exchange {
            id: 1,
            conn: ConnKey {
                client: addr,
                server: "10.0.0.2:80".parse().unwrap(),
            },
            protocol: Protocol::Http1,
            stream_id: 0,
            request: Request {
                method: "GET".into(),
                target: "/f".into(),
                version: 1,
                headers: Vec::new(),
                body: Bytes::new(),
                trailers: Vec::new(),
                raw: Bytes::from_static(b"GET /f HTTP/1.1\r\n\r\n"),
            },
            response: Response {
                version: 1,
                status: 200,
                reason: "OK".into(),
                headers: vec![Header::new("Content-Type", "image/png")],
                body: Bytes::copy_from_slice(body),
                digest,
                trailers: Vec::new(),
            },
            request_ts_ns: 0,
            response_ts_ns: 1_000_000,
        }
    }

    #[test]
    fn a_kept_body_is_in_base64() {
        let v = exchange_json(&exchange(b"\x89PNG", None));
        assert_eq!(v["response"]["body_b64"], "iVBORw==");
        assert!(v["response"].get("body_digest").is_none());
    }

    #[test]
    fn a_digested_body_shows_its_digest_and_no_bytes() {
        let digest = BodyDigest {
            sent_len: 40,
            len: 100,
            xxh3: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            undecodable: None,
        };
        let v = exchange_json(&exchange(b"", Some(Box::new(digest))));
        assert!(v["response"].get("body_b64").is_none(), "no bytes to show");
        assert_eq!(
            v["response"]["body_digest"],
            json!({
                "sent_bytes": 40,
                "bytes": 100,
                "xxh3_128": "0123456789abcdef0011223344556677",
                "undecodable": null,
            })
        );
        assert_eq!(v["response"]["status"], 200);
    }
}
