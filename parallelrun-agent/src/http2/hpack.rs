//! HPACK (RFC 7541) decoding of header blocks, with the connection's
//! dynamic table, for one direction of a connection.
//!
//! # Why a decoder of our own
//!
//! The crates on crates.io were looked at: `hpack` 0.3 (unmaintained for
//! years), its forks `fluke-hpack` 0.3 and `loona-hpack` 0.4, and
//! `httlib-hpack` 0.1 (h2's decoder is private). None bounds the decoded
//! header list itself, `loona-hpack`'s `set_max_table_size` asserts
//! (panics) above its allowed maximum, and none can decode a connection
//! it joined in the middle: an entry it never saw is just "index out of
//! bounds", and it cannot tell which later entries it does know. That
//! mode is what an observer needs most, so this module implements RFC 7541
//! directly: integers (§5.1), string literals (§5.2, Huffman in the
//! `huffman` submodule), the representations of §6 and the table of §4.
//!
//! # Invariants
//!
//! - Memory is bounded: the dynamic table holds entries whose sizes (name +
//!   value + 32, §4.1) add up to at most the table's current maximum, which
//!   is the last size update's (at most [`DecoderLimits::max_table_size`]
//!   then in force: SETTINGS_HEADER_TABLE_SIZE as this side advertised it,
//!   default 4096), or that limit before any; a decoded header list is at
//!   most [`DecoderLimits::max_header_list_size`] (sized as
//!   SETTINGS_MAX_HEADER_LIST_SIZE counts it, name + value + 32 per field).
//! - A dynamic table size update above the allowed maximum is
//!   [`HpackError::TableSizeTooLarge`]; one after the first field of a block
//!   is [`HpackError::MisplacedSizeUpdate`] (§4.2).
//! - No input makes the decoder guess. The table is a suffix of every entry
//!   ever inserted, newest first, and the decoder counts insertions
//!   ([`Decoder::inserted`]). A decoder that [joined](Decoder::joined) a
//!   connection in the middle knows only the entries inserted since
//!   ([`Decoder::known_since`]): dynamic index `62 + j` names the `j`-th
//!   newest entry, so an index within what it inserted resolves exactly,
//!   and an index beyond it is [`HpackError::UnknownIndex`] (loss cause
//!   `hpack_state`), never a guess. Entries it keeps that the encoder
//!   already evicted are harmless: an encoder never names an evicted index,
//!   and eviction only ever drops the oldest entries, so positions agree.
//!   A decoder that saw the whole connection reports such an index as
//!   [`HpackError::InvalidIndex`] instead.
//! - A joined decoder becomes fully in step (no unknown entry can remain)
//!   when a size update, or an insertion under a known maximum, leaves no
//!   room for one: what it knows plus the smallest possible entry (32
//!   bytes) would pass the maximum ([`Decoder::in_step`]).
//! - An [`HpackError::UnknownIndex`] does not stop the block: the rest is
//!   decoded so that its insertions keep the table right, and the error is
//!   returned at the end. An entry inserted with a name the decoder does not
//!   know is kept as an unknown entry (size counted without its name, so
//!   the table keeps at least what the encoder's holds), and naming it
//!   later is `UnknownIndex` too.
//! - Any other error leaves the table's state unknown from the failing
//!   representation on: the decoder forgets its entries and goes on as if
//!   it had just joined, so later blocks resolve what they insert.
//!
//! # Output
//!
//! [`HeaderList`]: names and values in one byte buffer, reused from block to
//! block ([`Decoder::decode_into`]); the pseudo-header fields of RFC 9113
//! §8.3 (`:method`, `:scheme`, `:authority`, `:path`, `:status`, and
//! `:protocol` of RFC 8441) apart from the regular fields. HPACK does not
//! judge HTTP semantics; a pseudo-header after a regular field, repeated, or
//! unknown is kept (unknown ones among the regular fields) and flagged by
//! [`HeaderList::misplaced_pseudo`].
//! Fields the sender marked never indexed (§6.2.3: credentials, cookies)
//! are listed by [`HeaderList::never_indexed`], for redaction.

pub(crate) mod huffman;

use std::collections::VecDeque;
use std::ops::Range;

use thiserror::Error;

pub use huffman::HuffmanError;

/// SETTINGS_HEADER_TABLE_SIZE until a SETTINGS frame changes it.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Bytes an entry takes beyond its name and value (RFC 7541 §4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// Number of entries of the static table; dynamic indices start after it.
pub const STATIC_LEN: usize = 61;

/// The static table (RFC 7541 Appendix A), index 1 first.
pub const STATIC_TABLE: [(&str, &str); STATIC_LEN] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Bounds a [`Decoder`] enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderLimits {
    /// SETTINGS_HEADER_TABLE_SIZE as the decoding side advertised it: the
    /// largest dynamic table size update allowed, and the table's maximum
    /// until one comes. Default 4096.
    pub max_table_size: usize,
    /// Largest decoded header list, counted as RFC 9113 §6.5.2 does (name +
    /// value + 32 per field). Default 64 KiB.
    pub max_header_list_size: usize,
}

impl Default for DecoderLimits {
    fn default() -> Self {
        Self {
            max_table_size: DEFAULT_TABLE_SIZE,
            max_header_list_size: 64 * 1024,
        }
    }
}

/// Why a header block could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum HpackError {
    /// The block ends inside a representation.
    #[error("header block ends inside a field representation")]
    Truncated,
    /// An integer of more than 32 bits, or with too many continuation
    /// bytes.
    #[error("integer too large in a header block")]
    IntegerOverflow,
    /// Index 0, or past the static and dynamic tables of a decoder in step.
    #[error("index {index} names no table entry")]
    InvalidIndex {
        /// The index as sent.
        index: u32,
    },
    /// A dynamic table entry inserted before the decoder joined the
    /// connection (or named through one): unknowable, loss cause
    /// `hpack_state`.
    #[error("index {index} names a table entry inserted before the decoder joined")]
    UnknownIndex {
        /// The index as sent.
        index: u32,
    },
    /// An invalid Huffman-coded string.
    #[error("{0}")]
    Huffman(#[from] HuffmanError),
    /// A dynamic table size update above SETTINGS_HEADER_TABLE_SIZE.
    #[error("dynamic table size update to {size}, above the allowed {max}")]
    TableSizeTooLarge {
        /// The size asked for.
        size: usize,
        /// The allowed maximum.
        max: usize,
    },
    /// A dynamic table size update after a field of the block.
    #[error("dynamic table size update after the first field of a block")]
    MisplacedSizeUpdate,
    /// The decoded list passes [`DecoderLimits::max_header_list_size`].
    #[error("header list over the limit of {limit} bytes")]
    HeaderListTooLarge {
        /// The limit.
        limit: usize,
    },
}

impl HpackError {
    /// True for [`HpackError::UnknownIndex`]: the block was decoded to its
    /// end and the table is still right about what it knows, so later
    /// blocks decode. After any other error the decoder forgot its table
    /// (see the module documentation).
    pub fn is_recoverable(&self) -> bool {
        matches!(self, HpackError::UnknownIndex { .. })
    }
}

/// A pseudo-header field (RFC 9113 §8.3, RFC 8441 §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pseudo {
    /// `:method`.
    Method,
    /// `:scheme`.
    Scheme,
    /// `:authority`.
    Authority,
    /// `:path`.
    Path,
    /// `:status`.
    Status,
    /// `:protocol` (extended CONNECT).
    Protocol,
}

impl Pseudo {
    /// Every pseudo-header, in the order of [`HeaderList`]'s slots.
    pub const ALL: [Pseudo; 6] = [
        Pseudo::Method,
        Pseudo::Scheme,
        Pseudo::Authority,
        Pseudo::Path,
        Pseudo::Status,
        Pseudo::Protocol,
    ];

    /// The field name, colon included.
    pub fn name(self) -> &'static str {
        match self {
            Pseudo::Method => ":method",
            Pseudo::Scheme => ":scheme",
            Pseudo::Authority => ":authority",
            Pseudo::Path => ":path",
            Pseudo::Status => ":status",
            Pseudo::Protocol => ":protocol",
        }
    }

    fn of(name: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name().as_bytes() == name)
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// A decoded header list (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderList {
    bytes: Vec<u8>,
    /// Regular fields: name and value ranges in `bytes`, in wire order.
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// Indices in `fields` of those sent as never indexed.
    never_indexed: Vec<usize>,
    /// Known pseudo-headers' values (the first of each).
    pseudo: [Option<Range<usize>>; 6],
    misplaced_pseudo: bool,
    size: usize,
}

impl HeaderList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the list, keeping its buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.fields.clear();
        self.never_indexed.clear();
        self.pseudo = Default::default();
        self.misplaced_pseudo = false;
        self.size = 0;
    }

    /// The value of pseudo-header `which`, if present (the first one).
    pub fn pseudo(&self, which: Pseudo) -> Option<&[u8]> {
        let range = self.pseudo.get(which.slot())?.clone()?;
        self.bytes.get(range)
    }

    /// The regular fields (and unknown pseudo-headers), `(name, value)` in
    /// wire order.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|(n, v)| {
            (
                self.bytes.get(n.clone()).unwrap_or_default(),
                self.bytes.get(v.clone()).unwrap_or_default(),
            )
        })
    }

    /// The regular fields sent as "never indexed" (§6.2.3): values the
    /// sender marked sensitive (credentials, cookies), to be redacted.
    pub fn never_indexed(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.never_indexed.iter().filter_map(|&i| {
            let (n, v) = self.fields.get(i)?;
            Some((self.bytes.get(n.clone())?, self.bytes.get(v.clone())?))
        })
    }

    /// Number of regular fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True without regular fields (pseudo-headers aside).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The first regular field named `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// A pseudo-header came after a regular field, twice, or unknown
    /// (malformed for HTTP/2, RFC 9113 §8.3).
    pub fn misplaced_pseudo(&self) -> bool {
        self.misplaced_pseudo
    }

    /// The list's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Every field, pseudo-headers included, in the order: pseudo-headers
    /// (in [`Pseudo::ALL`] order), then regular fields.
    pub fn all(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        Pseudo::ALL
            .into_iter()
            .filter_map(|p| self.pseudo(p).map(|v| (p.name().as_bytes(), v)))
            .chain(self.fields())
    }

    fn push(&mut self, name: &[u8], value: &[u8], limit: usize) -> Result<(), HpackError> {
        self.push_field(name, value, false, limit)
    }

    fn push_field(
        &mut self,
        name: &[u8],
        value: &[u8],
        never_indexed: bool,
        limit: usize,
    ) -> Result<(), HpackError> {
        let size = self.size + name.len() + value.len() + ENTRY_OVERHEAD;
        if size > limit {
            return Err(HpackError::HeaderListTooLarge { limit });
        }
        self.size = size;
        let pseudo = name.first() == Some(&b':');
        if pseudo && !self.fields.is_empty() {
            self.misplaced_pseudo = true;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        let mid = self.bytes.len();
        self.bytes.extend_from_slice(value);
        let end = self.bytes.len();
        match Pseudo::of(name).and_then(|p| self.pseudo.get_mut(p.slot())) {
            Some(slot @ None) => *slot = Some(mid..end),
            Some(Some(_)) => self.misplaced_pseudo = true,
            None => {
                if pseudo {
                    self.misplaced_pseudo = true;
                }
                if never_indexed {
                    self.never_indexed.push(self.fields.len());
                }
                self.fields.push((start..mid, mid..end));
            }
        }
        Ok(())
    }
}

/// A dynamic table entry.
#[derive(Clone, Debug)]
enum Entry {
    /// Name then value, in one allocation.
    Known { bytes: Box<[u8]>, name_len: usize },
    /// Inserted with a name the decoder did not know.
    Unknown,
}

/// The dynamic table (RFC 7541 §2.3.2, §4), newest entry first.
#[derive(Clone, Debug)]
struct Table {
    entries: VecDeque<(Entry, usize)>,
    /// Sum of the entries' sizes.
    size: usize,
    /// The current maximum size.
    max: usize,
}

impl Table {
    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            let Some((_, size)) = self.entries.pop_back() else {
                self.size = 0;
                break;
            };
            self.size = self.size.saturating_sub(size);
        }
    }

    fn insert(&mut self, entry: Entry, size: usize) {
        if size > self.max {
            // §4.4: the table is emptied and the entry not added.
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max - size);
        self.entries.push_front((entry, size));
        self.size += size;
    }
}

/// Where the decoder stands with respect to entries it never saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sync {
    /// Every entry the encoder holds is known.
    InStep,
    /// Entries inserted before `joined_at` (an insertion count) may still
    /// be in the encoder's table; `max_known` tells whether the table's
    /// current maximum is known (a size update was seen since).
    Joined { joined_at: u64, max_known: bool },
}

/// An HPACK decoder for one direction of a connection (see the module
/// documentation).
#[derive(Clone, Debug)]
pub struct Decoder {
    limits: DecoderLimits,
    table: Table,
    sync: Sync,
    inserted: u64,
    /// Reused from block to block.
    scratch: Scratch,
}

impl Decoder {
    /// A decoder that sees the connection from its start.
    pub fn new(limits: DecoderLimits) -> Self {
        Self {
            limits,
            table: Table {
                entries: VecDeque::new(),
                size: 0,
                max: limits.max_table_size,
            },
            sync: Sync::InStep,
            inserted: 0,
            scratch: Scratch::default(),
        }
    }

    /// A decoder that joins a connection already under way: the entries
    /// inserted before are unknown.
    pub fn joined(limits: DecoderLimits) -> Self {
        let mut decoder = Self::new(limits);
        // Nor is the table's current maximum known: a size update may have
        // set it before.
        decoder.sync = Sync::Joined {
            joined_at: 0,
            max_known: false,
        };
        decoder
    }

    /// Forgets the table: from now on the decoder is as if it had just
    /// joined the connection (after a header block was lost, for instance).
    pub fn desync(&mut self) {
        self.table.entries.clear();
        self.table.size = 0;
        let max_known = match self.sync {
            Sync::InStep => true,
            Sync::Joined { max_known, .. } => max_known,
        };
        self.sync = Sync::Joined {
            joined_at: self.inserted,
            max_known,
        };
    }

    /// Applies SETTINGS_HEADER_TABLE_SIZE as the decoding side advertised
    /// it (seen in the other direction): the bound on later size updates.
    /// The table's current maximum changes only with a size update (the
    /// encoder must send one in its next block after a reduction, §4.2),
    /// so that blocks encoded before the encoder saw the setting still
    /// decode.
    pub fn set_max_table_size(&mut self, max: usize) {
        self.limits.max_table_size = max;
    }

    /// The limits in force.
    pub fn limits(&self) -> DecoderLimits {
        self.limits
    }

    /// Entries inserted into the dynamic table since the decoder started
    /// (its absolute insertion count).
    pub fn inserted(&self) -> u64 {
        self.inserted
    }

    /// For a decoder that joined and is not yet in step: the insertion
    /// count from which entries are known. `None` when in step.
    pub fn known_since(&self) -> Option<u64> {
        match self.sync {
            Sync::InStep => None,
            Sync::Joined { joined_at, .. } => Some(joined_at),
        }
    }

    /// True when no entry unknown to the decoder can be in the encoder's
    /// table.
    pub fn in_step(&self) -> bool {
        self.sync == Sync::InStep
    }

    /// Entries in the dynamic table as the decoder holds it.
    pub fn table_len(&self) -> usize {
        self.table.entries.len()
    }

    /// Size of the dynamic table as the decoder holds it (§4.1).
    pub fn table_size(&self) -> usize {
        self.table.size
    }

    /// The dynamic table's current maximum size.
    pub fn table_max(&self) -> usize {
        self.table.max
    }

    /// Decodes one complete header block.
    pub fn decode(&mut self, block: &[u8]) -> Result<HeaderList, HpackError> {
        let mut list = HeaderList::new();
        self.decode_into(block, &mut list)?;
        Ok(list)
    }

    /// Decodes one complete header block into `list`, which is cleared
    /// first. On an error `list` holds what was decoded before it.
    pub fn decode_into(&mut self, block: &[u8], list: &mut HeaderList) -> Result<(), HpackError> {
        list.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.run(block, list, &mut scratch);
        self.scratch = scratch;
        match result {
            Ok(None) => Ok(()),
            Ok(Some(unknown)) => Err(unknown),
            Err(error) => {
                self.desync();
                Err(error)
            }
        }
    }

    /// Decodes the block; `Ok(Some(UnknownIndex))` when an unknown entry was
    /// named (the rest decoded).
    fn run(
        &mut self,
        block: &[u8],
        list: &mut HeaderList,
        scratch: &mut Scratch,
    ) -> Result<Option<HpackError>, HpackError> {
        let mut input = Input { rest: block };
        let mut unknown = None;
        let mut fields_seen = false;
        let limit = self.limits.max_header_list_size;
        while let Some(&first) = input.rest.first() {
            if first & 0x80 != 0 {
                // §6.1 Indexed Header Field.
                fields_seen = true;
                let index = input.integer(7)?;
                match self.lookup(index)? {
                    Lookup::Static(name, value) => {
                        list.push(name.as_bytes(), value.as_bytes(), limit)?
                    }
                    Lookup::Dynamic(name, value) => list.push(name, value, limit)?,
                    Lookup::Unknown => {
                        unknown.get_or_insert(HpackError::UnknownIndex { index });
                    }
                }
            } else if first & 0xe0 == 0x20 {
                // §6.3 Dynamic Table Size Update.
                if fields_seen {
                    return Err(HpackError::MisplacedSizeUpdate);
                }
                let size = input.integer(5)? as usize;
                self.size_update(size)?;
            } else {
                // §6.2 Literal Header Field: with incremental indexing
                // (01), without indexing (0000), never indexed (0001).
                fields_seen = true;
                let (indexing, prefix) = if first & 0x40 != 0 {
                    (true, 6)
                } else {
                    (false, 4)
                };
                let index = input.integer(prefix)?;
                let name_known = if index == 0 {
                    input.string(&mut scratch.name, limit)?;
                    true
                } else {
                    match self.lookup(index)? {
                        Lookup::Static(name, _) => {
                            scratch.name.clear();
                            scratch.name.extend_from_slice(name.as_bytes());
                            true
                        }
                        Lookup::Dynamic(name, _) => {
                            scratch.name.clear();
                            scratch.name.extend_from_slice(name);
                            true
                        }
                        Lookup::Unknown => {
                            unknown.get_or_insert(HpackError::UnknownIndex { index });
                            scratch.name.clear();
                            false
                        }
                    }
                };
                input.string(&mut scratch.value, limit)?;
                if name_known {
                    let never_indexed = first & 0xf0 == 0x10;
                    list.push_field(&scratch.name, &scratch.value, never_indexed, limit)?;
                }
                if indexing {
                    self.insert(name_known, &scratch.name, &scratch.value);
                }
            }
        }
        Ok(unknown)
    }

    fn lookup(&self, index: u32) -> Result<Lookup<'_>, HpackError> {
        let i = index as usize;
        if i == 0 {
            return Err(HpackError::InvalidIndex { index });
        }
        if let Some(&(name, value)) = STATIC_TABLE.get(i - 1) {
            return Ok(Lookup::Static(name, value));
        }
        match self.table.entries.get(i - 1 - STATIC_LEN) {
            Some((Entry::Known { bytes, name_len }, _)) => {
                let (name, value) = bytes.split_at((*name_len).min(bytes.len()));
                Ok(Lookup::Dynamic(name, value))
            }
            Some((Entry::Unknown, _)) => Ok(Lookup::Unknown),
            None if self.in_step() => Err(HpackError::InvalidIndex { index }),
            None => Ok(Lookup::Unknown),
        }
    }

    fn size_update(&mut self, size: usize) -> Result<(), HpackError> {
        if size > self.limits.max_table_size {
            return Err(HpackError::TableSizeTooLarge {
                size,
                max: self.limits.max_table_size,
            });
        }
        self.table.max = size;
        self.table.evict_to(size);
        if let Sync::Joined { joined_at, .. } = self.sync {
            self.sync = Sync::Joined {
                joined_at,
                max_known: true,
            };
            self.check_step();
        }
        Ok(())
    }

    fn insert(&mut self, name_known: bool, name: &[u8], value: &[u8]) {
        self.inserted += 1;
        let size = if name_known {
            name.len() + value.len() + ENTRY_OVERHEAD
        } else {
            // The name's length is unknown: the smallest size it could
            // have, so that the table keeps at least the encoder's entries.
            value.len() + ENTRY_OVERHEAD
        };
        let emptied = size > self.table.max;
        let entry = if emptied || !name_known {
            // Not kept (§4.4), or unknown: nothing to copy.
            Entry::Unknown
        } else {
            Entry::Known {
                bytes: [name, value].concat().into_boxed_slice(),
                name_len: name.len(),
            }
        };
        self.table.insert(entry, size);
        if let Sync::Joined {
            max_known: true, ..
        } = self.sync
        {
            if emptied {
                self.sync = Sync::InStep;
            } else {
                self.check_step();
            }
        }
    }

    /// A joined decoder whose known maximum leaves no room for an unknown
    /// entry is in step.
    fn check_step(&mut self) {
        if let Sync::Joined {
            max_known: true, ..
        } = self.sync
            && self.table.size + ENTRY_OVERHEAD > self.table.max
        {
            self.sync = Sync::InStep;
        }
    }
}

/// What an index names.
enum Lookup<'t> {
    Static(&'static str, &'static str),
    Dynamic(&'t [u8], &'t [u8]),
    /// An entry the decoder does not know.
    Unknown,
}

/// Buffers for a field's name and value while it is decoded.
#[derive(Clone, Debug, Default)]
struct Scratch {
    name: Vec<u8>,
    value: Vec<u8>,
}

/// The rest of a header block.
struct Input<'a> {
    rest: &'a [u8],
}

impl Input<'_> {
    /// An integer with an `n`-bit prefix (§5.1), at most `u32::MAX`.
    fn integer(&mut self, n: u32) -> Result<u32, HpackError> {
        let (&first, mut rest) = self.rest.split_first().ok_or(HpackError::Truncated)?;
        let max_prefix = (1u32 << n) - 1;
        let mut value = u32::from(first) & max_prefix;
        if value == max_prefix {
            let mut shift = 0u32;
            loop {
                let (&byte, tail) = rest.split_first().ok_or(HpackError::Truncated)?;
                rest = tail;
                let add = u64::from(byte & 0x7f) << shift;
                let sum = u64::from(value) + add;
                value = u32::try_from(sum).map_err(|_| HpackError::IntegerOverflow)?;
                if byte & 0x80 == 0 {
                    break;
                }
                shift += 7;
                if shift > 28 {
                    return Err(HpackError::IntegerOverflow);
                }
            }
        }
        self.rest = rest;
        Ok(value)
    }

    /// A string literal (§5.2) into `out` (cleared first). Its length is
    /// checked against `limit` before it is read.
    fn string(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), HpackError> {
        out.clear();
        let huffman = self.rest.first().is_some_and(|b| b & 0x80 != 0);
        let len = self.integer(7)? as usize;
        if len > self.rest.len() {
            return Err(HpackError::Truncated);
        }
        if len > limit {
            return Err(HpackError::HeaderListTooLarge { limit });
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        if huffman {
            huffman::decode(bytes, out)?;
            if out.len() > limit {
                return Err(HpackError::HeaderListTooLarge { limit });
            }
        } else {
            out.extend_from_slice(bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
