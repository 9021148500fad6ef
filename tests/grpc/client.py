#!/usr/bin/python3
"""A real gRPC client (grpcio) for `shadow.users.v1.Users`: every call on
one channel, hence one TCP connection (one HTTP/2 connection, a stream per
call). Get ids 1..N, List M times (each `--list-size` users from id 1),
Create K users named new-1..new-K, one client-streaming GetMany of ids
1..`--get-many` and one bidirectional Chat of ids 1..`--chat`, then
`--missing` Gets of id 0, which the server answers with NOT_FOUND. Calls run one after the other, or all
at once with `--concurrent` (concurrent streams on the connection).

Prints a JSON summary on stdout: the counts, and every answer decoded with
json_format (field names as in the .proto), and the status of each
`--missing` call. Exits non-zero on any other RPC error, or when a
`--missing` call does not end in NOT_FOUND.
Run it with Debian's /usr/bin/python3.
"""

import argparse
import json
import sys

import grpc
from google.protobuf import json_format

import users


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="HOST:PORT")
    p.add_argument("--descriptor", required=True, help="descriptor set of users.proto")
    p.add_argument("--get", type=int, default=0)
    p.add_argument("--list", type=int, default=0)
    p.add_argument("--list-size", type=int, default=3)
    p.add_argument("--create", type=int, default=0)
    p.add_argument("--missing", type=int, default=0, help="Gets of id 0, answered NOT_FOUND")
    p.add_argument("--get-many", type=int, default=0, help="one client-streaming call asking for ids 1..N")
    p.add_argument("--chat", type=int, default=0, help="one bidirectional call asking for ids 1..N")
    p.add_argument("--gzip", action="store_true", help="compress requests, ask for compressed answers")
    p.add_argument("--concurrent", action="store_true", help="start every call before reading any answer")
    p.add_argument("--timeout", type=float, default=10.0, help="per-call deadline, seconds")
    args = p.parse_args()

    classes = users.load(args.descriptor)
    user = classes["User"]
    compression = grpc.Compression.Gzip if args.gzip else grpc.Compression.NoCompression
    metadata = [("x-shadow-gzip", "1")] if args.gzip else None
    to_dict = lambda m: json_format.MessageToDict(m, preserving_proto_field_name=True)

    # Straight to the target, whatever proxy the environment names.
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(args.target, options=options, compression=compression) as channel:
        grpc.channel_ready_future(channel).result(timeout=args.timeout)

        def unary(method, req_type):
            return channel.unary_unary(
                users.path(method),
                request_serializer=classes[req_type].SerializeToString,
                response_deserializer=user.FromString,
            )

        get = unary("Get", "GetUserRequest")
        create = unary("Create", "CreateUserRequest")
        list_ = channel.unary_stream(
            users.path("List"),
            request_serializer=classes["ListUsersRequest"].SerializeToString,
            response_deserializer=user.FromString,
        )
        opts = dict(timeout=args.timeout, metadata=metadata)
        get_many = channel.stream_unary(
            users.path("GetMany"),
            request_serializer=classes["GetUserRequest"].SerializeToString,
            response_deserializer=classes["UserList"].FromString,
        )
        chat = channel.stream_stream(
            users.path("Chat"),
            request_serializer=classes["GetUserRequest"].SerializeToString,
            response_deserializer=user.FromString,
        )
        ids = lambda n: (classes["GetUserRequest"](id=i) for i in range(1, n + 1))

        try:
            gets = [classes["GetUserRequest"](id=i) for i in range(1, args.get + 1)]
            lists = [classes["ListUsersRequest"](first_id=1, count=args.list_size) for _ in range(args.list)]
            creates = [
                classes["CreateUserRequest"](name=f"new-{i}", tags=[f"k{i}"]) for i in range(1, args.create + 1)
            ]
            if args.concurrent:
                get_f = [get.future(r, **opts) for r in gets]
                list_it = [list_(r, **opts) for r in lists]
                create_f = [create.future(r, **opts) for r in creates]
                got = [f.result() for f in get_f]
                listed = [list(it) for it in list_it]
                created = [f.result() for f in create_f]
            else:
                got = [get(r, **opts) for r in gets]
                listed = [list(list_(r, **opts)) for r in lists]
                created = [create(r, **opts) for r in creates]
            many = [get_many(ids(args.get_many), **opts)] if args.get_many else []
            chatted = [list(chat(ids(args.chat), **opts))] if args.chat else []
        except grpc.RpcError as e:
            sys.exit(f"RPC failed: {e.code()}: {e.details()}")
        missing = []
        for _ in range(args.missing):
            try:
                u = get(classes["GetUserRequest"](id=0), **opts)
                sys.exit(f"Get of id 0 answered {to_dict(u)} instead of NOT_FOUND")
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    sys.exit(f"Get of id 0 failed with {e.code()}: {e.details()}, not NOT_FOUND")
                missing.append({"code": e.code().name, "value": e.code().value[0], "details": e.details()})

    summary = {
        "target": args.target,
        "gzip": args.gzip,
        "counts": {
            "get": len(got),
            "list": len(listed),
            "list_items": sum(len(l) for l in listed),
            "create": len(created),
            "missing": len(missing),
            "get_many": sum(len(m.users) for m in many),
            "chat": sum(len(c) for c in chatted),
            "calls": len(got) + len(listed) + len(created) + len(missing) + len(many) + len(chatted),
        },
        "get": [to_dict(u) for u in got],
        "list": [[to_dict(u) for u in l] for l in listed],
        "create": [to_dict(u) for u in created],
        "missing": missing,
        "get_many": [to_dict(m) for m in many],
        "chat": [[to_dict(u) for u in c] for c in chatted],
    }
    json.dump(summary, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
