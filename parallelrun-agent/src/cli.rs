//! Command line: subcommands and their flags, validated before anything is
//! loaded into the kernel.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use parallelrun_common::DEFAULT_RING_BYTES;

use parallelrun_agent::service::ServiceAddr;

#[derive(Debug, Parser)]
#[command(name = "parallelrun", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture the old service's TCP traffic on an interface into a pcap file.
    Record(RecordArgs),
}

/// Where to capture: shared by every command that attaches to an interface.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Interface to attach to: the old service's own (requests arrive on
    /// ingress) or a host-side veth facing it (the reverse); `lo` works too.
    #[arg(long, value_name = "IFACE")]
    pub iface: String,
    /// Old service to observe: IP:PORT, [IPV6]:PORT or :PORT for any address.
    /// Repeat for several.
    #[arg(long = "old", value_name = "ADDR:PORT", required = true)]
    pub old: Vec<ServiceAddr>,
    /// Kernel ring buffer size (power of two, e.g. 16MiB, 64MiB). Larger
    /// absorbs longer bursts; drops are counted when it fills.
    #[arg(long, value_name = "SIZE", default_value_t = DEFAULT_RING_BYTES, value_parser = parse_size)]
    pub ring_size: u32,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// pcap file to write (LINKTYPE_RAW; tcpdump, tshark and Wireshark read it).
    #[arg(long, value_name = "FILE")]
    pub pcap: PathBuf,
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Also write the final counters as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
}

impl Cli {
    pub fn log_level(&self) -> &'static str {
        match self.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    }

    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Record(args) => crate::record::run(args).await,
        }
    }
}

/// Parses a byte size: `4096`, `64k`, `16M`, `16MiB`, `1G` (binary units).
pub fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size: use e.g. 4096, 64KiB, 16MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{s}': use KiB, MiB or GiB"
            ));
        }
    };
    let bytes = n
        .checked_mul(mult)
        .filter(|&b| b <= 1 << 31)
        .ok_or_else(|| format!("'{s}' is too large: at most 2GiB"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!(
            "'{s}' must be a power of two of at least 4KiB (e.g. 16MiB)"
        ));
    }
    Ok(bytes as u32)
}

/// Parses a positive number of seconds (fractions allowed).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v < 1e9) {
        return Err(format!("'{s}': give a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        for bad in ["", "abc", "3000", "12MiB", "1T", "4GiB", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-3", "nan", "inf", "x"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn record_requires_an_old_service() {
        let err = Cli::try_parse_from(["parallelrun", "record", "--iface", "lo", "--pcap", "x"])
            .unwrap_err();
        assert!(err.to_string().contains("--old"));
    }

    #[test]
    fn bad_service_address_is_a_usage_error() {
        let err = Cli::try_parse_from([
            "parallelrun",
            "record",
            "--iface",
            "lo",
            "--pcap",
            "x",
            "--old",
            "nonsense",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("IP:PORT"), "{err}");
    }
}
