#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets:

- reassembly_http: real HTTP/1.1 conversations encoded as
  `op seq:u16le ack:u16le len payload` segments;
- http_parse: `mode nsplits split:u16le... data` (see the target);
- diff: limits, three responses and a target (see the target);
- http2_streams: HTTP/2 conversations as `mode` and `op len bytes` chunks
  (see the target).
"""
import os, random, struct, zlib

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
OUT = os.path.join(CORPUS, "reassembly_http")

def seg(direction, kind, seq, ack, payload=b""):
    op = direction | (kind << 1)
    return bytes([op]) + struct.pack("<HH", seq & 0xFFFF, ack & 0xFFFF) + bytes([len(payload)]) + payload

def conversation(reqs, resps, cut=40, shuffle=False, dup=False, seed=0):
    rnd = random.Random(seed)
    out = [seg(0, 1, 0, 0), seg(1, 1, 0, 1)]
    data = []
    cseq, sseq = 1, 1
    for rq, rs in zip(reqs, resps):
        for i in range(0, len(rq), cut):
            data.append(seg(0, 0, cseq + i, sseq, rq[i:i + cut]))
        cseq += len(rq)
        for i in range(0, len(rs), cut):
            data.append(seg(1, 0, sseq + i, cseq, rs[i:i + cut]))
        sseq += len(rs)
    if shuffle:
        rnd.shuffle(data)
    if dup:
        data += rnd.sample(data, min(3, len(data)))
    out += data + [seg(0, 2, cseq, sseq), seg(1, 2, sseq, cseq + 1)]
    return b"".join(out)

GET = b"GET /users/7 HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"id\":7}"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n"
HEAD = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
NOBODY = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
NOTMOD = b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n"
POST = b"POST /o HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody"
CONT = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
UP = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
SW = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"

seeds = {
    "keepalive": conversation([GET, GET], [OK, OK]),
    "pipelined": conversation([GET + GET + HEAD], [OK + OK + NOBODY], cut=17),
    "chunked": conversation([GET], [CHUNKED], cut=7),
    "head_304": conversation([HEAD, GET], [NOBODY, NOTMOD]),
    "continue": conversation([POST], [CONT]),
    "upgrade": conversation([UP], [SW]),
    "shuffled": conversation([GET, GET, GET], [OK, CHUNKED, OK], cut=9, shuffle=True, dup=True, seed=1),
}
def write(target, seeds):
    out = os.path.join(CORPUS, target)
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds to {out}")

write("reassembly_http", seeds)

# http_parse: mode bit 0 = response parser, bits 1..3 = method answered
# (GET, HEAD, CONNECT, POST), bits 3..5 = limits (0: head 64 / body 32,
# 1: 256 / 256, 2: 1024 / 4096, 3: 40 / 1).
def parse_seed(response, data, splits=(), method=0, limits=2):
    mode = (1 if response else 0) | (method << 1) | (limits << 3)
    return bytes([mode, len(splits)]) + b"".join(struct.pack("<H", x) for x in splits) + data

CHUNKED_TRAILER = (b"HTTP/1.1 200 OK\r\ntransfer-ENCODING: gzip, chunked\r\n\r\n"
                   b"4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n")
write("http_parse", {
    "requests_keepalive": parse_seed(False, GET + POST + HEAD, splits=(3, 40, 41, 90)),
    "request_chunked": parse_seed(False, b"PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.0\r\n\r\n", splits=(10, 50, 52)),
    "request_blank_lines": parse_seed(False, b"\r\n\r\n" + GET, splits=(1, 2, 3)),
    "request_bad_cl": parse_seed(False, b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    "request_too_big": parse_seed(False, b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"x" * 100 + GET,
                                  limits=0, splits=(20, 60)),
    "responses": parse_seed(True, OK + CHUNKED + NOTMOD, splits=(5, 60, 61, 62)),
    "response_trailers": parse_seed(True, CHUNKED_TRAILER, splits=(30, 31, 70)),
    "response_continue": parse_seed(True, CONT + b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK,
                                    method=3, splits=(10,)),
    "response_head": parse_seed(True, NOBODY + NOBODY, method=1),
    "response_close_delimited": parse_seed(True, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
                                           splits=(12, 40)),
    "response_upgrade": parse_seed(True, SW),
    "response_connect": parse_seed(True, b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01", method=2),
    "response_too_big": parse_seed(True, b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + b"y" * 40 + OK,
                                   limits=0, splits=(7,)),
})

# diff: max_value_len, max_differences, log max_value_len; then old, new,
# secondary as `status:u16le nheaders (name len value)... coding len:u16le
# body`; then the target. Header names index this list (as in the target):
NAMES = ["Content-Type", "content-encoding", "Set-Cookie", "Authorization", "X-Api-Key", "ETag",
         "Date", "X-Custom", "x-custom", "Cookie", "X-Secret", "Content-Length"]
TYPES = {"json": 0, "text": 1, "binary": 2}

def resp(status, headers, body, coding=0):
    out = struct.pack("<H", status - 100) + bytes([len(headers)])
    for name, value in headers:
        if name == "Content-Type" and value in TYPES:
            out += bytes([NAMES.index(name), TYPES[value]])
        else:
            out += bytes([NAMES.index(name), len(value)]) + value
    return out + bytes([coding]) + struct.pack("<H", len(body)) + body

def diff_seed(old, new, secondary, target, limits=(60, 7, 60)):
    return bytes(limits) + old + new + secondary + target

USER = b'{"id":7,"plan":"basic","tags":["a","b"],"a":{"x":1},"b":{"c":[1,2]}}'
USER_NEW = b'{"id":7,"plan":"premium","tags":["a"],"a":{"x":2},"b":{"c":[3]},"extra":null}'
JSON = [("Content-Type", "json")]
write("diff", {
    "json": diff_seed(resp(200, JSON, USER), resp(200, JSON, USER_NEW), resp(200, JSON, USER),
                      b"/users/7?token=abc&page=2"),
    "json_gzip_vs_plain": diff_seed(resp(200, JSON, USER, coding=1), resp(200, JSON, USER_NEW),
                                    resp(200, JSON, USER, coding=2), b"/users/7"),
    "status_and_secrets": diff_seed(
        resp(200, [("Set-Cookie", b"sid=1"), ("Authorization", b"Bearer a"), ("X-Api-Key", b"k1"),
                   ("X-Secret", b"s1")], b"ok"),
        resp(500, [("Set-Cookie", b"other=2"), ("Authorization", b"Bearer b"), ("X-Api-Key", b"k2"),
                   ("X-Secret", b"s2")], b"error"),
        resp(200, [("Set-Cookie", b"sid=3")], b"ok"),
        b"/login?password=hunter2&api_key=xyz&session=&x=1#frag"),
    "text_lines": diff_seed(resp(200, [("Content-Type", "text")], b"a\nb\nc\nd\n"),
                            resp(200, [("Content-Type", "text")], b"a\nB\nc\r\nd"),
                            resp(200, [("Content-Type", "text")], b"a\nb\nc\nd\n"), b"/t"),
    "binary": diff_seed(resp(200, [("Content-Type", "binary")], bytes(range(256))),
                        resp(200, [("Content-Type", "binary")], bytes(range(255, -1, -1))),
                        resp(200, [], b""), b"/bin"),
    "undecodable": diff_seed(resp(200, [("content-encoding", b"gzip")], b"not gzip"),
                             resp(200, [("content-encoding", b"br, identity")], zlib.compress(b"x" * 100)),
                             resp(200, [("content-encoding", b"bogus")], b"?"), b"/enc"),
    "small_limits": diff_seed(resp(200, JSON, USER), resp(201, JSON, USER_NEW), resp(200, JSON, USER_NEW),
                              "/é?signature=%E2%82%AC&Token=1".encode(), limits=(4, 1, 8)),
})

# http2_streams: `mode`, then chunks `op len bytes` (see the target).
def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload

def h2_str(s):
    assert len(s) < 127
    return bytes([len(s)]) + s

def h2_fields(pairs, index=False):
    return b"".join((b"\x40" if index else b"\x00") + h2_str(n) + h2_str(v) for n, v in pairs)

def h2_chunks(items):
    out = b""
    for op, data in items:
        for i in range(0, max(len(data), 1), 255):
            part = data[i:i + 255]
            out += bytes([op, len(part)]) + part
    return out

H2_SETTINGS = h2_frame(4, 0, 0, struct.pack(">HI", 1, 4096))
H2_GET = h2_fields([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/users/7"),
                    (b":authority", b"svc")], index=True)
H2_GRPC = h2_fields([(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/u.Users/Get"),
                     (b"content-type", b"application/grpc"), (b"te", b"trailers")])
H2_OK = h2_fields([(b":status", b"200"), (b"content-type", b"application/json")], index=True)
H2_TRAILERS = h2_fields([(b"grpc-status", b"0")])
H2_MSG = b"\x00\x00\x00\x00\x02\x08\x07"
write("http2_streams", {
    "get_and_grpc": b"\x00" + h2_chunks([
        (0, H2_SETTINGS + h2_frame(1, 5, 1, H2_GET)),
        (0, h2_frame(1, 4, 3, H2_GRPC) + h2_frame(0, 1, 3, H2_MSG)),
        (1, H2_SETTINGS + h2_frame(1, 4, 3, H2_OK) + h2_frame(0, 0, 3, H2_MSG)),
        (1, h2_frame(1, 5, 3, H2_TRAILERS) + h2_frame(1, 4, 1, H2_OK)),
        (5, h2_frame(0, 1, 1, b'{"id":7}')),
        (0, h2_frame(1, 5, 5, b"\xbe") + h2_frame(3, 0, 5, b"\x00\x00\x00\x08")),
    ]),
    "joined_with_gap": b"\x03" + h2_chunks([
        (0, h2_frame(1, 5, 9, b"\xbe" + H2_GET)),
        (1, b"middle of a frame"),
        (1, h2_frame(1, 4, 9, H2_OK) + h2_frame(0, 1, 9, b"x" * 300)),
        (2, h2_frame(1, 5, 11, H2_GET)),
        (1, h2_frame(1, 5, 11, H2_OK)),
    ]),
})
