//! The incremental HTTP/1.x parsers over arbitrary bytes, split at
//! arbitrary points.
//!
//! Input: `mode:u8 nsplits:u8 (split:u16le){nsplits} data…`. `mode` bit 0
//! picks the parser (request / response), bits 1..3 the method the
//! responses answer (GET, HEAD, CONNECT, POST), bits 3..5 the limits. The
//! data is parsed twice: pushed whole, and pushed in pieces cut at the
//! split offsets, draining every complete message after each push.
//!
//! Checked: no panic; the two runs yield the same messages and the same
//! errors in the same order, the same final state and, for responses, the
//! same result at the end of the stream; between calls a parser holds no
//! more than its limits allow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parallelrun_agent::{
    http::{HttpError, HttpLimits, RequestParser, ResponseParser},
    model::{Request, Response},
};

/// What one parser produced, in order.
#[derive(Debug, PartialEq)]
enum Item {
    Request(Request),
    Response(Response),
    Error(HttpError),
}

/// The result of one run.
#[derive(Debug, PartialEq)]
struct Run {
    items: Vec<Item>,
    /// For responses: what `finish` said at the end of the stream.
    end: Vec<Item>,
    in_message: bool,
}

trait Parser {
    fn push(&mut self, bytes: &[u8]);
    /// The next item; `None` when more bytes are needed.
    fn step(&mut self) -> Option<Item>;
    fn end(&mut self) -> Vec<Item>;
    fn buffered(&self) -> usize;
    fn in_message(&self) -> bool;
}

struct Req(RequestParser);

impl Parser for Req {
    fn push(&mut self, bytes: &[u8]) {
        self.0.push(bytes);
    }
    fn step(&mut self) -> Option<Item> {
        match self.0.next() {
            Ok(Some(r)) => Some(Item::Request(r)),
            Ok(None) => None,
            Err(e) => Some(Item::Error(e)),
        }
    }
    fn end(&mut self) -> Vec<Item> {
        Vec::new()
    }
    fn buffered(&self) -> usize {
        self.0.buffered()
    }
    fn in_message(&self) -> bool {
        self.0.in_message()
    }
}

struct Resp(ResponseParser, &'static str);

impl Parser for Resp {
    fn push(&mut self, bytes: &[u8]) {
        self.0.push(bytes);
    }
    fn step(&mut self) -> Option<Item> {
        match self.0.next(self.1) {
            Ok(Some(r)) => Some(Item::Response(r)),
            Ok(None) => None,
            Err(e) => Some(Item::Error(e)),
        }
    }
    fn end(&mut self) -> Vec<Item> {
        let mut out = Vec::new();
        // A complete response still buffered comes first; bounded loop.
        for _ in 0..64 {
            match self.0.finish(self.1) {
                Ok(Some(r)) => out.push(Item::Response(r)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Item::Error(e));
                    break;
                }
            }
        }
        out
    }
    fn buffered(&self) -> usize {
        self.0.buffered()
    }
    fn in_message(&self) -> bool {
        self.0.in_message()
    }
}

/// Drains every item available now. A failed parser repeats its error
/// forever: one copy is kept, and the run stops there.
fn drain(p: &mut dyn Parser, items: &mut Vec<Item>, limits: &HttpLimits) -> bool {
    loop {
        match p.step() {
            Some(Item::Error(e)) => {
                let recoverable = e.is_recoverable();
                items.push(Item::Error(e));
                if !recoverable {
                    return false;
                }
            }
            Some(item) => items.push(item),
            None => {
                // Between calls: at most a head, a body so far and one
                // chunk-size line or trailer section.
                let bound = 2 * limits.max_head + limits.max_body;
                assert!(
                    p.buffered() <= bound,
                    "{} bytes held, limits {limits:?}",
                    p.buffered()
                );
                return true;
            }
        }
    }
}

fn parse(
    new: impl Fn() -> Box<dyn Parser>,
    data: &[u8],
    cuts: &[usize],
    limits: &HttpLimits,
) -> Run {
    let mut p = new();
    let mut items = Vec::new();
    let mut alive = true;
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&data.len())) {
        p.push(&data[from..to]);
        from = to;
        if alive {
            alive = drain(p.as_mut(), &mut items, limits);
        }
    }
    let end = if alive { p.end() } else { Vec::new() };
    Run {
        items,
        end,
        in_message: p.in_message(),
    }
}

fuzz_target!(|input: &[u8]| {
    let [mode, n, rest @ ..] = input else { return };
    let n = usize::from(*n % 9);
    if rest.len() < 2 * n {
        return;
    }
    let (splits, data) = rest.split_at(2 * n);
    let mut cuts: Vec<usize> = splits
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (data.len() + 1))
        .collect();
    cuts.sort_unstable();
    let limits = match (mode >> 3) & 3 {
        0 => HttpLimits {
            max_head: 64,
            max_headers: 4,
            max_body: 32,
        },
        1 => HttpLimits {
            max_head: 256,
            max_headers: 8,
            max_body: 256,
        },
        2 => HttpLimits {
            max_head: 1024,
            max_headers: 16,
            max_body: 4096,
        },
        _ => HttpLimits {
            max_head: 40,
            max_headers: 2,
            max_body: 1,
        },
    };
    let method = ["GET", "HEAD", "CONNECT", "POST"][usize::from((mode >> 1) & 3)];
    let new = move || -> Box<dyn Parser> {
        if mode & 1 == 0 {
            Box::new(Req(RequestParser::new(limits)))
        } else {
            Box::new(Resp(ResponseParser::new(limits), method))
        }
    };
    let whole = parse(new, data, &[], &limits);
    let split = parse(new, data, &cuts, &limits);
    assert_eq!(whole, split, "cuts {cuts:?}");
});
