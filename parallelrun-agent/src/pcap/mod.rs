//! pcap files: [`write`](mod@write) turns captured segments into a pcap that tcpdump,
//! tshark and Wireshark read; [`read`] turns a pcap (ours or tcpdump's) back
//! into segments for the offline pipeline.

pub mod read;
pub mod write;

pub use write::{PcapError, PcapSink};
