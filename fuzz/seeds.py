#!/usr/bin/env python3
"""Writes the seed corpus of the reassembly_http fuzz target: real HTTP/1.1
conversations encoded as `op seq:u16le ack:u16le len payload` segments."""
import os, random, struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "reassembly_http")

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
os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {OUT}")
