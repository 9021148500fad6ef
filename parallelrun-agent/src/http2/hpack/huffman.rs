//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B), decoding only.
//!
//! The code of Appendix B is canonical: codes of one length are
//! consecutive and ordered by symbol, and the first code of each length
//! follows the last one of the length before (shifted by one bit). So the
//! whole code is fixed by the 257 code lengths of [`LENGTHS`], transcribed
//! from the appendix's `len` column; the codes themselves are derived from
//! them at compile time, and the tests check them against codes listed in
//! the appendix and that the code is complete (Kraft sum 1).
//!
//! Decoding reads a bit at a time and checks, at each length, whether the
//! bits so far are a code of that length (canonical decoding): no tree, no
//! allocation besides the output, and every input is either decoded or
//! rejected. The rules of §5.2 are enforced: the EOS symbol in a string is
//! an error, and so is padding longer than 7 bits or padding that is not
//! the most significant bits of EOS (all ones).

use thiserror::Error;

/// Code length in bits of each symbol 0..=255, and of EOS (256): RFC 7541
/// Appendix B.
pub(super) const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0..16
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16..32
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // ' '..'/'
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // '0'..'?'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // '@'..'O'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 'P'..'_'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // '`'..'o'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 'p'..127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128..144
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144..160
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160..176
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176..192
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192..208
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208..224
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224..240
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240..256
    30, // EOS
];

/// The end-of-string symbol.
const EOS: u16 = 256;

/// The longest code.
const MAX_LEN: usize = 30;

/// The canonical code's decoding tables.
struct Canonical {
    /// Number of codes of each length.
    count: [u16; MAX_LEN + 1],
    /// The first (smallest) code of each length.
    first: [u32; MAX_LEN + 1],
    /// Where the symbols of each length start in `symbols`.
    offset: [u16; MAX_LEN + 1],
    /// Symbols ordered by (length, symbol).
    symbols: [u16; 257],
}

const fn canonical() -> Canonical {
    let mut count = [0u16; MAX_LEN + 1];
    let mut i = 0;
    while i < LENGTHS.len() {
        count[LENGTHS[i] as usize] += 1;
        i += 1;
    }
    let mut first = [0u32; MAX_LEN + 1];
    let mut offset = [0u16; MAX_LEN + 1];
    let mut code = 0u32;
    let mut at = 0u16;
    let mut len = 1;
    while len <= MAX_LEN {
        code = (code + count[len - 1] as u32) << 1;
        first[len] = code;
        offset[len] = at;
        at += count[len];
        len += 1;
    }
    let mut symbols = [0u16; 257];
    let mut next = offset;
    let mut sym = 0;
    while sym < LENGTHS.len() {
        let len = LENGTHS[sym] as usize;
        symbols[next[len] as usize] = sym as u16;
        next[len] += 1;
        sym += 1;
    }
    Canonical {
        count,
        first,
        offset,
        symbols,
    }
}

static CODE: Canonical = canonical();

/// The code of `symbol` (0..=256) and its length: for the tests, and for
/// building Huffman-coded input.
#[cfg(test)]
pub(super) fn code_of(symbol: u16) -> Option<(u32, u8)> {
    let len = *LENGTHS.get(usize::from(symbol))?;
    let l = usize::from(len);
    let start = usize::from(*CODE.offset.get(l)?);
    let end = start + usize::from(*CODE.count.get(l)?);
    let rank = CODE
        .symbols
        .get(start..end)?
        .iter()
        .position(|&s| s == symbol)?;
    Some((CODE.first.get(l)? + rank as u32, len))
}

/// Why a Huffman-coded string is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum HuffmanError {
    /// The EOS symbol inside the string.
    #[error("EOS symbol inside a Huffman-coded string")]
    Eos,
    /// More than 7 bits of padding, or padding other than ones.
    #[error("invalid padding at the end of a Huffman-coded string")]
    Padding,
}

/// Appends the decoding of `input` to `out`.
pub(super) fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let mut code = 0u32;
    let mut len = 0usize;
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let (Some(&first), Some(&count)) = (CODE.first.get(len), CODE.count.get(len)) else {
                // Longer than any code: impossible for a complete code, but
                // rejected rather than trusted.
                return Err(HuffmanError::Padding);
            };
            if code >= first && code - first < u32::from(count) {
                let at = usize::from(CODE.offset.get(len).copied().unwrap_or_default())
                    + (code - first) as usize;
                match CODE.symbols.get(at).copied() {
                    Some(EOS) | None => return Err(HuffmanError::Eos),
                    // Symbols other than EOS are below 256.
                    Some(sym) => out.push(sym as u8),
                }
                code = 0;
                len = 0;
            }
        }
    }
    // Padding: at most 7 bits, all ones (a prefix of EOS).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(HuffmanError::Padding);
    }
    Ok(())
}

/// Huffman-codes `input` (for tests and fuzz seeds).
#[cfg(test)]
pub(super) fn encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u64;
    let mut bits = 0u32;
    for &b in input {
        let Some((code, len)) = code_of(u16::from(b)) else {
            continue;
        };
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
    }
    out
}
