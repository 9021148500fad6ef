//! Streaming body digests: a response body that is not kept whole for the
//! diff is decoded (Content-Encoding undone, as [`super::body`] does for a
//! whole body) and hashed while its bytes arrive, then dropped.
//!
//! Why: bodies that are only ever compared by length and hash (binary
//! content types) or that are too large to be worth a structural diff do
//! not need to sit in memory while the request waits for, and runs, its
//! replay. Both the captured old response and the replayed ones are
//! digested by the same [`BodyDigester`] (fed by the HTTP parser), and a
//! side that was kept whole is digested the same way at compare time
//! ([`digest_whole`]), so a difference of content-coding alone is still no
//! difference, and a whole side compares with a digested one.
//!
//! The hash is XXH3-128 (xxhash-rust): the digest only stands for the bytes
//! in an equality test between two responses of the same request, where a
//! cryptographic hash buys nothing, and SHA-256 (about 1.4 GB/s with the
//! CPU's SHA extensions on the project's machine) would cost ~0.75 ms per
//! MiB per side, several times the whole agent's budget for a 1 MiB
//! exchange. XXH3 runs at memory speed.
//!
//! Memory: a digester holds its hasher and, for encoded bodies, the
//! decoders' windows and buffers (allocated once per body), never the
//! body. Feeding it allocates nothing per chunk beyond what the decoders do.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use xxhash_rust::xxh3::Xxh3Default;

use crate::model::{BodyDigest, Header};

/// Response bodies larger than this are digested by default
/// ([`DigestPolicy::max_whole`]).
pub const DEFAULT_MAX_WHOLE_BODY: usize = 256 * 1024;

/// Which response bodies are hashed while they arrive instead of kept
/// ([`Response::digest`](crate::model::Response::digest)), by the HTTP/1
/// response parser ([`crate::http::ResponseParser`]) and by HTTP/2's
/// streams: those of a binary content type ([`super::binary_content_type`]),
/// and those whose size as sent passes `max_whole` (known from
/// `Content-Length` at the head, else noticed while the body arrives: what
/// was buffered is hashed then). The framing is followed exactly as for a
/// kept body; only what is stored changes. Requests are always kept whole
/// (they are replayed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestPolicy {
    /// Largest body (as sent, chunk framing included) kept whole.
    pub max_whole: usize,
    /// Bound on a digested body's decoded size (beyond it the body is
    /// undecodable and compared as sent), like
    /// [`DiffConfig::max_decoded_body`](super::DiffConfig::max_decoded_body)
    /// for a whole one.
    pub max_decoded: usize,
}

impl Default for DigestPolicy {
    /// [`DEFAULT_MAX_WHOLE_BODY`], and the diff's default decoding bound.
    fn default() -> Self {
        Self {
            max_whole: DEFAULT_MAX_WHOLE_BODY,
            max_decoded: super::DiffConfig::default().max_decoded_body,
        }
    }
}

/// Buffer of the brotli decoder's writer.
const BROTLI_BUFFER: usize = 4096;

/// The content codings of `headers` to undo, in the order they were
/// applied (undo right to left); `identity` and empty entries left out,
/// lowercased.
pub fn content_codings(headers: &[Header]) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-encoding"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|c| String::from_utf8_lossy(c.trim_ascii()).to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect()
}

/// Hashes a body while it arrives, after undoing its content codings.
pub struct BodyDigester {
    /// The decoder chain ending in the decoded hasher; `None` once a
    /// decoder failed (then the raw hash stands for the body).
    decoded: Option<Stage>,
    /// The bytes as sent (only for encoded bodies: for identity the
    /// decoded hash is the same).
    raw: Option<Hasher>,
    /// Bytes fed so far.
    sent_len: u64,
    codings: Vec<String>,
    /// Why decoding failed: the coding and the error.
    error: Option<(String, String)>,
}

impl std::fmt::Debug for BodyDigester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyDigester")
            .field("sent_len", &self.sent_len)
            .field("codings", &self.codings)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl BodyDigester {
    /// A digester for a body sent with `codings` ([`content_codings`]),
    /// whose decoded form may be at most `max_decoded` bytes (beyond, the
    /// body is undecodable: decompression bombs).
    pub fn new(codings: Vec<String>, max_decoded: usize) -> Self {
        // Only decoding is bounded: a body sent as is was bounded by the
        // parser's body limit already.
        let limit = if codings.is_empty() {
            u64::MAX
        } else {
            max_decoded as u64
        };
        let mut stage = Stage::Hash(Hasher::new(limit));
        // Innermost decoder last applied: the first coding listed is
        // undone last, so it sits next to the hasher.
        for coding in &codings {
            stage = match coding.as_str() {
                "gzip" | "x-gzip" => {
                    Stage::Gzip(Box::new(flate2::write::MultiGzDecoder::new(stage)))
                }
                "deflate" => Stage::Deflate(Sniff::default(), Box::new(stage)),
                "br" => Stage::Brotli(Box::new(brotli::DecompressorWriter::new(
                    stage,
                    BROTLI_BUFFER,
                ))),
                _ => Stage::Unsupported(coding.clone()),
            };
        }
        let raw = (!codings.is_empty()).then(|| Hasher::new(u64::MAX));
        Self {
            decoded: Some(stage),
            raw,
            sent_len: 0,
            codings,
            error: None,
        }
    }

    /// Feeds the next bytes of the body as sent (transfer framing removed).
    pub fn update(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.sent_len += data.len() as u64;
        if let Some(raw) = &mut self.raw {
            raw.feed(data);
        }
        if let Some(stage) = &mut self.decoded
            && let Err(e) = stage.write_all(data)
        {
            self.fail(&e);
        }
    }

    fn fail(&mut self, e: &io::Error) {
        self.decoded = None;
        let coding = self.failed_coding(e);
        self.error = Some((coding, e.to_string()));
    }

    /// The coding named in an error: an unsupported one, or the outermost
    /// (the list as sent when several are stacked).
    fn failed_coding(&self, e: &io::Error) -> String {
        if let Some(Unsupported(c)) = e.get_ref().and_then(|i| i.downcast_ref::<Unsupported>()) {
            return c.clone();
        }
        self.codings.join(", ")
    }

    /// The digest of the body: of its decoded bytes, or of the bytes as
    /// sent when a coding could not be undone.
    pub fn finish(mut self) -> BodyDigest {
        let decoded = match self.decoded.take() {
            // An empty body stays empty whatever its header says (HEAD,
            // 204 and 304 carry the header without a body).
            Some(_) if self.sent_len == 0 => Ok(Hasher::new(0)),
            Some(stage) => stage.finish(),
            None => Err(io::Error::other("failed")),
        };
        let (hasher, undecodable) = match decoded {
            Ok(h) => (h, None),
            Err(e) => {
                if self.error.is_none() {
                    self.fail(&e);
                }
                let raw = self.raw.take().unwrap_or_else(|| Hasher::new(u64::MAX));
                let why = self
                    .error
                    .take()
                    .map(|(coding, msg)| format!("undecodable {coding}: {msg}"));
                (raw, why)
            }
        };
        BodyDigest {
            sent_len: self.sent_len,
            len: hasher.len,
            xxh3: hasher.state.digest128(),
            undecodable,
        }
    }
}

/// A response body while it arrives, kept or hashed as a [`DigestPolicy`]
/// says: hashed from its first byte when its content type is binary or its
/// declared length passes `max_whole`, else kept until what arrived passes
/// `max_whole` (what was kept is hashed then). A gRPC body is always kept:
/// its messages are compared one by one, and a digest would hide a real
/// change behind a noisy field anywhere in a long stream. Limits on the
/// body's size are the caller's (each protocol has its own error for them).
#[derive(Debug)]
pub struct BodySink {
    /// Until the body is digested: when to digest it (`None`: never).
    policy: Option<DigestPolicy>,
    /// Digested from its first byte.
    eager: bool,
    /// Its content codings, for the digester.
    codings: Vec<String>,
    kept: Vec<u8>,
    digester: Option<BodyDigester>,
    /// Bytes received so far.
    received: usize,
}

impl BodySink {
    /// The sink for a body whose message has `headers` and, if known,
    /// declares `declared` bytes (Content-Length).
    pub fn new(policy: Option<DigestPolicy>, headers: &[Header], declared: Option<u64>) -> Self {
        let policy = policy.filter(|_| !crate::grpc::is_grpc(headers));
        let eager = policy.is_some_and(|p| {
            crate::model::header(headers, "content-type")
                .is_some_and(|v| super::binary_content_type(v))
                || declared.is_some_and(|len| len > p.max_whole as u64)
        });
        let codings = if policy.is_some() {
            content_codings(headers)
        } else {
            Vec::new()
        };
        let reserve = declared.map_or(0, |len| usize::try_from(len).unwrap_or(0).min(1 << 20));
        Self {
            policy,
            eager,
            codings,
            kept: Vec::with_capacity(if eager { 0 } else { reserve }),
            digester: None,
            received: 0,
        }
    }

    /// The next bytes of the body.
    pub fn push(&mut self, data: &[u8]) {
        self.received = self.received.saturating_add(data.len());
        if self.digester.is_none()
            && let Some(policy) = self.policy
            && !data.is_empty()
            && (self.eager || self.received > policy.max_whole)
        {
            let mut digester =
                BodyDigester::new(std::mem::take(&mut self.codings), policy.max_decoded);
            digester.update(&self.kept);
            self.kept = Vec::new();
            self.digester = Some(digester);
        }
        match &mut self.digester {
            Some(digester) => digester.update(data),
            None => self.kept.extend_from_slice(data),
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> usize {
        self.received
    }

    /// Bytes held (of a body kept; 0 once it is digested).
    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    /// The body kept, or the digest (the body then empty).
    pub fn finish(self) -> (bytes::Bytes, Option<Box<BodyDigest>>) {
        match self.digester {
            Some(digester) => (bytes::Bytes::new(), Some(Box::new(digester.finish()))),
            None => (bytes::Bytes::from(self.kept), None),
        }
    }
}

/// The digest of a body kept whole, as a [`BodyDigester`] would have made
/// it while the body arrived.
pub fn digest_whole(headers: &[Header], body: &[u8], max_decoded: usize) -> BodyDigest {
    let mut d = BodyDigester::new(content_codings(headers), max_decoded);
    d.update(body);
    d.finish()
}

/// `<N bytes, xxh3 PREFIX>`, PREFIX the first 16 hex digits of the 128-bit
/// hash: how a body compared by digest is shown.
pub fn summary(len: u64, xxh3: u128) -> String {
    let mut hex = String::with_capacity(16);
    let _ = write!(hex, "{:016x}", xxh3 >> 64);
    format!("<{len} bytes, xxh3 {hex}>")
}

/// Length-counting hasher at the end of the decoder chain, refusing more
/// than `limit` bytes.
struct Hasher {
    state: Box<Xxh3Default>,
    len: u64,
    limit: u64,
}

impl Hasher {
    fn new(limit: u64) -> Self {
        Self {
            state: Box::new(Xxh3Default::new()),
            len: 0,
            limit,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        self.state.update(data);
        self.len += data.len() as u64;
    }
}

impl Write for Hasher {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.len + data.len() as u64 > self.limit {
            return Err(io::Error::other(format!(
                "decoded body exceeds the limit of {} bytes",
                self.limit
            )));
        }
        self.feed(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The error of a coding that cannot be undone.
#[derive(Debug, thiserror::Error)]
#[error("unsupported content coding")]
struct Unsupported(String);

/// The first two bytes of a deflate body, which tell zlib (RFC 1950) from
/// raw deflate (which some servers send).
#[derive(Default)]
struct Sniff {
    seen: [u8; 2],
    n: usize,
}

/// One step of the decoder chain.
enum Stage {
    Hash(Hasher),
    Gzip(Box<flate2::write::MultiGzDecoder<Stage>>),
    Zlib(Box<flate2::write::ZlibDecoder<Stage>>),
    RawDeflate(Box<flate2::write::DeflateDecoder<Stage>>),
    /// `deflate` before its first two bytes arrived; the next stage.
    Deflate(Sniff, Box<Stage>),
    Brotli(Box<brotli::DecompressorWriter<Stage>>),
    Unsupported(String),
}

impl Stage {
    /// Ends the chain: flushes every decoder (a truncated stream is an
    /// error) and returns the hasher.
    fn finish(self) -> io::Result<Hasher> {
        match self {
            Stage::Hash(h) => Ok(h),
            Stage::Gzip(d) => d.finish()?.finish(),
            Stage::Zlib(d) => d.finish()?.finish(),
            Stage::RawDeflate(d) => d.finish()?.finish(),
            Stage::Deflate(sniff, next) => {
                // Fewer than two bytes: decide with what there is.
                let mut stage = Stage::choose_deflate(&sniff, *next);
                stage.write_all(&sniff.seen[..sniff.n])?;
                stage.finish()
            }
            Stage::Brotli(mut d) => {
                d.close()?;
                match d.into_inner() {
                    Ok(next) => next.finish(),
                    Err(_) => Err(io::Error::other("truncated brotli stream")),
                }
            }
            Stage::Unsupported(c) => Err(io::Error::other(Unsupported(c))),
        }
    }

    fn choose_deflate(sniff: &Sniff, next: Stage) -> Stage {
        let [cmf, flg] = sniff.seen;
        let zlib =
            sniff.n == 2 && cmf & 0x0f == 8 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0;
        if zlib {
            Stage::Zlib(Box::new(flate2::write::ZlibDecoder::new(next)))
        } else {
            Stage::RawDeflate(Box::new(flate2::write::DeflateDecoder::new(next)))
        }
    }
}

impl Write for Stage {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Stage::Hash(h) => h.write(data),
            Stage::Gzip(d) => d.write(data),
            Stage::Zlib(d) => d.write(data),
            Stage::RawDeflate(d) => d.write(data),
            Stage::Brotli(d) => d.write(data),
            Stage::Unsupported(c) => Err(io::Error::other(Unsupported(c.clone()))),
            Stage::Deflate(sniff, _) => {
                let take = (2 - sniff.n).min(data.len());
                sniff.seen[sniff.n..sniff.n + take].copy_from_slice(&data[..take]);
                sniff.n += take;
                if sniff.n == 2 {
                    let Stage::Deflate(sniff, next) =
                        std::mem::replace(self, Stage::Unsupported(String::new()))
                    else {
                        unreachable!("matched above");
                    };
                    *self = Stage::choose_deflate(&sniff, *next);
                    self.write_all(&sniff.seen)?;
                }
                Ok(take)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stage::Hash(_) | Stage::Deflate(..) | Stage::Unsupported(_) => Ok(()),
            Stage::Gzip(d) => d.flush(),
            Stage::Zlib(d) => d.flush(),
            Stage::RawDeflate(d) => d.flush(),
            Stage::Brotli(d) => d.flush(),
        }
    }
}

#[cfg(test)]
mod tests;
