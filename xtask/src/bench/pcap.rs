//! tcpdump on the same interface as the agent, as the reference count of
//! what crossed it.
//!
//! Both see the same skbs: on egress the TC hook runs just before the packet
//! taps, on ingress just after them, so GSO/GRO super-packets are one packet
//! to both. tcpdump keeps headers only (`-s 128`): the payload length comes
//! from the IP header (or the original length), so the pcap stays small even
//! at gigabytes per second.

use std::{fs, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::sys::{self, Netns, Proc};

/// What tcpdump saw, counted the way the TC program selects.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PcapCounts {
    /// TCP segments to or from the old service (pure ACKs included):
    /// compare with the kernel's `packets_matched`.
    pub packets: u64,
    /// Segments with payload, or with SYN, FIN or RST: the ones the agent
    /// records (pure ACKs are skipped); compare with `records_emitted`.
    pub record_worthy: u64,
    pub payload_packets: u64,
    /// Compare with `bytes_emitted`.
    pub payload_bytes: u64,
    /// tcpdump's own report.
    pub received_by_filter: Option<u64>,
    pub dropped_by_kernel: Option<u64>,
}

pub struct Tcpdump {
    proc: Proc,
    file: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl Tcpdump {
    pub fn start(ns: &Netns, ifname: &str, filter: &str, dir: &Path) -> Result<Self> {
        let file = dir.join("tcpdump.pcap");
        let err = dir.join("tcpdump.err");
        let mut cmd = ns.command("tcpdump");
        cmd.args(["-i", ifname, "-nn", "-s", "128", "-B", "16384", "-w"])
            .arg(&file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err)?);
        let mut proc = sys::spawn("tcpdump", &mut cmd)?;
        sys::wait_for_text(&mut proc, &err, "listening on", Duration::from_secs(10))?;
        Ok(Self { proc, file, err })
    }

    /// Stops tcpdump (SIGINT: it flushes and prints its counters) and counts.
    pub fn finish(mut self) -> Result<PcapCounts> {
        // tcpdump reads its ring a block at a time, a partial block after
        // the 1 s block timeout: give it the last one before stopping, or
        // the packets still in the ring are counted as received but never
        // written.
        sys::sleep(Duration::from_millis(1500))?;
        self.proc.stop(libc::SIGINT, Duration::from_secs(10))?;
        let data =
            fs::read(&self.file).with_context(|| format!("reading {}", self.file.display()))?;
        let mut c = count(&data)?;
        let report = fs::read_to_string(&self.err).unwrap_or_default();
        let find = |what: &str| {
            report.lines().find_map(|l| {
                l.strip_suffix(what)
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
        };
        c.received_by_filter = find("packets received by filter");
        c.dropped_by_kernel = find("packets dropped by kernel");
        let _ = fs::remove_file(&self.file);
        Ok(c)
    }
}

/// Counts a pcap (Ethernet, IPv4) made by tcpdump.
pub fn count(data: &[u8]) -> Result<PcapCounts> {
    if data.len() < 24 {
        bail!("pcap too short");
    }
    let magic = u32::from_le_bytes(data[0..4].try_into()?);
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => bail!("not a pcap file (magic {m:#x})"),
    };
    let u32_at = |b: &[u8], i: usize| {
        let a: [u8; 4] = b[i..i + 4].try_into().expect("4 bytes");
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let linktype = u32_at(data, 20);
    if linktype != 1 {
        bail!("pcap link type {linktype}, expected Ethernet (1)");
    }
    let mut c = PcapCounts::default();
    let mut i = 24;
    while i + 16 <= data.len() {
        let incl = u32_at(data, i + 8) as usize;
        let orig = u32_at(data, i + 12) as usize;
        let start = i + 16;
        let end = start + incl;
        if end > data.len() {
            break; // cut short by the stop
        }
        i = end;
        let f = &data[start..end];
        if f.len() < 14 {
            continue;
        }
        let mut l3 = 14;
        let mut ethertype = u16::from_be_bytes([f[12], f[13]]);
        if ethertype == 0x8100 && f.len() >= 18 {
            ethertype = u16::from_be_bytes([f[16], f[17]]);
            l3 = 18;
        }
        if ethertype != 0x0800 || f.len() < l3 + 20 {
            continue;
        }
        let ip = &f[l3..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 6 || ip.len() < ihl + 14 {
            continue;
        }
        let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        // 0 for BIG TCP super-packets: fall back to the frame's length.
        let ip_len = if tot == 0 {
            orig - l3
        } else {
            tot.min(orig - l3)
        };
        let tcp = &ip[ihl..];
        let doff = usize::from(tcp[12] >> 4) * 4;
        let flags = tcp[13];
        let payload = ip_len.saturating_sub(ihl + doff) as u64;
        c.packets += 1;
        if payload > 0 {
            c.payload_packets += 1;
            c.payload_bytes += payload;
        }
        if payload > 0 || flags & 0x07 != 0 {
            c.record_worthy += 1;
        }
    }
    Ok(c)
}
