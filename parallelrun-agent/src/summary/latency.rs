//! A latency distribution: an HdrHistogram of microseconds (1 µs to 60 s,
//! 2 significant digits: every quantile within 1 %), mergeable by addition,
//! carried in JSON as its V2 deflate serialisation in base64 beside a few
//! readable figures.
//!
//! Sized for many of them: 32-bit counts over 2,560 buckets, 10 KiB each,
//! so an endpoint's three take 30 KiB and `--max-endpoints 100` about
//! 3 MiB (3 significant digits to 1 h would be 180 KiB each, 54 MiB). A
//! regression threshold of 1.2× needs no finer precision; latencies above
//! 60 s (beyond any replay timeout) are counted as 60 s.
//!
//! HdrHistogram rather than fixed buckets: quantiles stay within the same
//! relative precision (here 1 %) at any latency, two histograms add into
//! exactly the one that would have
//! recorded both sets of values (what merging agents' summaries needs), and
//! its serialisation is a format other tools read.

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use hdrhistogram::{
    Histogram,
    serialization::{Deserializer, Serializer as _, V2DeflateSerializer},
};
use serde::{Deserialize, Serialize, de::Error as _, ser::Error as _};

/// Lowest and highest latency recorded, in µs; values outside are clamped.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 60_000_000;
const SIGFIG: u8 = 2;

/// HdrHistogram's V2 cookies (plain, and zlib-compressed around a plain one).
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9314;
/// Bytes of a plain V2 header: cookie, payload length, normalising offset,
/// significant digits, lowest, highest, integer-to-double ratio.
const V2_HEADER: usize = 40;
/// A plain V2 histogram of these bounds is at most a few KiB (run-length
/// encoded counts); anything claiming more is not one of ours.
const MAX_PLAIN: usize = 1 << 20;

/// A latency histogram. In JSON: `{"count", "p50_ms", "p99_ms", "max_ms",
/// "hdr"}`; on read only `hdr` is decoded, `count` is checked against it and
/// the figures are recomputed.
#[derive(Clone, Debug, PartialEq)]
pub struct Latency {
    hist: Histogram<u32>,
}

fn empty() -> Histogram<u32> {
    // The bounds are constants that HdrHistogram accepts (low ≥ 1,
    // high ≥ 2 × low, sigfig ≤ 5): creation cannot fail.
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

impl Latency {
    pub fn new() -> Self {
        Self { hist: empty() }
    }

    /// Records one latency (clamped to 1 µs ..= 1 h).
    pub fn record_ns(&mut self, ns: u64) {
        self.hist
            .saturating_record((ns / 1000).clamp(LOWEST_US, HIGHEST_US));
    }

    /// Records `n` latencies of `us` microseconds at once (clamped as
    /// [`Latency::record_ns`]; a bucket's count saturates).
    pub fn record_us_n(&mut self, us: u64, n: u64) {
        self.hist.saturating_record_n(
            us.clamp(LOWEST_US, HIGHEST_US),
            u32::try_from(n).unwrap_or(u32::MAX),
        );
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at quantile `q` (0..=1) in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (self.count() > 0).then(|| self.hist.value_at_quantile(q) as f64 / 1000.0)
    }

    /// The largest value in milliseconds; `None` when empty.
    pub fn max_ms(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.hist.max() as f64 / 1000.0)
    }

    /// Values ≤ `le_seconds` (for Prometheus buckets; at the histogram's
    /// resolution).
    pub fn count_le(&self, le_seconds: f64) -> u64 {
        let us = (le_seconds * 1e6).clamp(0.0, HIGHEST_US as f64) as u64;
        if us < LOWEST_US {
            return 0;
        }
        self.hist.count_between(0, us)
    }

    /// Sum of the recorded values in seconds (from the histogram's mean, so
    /// at its resolution).
    pub fn sum_seconds(&self) -> f64 {
        self.hist.mean() * self.count() as f64 / 1e6
    }

    /// Adds `other`'s values: the result is the histogram that would have
    /// recorded both.
    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides (every `Latency` is made by `empty` or
        // re-recorded into it on read), so addition cannot overflow the range.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// The JSON form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    count: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    /// V2 deflate serialisation, base64.
    hdr: String,
}

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.hist, &mut bytes)
            .map_err(|e| S::Error::custom(format!("cannot encode a latency histogram: {e:?}")))?;
        Wire {
            count: self.count(),
            p50_ms: self.quantile_ms(0.5),
            p99_ms: self.quantile_ms(0.99),
            max_ms: self.max_ms(),
            hdr: BASE64.encode(bytes),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        let bytes = BASE64
            .decode(wire.hdr.as_bytes())
            .map_err(|e| D::Error::custom(format!("latency histogram is not base64: {e}")))?;
        let plain = plain_v2(&bytes)
            .map_err(|e| D::Error::custom(format!("latency histogram is corrupt: {e}")))?;
        let decoded: Histogram<u32> = Deserializer::new()
            .deserialize(&mut plain.as_slice())
            .map_err(|e| D::Error::custom(format!("latency histogram is corrupt: {e:?}")))?;
        // Re-recorded into this build's bounds, whatever the writer's were.
        let mut hist = empty();
        for v in decoded.iter_recorded() {
            hist.saturating_record_n(
                v.value_iterated_to().clamp(LOWEST_US, HIGHEST_US),
                v.count_at_value(),
            );
        }
        if hist.len() != wire.count {
            return Err(D::Error::custom(format!(
                "latency histogram holds {} values but says count {}",
                hist.len(),
                wire.count
            )));
        }
        Ok(Self { hist })
    }
}

/// The plain V2 form of `bytes` (decompressed if need be), its header
/// checked before HdrHistogram's deserialiser sees it: that one allocates
/// what the header claims (payload length, and counts for the bounds), so a
/// corrupt file could make a read take gigabytes. Only this build's bounds
/// are accepted (every writer of a summary uses them).
fn plain_v2(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |b: &[u8], at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
    };
    let plain = match u32_at(bytes, 0) {
        Some(V2_COOKIE) => bytes.to_vec(),
        Some(V2_COMPRESSED_COOKIE) => {
            let len = u32_at(bytes, 4).ok_or("truncated")? as usize;
            let body = bytes.get(8..).ok_or("truncated")?;
            if len > body.len() {
                return Err(format!(
                    "claims {len} compressed bytes, holds {}",
                    body.len()
                ));
            }
            let mut out = Vec::new();
            let mut z = std::io::Read::take(
                flate2::read::ZlibDecoder::new(&body[..len]),
                MAX_PLAIN as u64 + 1,
            );
            std::io::Read::read_to_end(&mut z, &mut out).map_err(|e| e.to_string())?;
            if out.len() > MAX_PLAIN {
                return Err("decompresses to more than a histogram holds".to_owned());
            }
            out
        }
        _ => return Err("not an HdrHistogram V2 serialisation".to_owned()),
    };
    if u32_at(&plain, 0) != Some(V2_COOKIE) {
        return Err("not an HdrHistogram V2 serialisation".to_owned());
    }
    let payload = u32_at(&plain, 4).ok_or("truncated")? as usize;
    if plain.len() < V2_HEADER || payload > plain.len() - V2_HEADER {
        return Err(format!("claims {payload} bytes of counts, holds fewer"));
    }
    let digits = u32_at(&plain, 12).ok_or("truncated")?;
    let (low, high) = (u64_at(&plain, 16), u64_at(&plain, 24));
    if digits != u32::from(SIGFIG) || low != Some(LOWEST_US) || high != Some(HIGHEST_US) {
        return Err(format!(
            "bounds {low:?}..{high:?} µs at {digits} digits, not {LOWEST_US}..{HIGHEST_US} at {SIGFIG}"
        ));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_resolution() {
        let mut l = Latency::new();
        for ms in 1..=100 {
            l.record_ns(ms * 1_000_000);
        }
        assert_eq!(l.count(), 100);
        let p50 = l.quantile_ms(0.5).unwrap();
        let p99 = l.quantile_ms(0.99).unwrap();
        // Within the 1 % the histogram promises.
        assert!((p50 - 50.0).abs() <= 0.5, "{p50}");
        assert!((p99 - 99.0).abs() <= 0.99, "{p99}");
        assert_eq!(l.count_le(0.010), 10);
        assert!((l.sum_seconds() - 5.05).abs() < 0.05);
        assert_eq!(Latency::new().quantile_ms(0.5), None);
    }

    #[test]
    fn adding_equals_recording_both() {
        let (mut a, mut b, mut both) = (Latency::new(), Latency::new(), Latency::new());
        for i in 0..1000u64 {
            let ns = i * 7919 % 50_000_000;
            if i % 3 == 0 { &mut a } else { &mut b }.record_ns(ns);
            both.record_ns(ns);
        }
        a.add(&b);
        assert_eq!(a, both);
    }

    #[test]
    fn json_round_trip_keeps_every_value() {
        let mut l = Latency::new();
        for ns in [500, 1_000, 250_000, 3_000_000_000, u64::MAX] {
            l.record_ns(ns);
        }
        let json = serde_json::to_string(&l).unwrap();
        let back: Latency = serde_json::from_str(&json).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn corrupt_or_inconsistent_histograms_are_refused() {
        let mut l = Latency::new();
        l.record_ns(1_000_000);
        let mut v = serde_json::to_value(&l).unwrap();
        v["count"] = 2.into();
        let e = serde_json::from_value::<Latency>(v.clone()).unwrap_err();
        assert!(e.to_string().contains("holds 1 values"), "{e}");
        v["hdr"] = "bm90IGEgaGlzdG9ncmFt".into();
        let e = serde_json::from_value::<Latency>(v.clone()).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
        v["hdr"] = "!!".into();
        let e = serde_json::from_value::<Latency>(v).unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
    }

    /// A header claiming gigabytes, or bounds that would allocate them, is
    /// refused before anything is allocated.
    #[test]
    fn headers_claiming_more_than_they_hold_are_refused() {
        let mut l = Latency::new();
        l.record_ns(1_000_000);
        let mut plain = Vec::new();
        hdrhistogram::serialization::V2Serializer::new()
            .serialize(&l.hist, &mut plain)
            .unwrap();
        assert!(plain_v2(&plain).is_ok());
        let json = |bytes: &[u8]| {
            let mut v = serde_json::to_value(&l).unwrap();
            v["hdr"] = BASE64.encode(bytes).into();
            serde_json::from_value::<Latency>(v)
        };
        assert_eq!(json(&plain).unwrap(), l);
        let mut huge = plain.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = json(&huge).unwrap_err();
        assert!(e.to_string().contains("claims"), "{e}");
        let mut wide = plain.clone();
        wide[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
        let e = json(&wide).unwrap_err();
        assert!(e.to_string().contains("bounds"), "{e}");
        let mut deflated = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&l.hist, &mut deflated)
            .unwrap();
        deflated[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = json(&deflated).unwrap_err();
        assert!(e.to_string().contains("compressed bytes"), "{e}");
    }
}
