//! Offline throughput of the capture-side pipeline on one core: pcap →
//! segments → reassembly → HTTP exchanges, for 1 KiB and 64 KiB responses.
//!
//! Each case is measured side by side with a baseline that only reads the
//! same pcap into segments, so the figure that matters — the ratio — does
//! not depend on the machine's disk or page cache. Run with
//! `cargo xtask bench` (or `cargo bench -p parallelrun-agent --bench pipeline`).

#![allow(
    unused_crate_dependencies,
    reason = "this target uses a few of its package's dependencies; the library and build check the rest"
)]

use std::{
    fs::File,
    io::BufWriter,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;
use parallelrun_agent::{
    http::{HttpConfig, HttpTracker},
    model::Outcome,
    pcap::read::PcapSource,
    reassembly::{Reassembler, ReassemblyConfig},
    service::ServiceAddr,
};
use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
};

/// TCP payload per packet, as on a 1500-byte MTU link.
const MSS: usize = 1448;
/// Concurrent keep-alive connections in the capture.
const CONNECTIONS: usize = 64;
/// Repetitions per measurement; the best is reported.
const ROUNDS: usize = 5;

struct Writer {
    w: PcapWriter<BufWriter<File>>,
    ts: Duration,
}

impl Writer {
    fn packet(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        syn: bool,
        payload: &[u8],
    ) {
        let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
            unreachable!("the bench uses IPv4")
        };
        let b = PacketBuilder::ipv4(s.ip().octets(), d.ip().octets(), 64).tcp(
            s.port(),
            d.port(),
            seq,
            65535,
        );
        let b = if syn { b.syn() } else { b.ack(ack).psh() };
        let mut buf = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut buf, payload).expect("build packet");
        self.ts += Duration::from_micros(5);
        self.w
            .write_packet(&PcapPacket::new(self.ts, buf.len() as u32, &buf))
            .expect("write pcap");
    }

    /// Sends `data` from `src` in MSS-sized segments; returns the next seq.
    fn stream(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        mut seq: u32,
        ack: u32,
        data: &[u8],
    ) -> u32 {
        for chunk in data.chunks(MSS) {
            self.packet(src, dst, seq, ack, false, chunk);
            seq = seq.wrapping_add(chunk.len() as u32);
        }
        seq
    }
}

/// Writes a capture of `exchanges` keep-alive exchanges with `body`-byte
/// responses, spread over [`CONNECTIONS`] interleaved connections.
fn write_pcap(path: &Path, exchanges: usize, body: usize) {
    let file = BufWriter::new(File::create(path).expect("create pcap"));
    let header = PcapHeader {
        datalink: DataLink::RAW,
        ..PcapHeader::default()
    };
    let mut w = Writer {
        w: PcapWriter::with_header(file, header).expect("pcap header"),
        ts: Duration::from_secs(1_700_000_000),
    };
    let server: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let clients: Vec<SocketAddr> = (0..CONNECTIONS)
        .map(|i| SocketAddr::from(([10, 0, 1, (i % 250) as u8 + 1], 40000 + i as u16)))
        .collect();
    let mut seqs = vec![(1000u32, 5000u32); CONNECTIONS];
    for (i, c) in clients.iter().enumerate() {
        w.packet(*c, server, seqs[i].0 - 1, 0, true, &[]);
        w.packet(server, *c, seqs[i].1 - 1, seqs[i].0, true, &[]);
    }
    let request = b"GET /items/42?expand=true HTTP/1.1\r\nHost: old.test\r\nUser-Agent: bench\r\nAccept: application/json\r\n\r\n";
    let response = {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body}\r\nDate: Sat, 28 Nov 2026 05:00:00 GMT\r\n\r\n"
        )
        .into_bytes();
        r.extend((0..body).map(|i| b'a' + (i % 26) as u8));
        r
    };
    for n in 0..exchanges {
        let i = n % CONNECTIONS;
        let c = clients[i];
        let (cs, ss) = seqs[i];
        let cs2 = w.stream(c, server, cs, ss, request);
        let ss2 = w.stream(server, c, ss, cs2, &response);
        seqs[i] = (cs2, ss2);
    }
}

/// Best-of-ROUNDS time of `f` and what it counted (in the last round).
fn measure<T: Default>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut count = T::default();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        count = f();
        best = best.min(t.elapsed());
    }
    (best, count)
}

/// Outcomes counted: exchanges paired, and requests lost.
#[derive(Default)]
struct Tally {
    paired: u64,
    lost: u64,
}

impl Tally {
    fn add(&mut self, outcomes: impl Iterator<Item = Outcome>) {
        for o in outcomes {
            match o {
                Outcome::Paired(_) => self.paired += 1,
                Outcome::Lost(_) => self.lost += 1,
            }
        }
    }
}

fn main() {
    let services: Vec<ServiceAddr> = vec!["10.0.0.2:80".parse().unwrap()];
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "| response body | exchanges | read-only (segments/s) | pipeline (exchanges/s) | pipeline MB/s | pipeline / read-only time |"
    );
    println!("|---|---|---|---|---|---|");
    for (body, exchanges) in [(1024usize, 100_000usize), (64 * 1024, 10_000)] {
        let path = dir.path().join(format!("bench-{body}.pcap"));
        write_pcap(&path, exchanges, body);
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let (t_read, segments) = measure(|| {
            let mut src = PcapSource::open(&path, &services).expect("open pcap");
            let mut n = 0u64;
            src.for_each(|_| n += 1).expect("read pcap");
            n
        });
        // Only paired exchanges count towards the figure: a lost request
        // is work not done, not throughput.
        let (t_pipe, tally) = measure(|| {
            let mut src = PcapSource::open(&path, &services).expect("open pcap");
            let mut r = Reassembler::new(
                ReassemblyConfig::default(),
                HttpTracker::new(HttpConfig::default()),
            );
            let mut tally = Tally::default();
            src.for_each(|seg| {
                r.push(seg);
                tally.add(r.handler_mut().outcomes());
            })
            .expect("read pcap");
            r.finish(u64::MAX);
            tally.add(r.handler_mut().outcomes());
            tally
        });
        assert_eq!(
            (tally.paired, tally.lost),
            (exchanges as u64, 0),
            "every exchange must be paired, none lost"
        );
        let paired = tally.paired;
        println!(
            "| {} KiB | {exchanges} | {:.0} | {:.0} | {:.0} | {:.2} |",
            body / 1024,
            segments as f64 / t_read.as_secs_f64(),
            paired as f64 / t_pipe.as_secs_f64(),
            bytes as f64 / 1e6 / t_pipe.as_secs_f64(),
            t_pipe.as_secs_f64() / t_read.as_secs_f64(),
        );
    }
}
