#!/usr/bin/python3
"""A real gRPC server (grpcio) for `shadow.users.v1.Users`, in one of three
flavors:

- `old`: the service being shadowed;
- `secondary`: another instance of the old version;
- `new`: the new version, which deliberately changes one nested field,
  `profile.address.city`, in every Get and List answer (Create is the same).

Answers are computed from the request, except `trace_id`, random in every
answer of every flavor: old and secondary differ there only (noise). Get
with id 0 is answered with NOT_FOUND.

Responses are gzip-compressed when the client sends its requests
compressed (`grpc-encoding: gzip`) or, for every call, with `--gzip`.

Prints "ready" on stdout once it listens. Run it with Debian's
/usr/bin/python3 (python3-grpcio, python3-protobuf).
"""

import argparse
import signal
import sys
import uuid
import zlib
from concurrent import futures

import grpc

import users

CITIES = ["Lyon", "Nantes", "Lille", "Rennes", "Dijon"]


def build_user(classes, flavor, uid, name=None, tags=None):
    user = classes["User"]()
    user.id = uid
    user.name = name if name is not None else f"user-{uid}"
    user.email = f"{user.name}@example.test"
    user.tags.extend(tags if tags is not None else [f"t{uid % 3}", f"g{uid % 5}"][: 1 + uid % 2])
    user.profile.level = uid % 10
    user.profile.display_name = user.name.upper()
    user.profile.address.street = f"{uid} rue du Test"
    user.profile.address.zip = 10000 + uid
    user.profile.address.city = CITIES[uid % len(CITIES)]
    if flavor == "new":
        user.profile.address.city += " (new)"
    user.trace_id = uuid.uuid4().hex
    user.bio = f"{user.name} writes tests for the shadow. " * 12
    return user


def compress_if_asked(context, always):
    # The request's grpc-encoding is not in the metadata grpcio exposes;
    # the client announces it in `x-shadow-gzip` too.
    asked = any(k == "x-shadow-gzip" for k, _ in context.invocation_metadata())
    if always or asked:
        context.set_compression(grpc.Compression.Gzip)


def handlers(classes, flavor, always_gzip):
    def get(request, context):
        compress_if_asked(context, always_gzip)
        if request.id == 0:
            context.abort(grpc.StatusCode.NOT_FOUND, "no user 0")
        return build_user(classes, flavor, request.id)

    def list_(request, context):
        compress_if_asked(context, always_gzip)
        for uid in range(request.first_id, request.first_id + request.count):
            yield build_user(classes, flavor, uid)

    def create(request, context):
        compress_if_asked(context, always_gzip)
        uid = 1000 + zlib.crc32(request.name.encode()) % 1000
        tags = list(request.tags) or ["created"]
        return build_user(classes, "old", uid, name=request.name, tags=tags)

    def get_many(requests, context):
        compress_if_asked(context, always_gzip)
        answer = classes["UserList"]()
        answer.users.extend(build_user(classes, flavor, r.id) for r in requests)
        return answer

    def chat(requests, context):
        compress_if_asked(context, always_gzip)
        for r in requests:
            yield build_user(classes, flavor, r.id)

    def unary(fn, req):
        return grpc.unary_unary_rpc_method_handler(
            fn,
            request_deserializer=classes[req].FromString,
            response_serializer=classes["User"].SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        users.SERVICE,
        {
            "Get": unary(get, "GetUserRequest"),
            "List": grpc.unary_stream_rpc_method_handler(
                list_,
                request_deserializer=classes["ListUsersRequest"].FromString,
                response_serializer=classes["User"].SerializeToString,
            ),
            "Create": unary(create, "CreateUserRequest"),
            "GetMany": grpc.stream_unary_rpc_method_handler(
                get_many,
                request_deserializer=classes["GetUserRequest"].FromString,
                response_serializer=classes["UserList"].SerializeToString,
            ),
            "Chat": grpc.stream_stream_rpc_method_handler(
                chat,
                request_deserializer=classes["GetUserRequest"].FromString,
                response_serializer=classes["User"].SerializeToString,
            ),
        },
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--flavor", choices=["old", "new", "secondary"], required=True)
    p.add_argument("--descriptor", required=True, help="descriptor set of users.proto")
    p.add_argument("--gzip", action="store_true", help="compress every response")
    args = p.parse_args()

    classes = users.load(args.descriptor)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handlers(classes, args.flavor, args.gzip),))
    host = f"[{args.host}]" if ":" in args.host else args.host
    if server.add_insecure_port(f"{host}:{args.port}") == 0:
        sys.exit(f"cannot listen on {host}:{args.port}")
    server.start()
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


if __name__ == "__main__":
    main()
