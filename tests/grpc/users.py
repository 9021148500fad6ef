"""The `shadow.users.v1.Users` service loaded from a descriptor set, shared
by `server.py` and `client.py`: message classes built at run time from the
set (`protoc --descriptor_set_out --include_imports`), no generated stubs."""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "shadow.users.v1.Users"

# Method name -> (request type, response type, server-streaming).
METHODS = {
    "Get": ("GetUserRequest", "User", False),
    "List": ("ListUsersRequest", "User", True),
    "Create": ("CreateUserRequest", "User", False),
    "GetMany": ("GetUserRequest", "UserList", False),
    "Chat": ("GetUserRequest", "User", True),
}


def load(path):
    """The message classes of the descriptor set at `path`, by short name."""
    fds = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    service = pool.FindServiceByName(SERVICE)
    classes = {}
    for method in service.methods:
        for desc in (method.input_type, method.output_type):
            classes[desc.name] = message_class(pool, desc)
    # Every method the scripts drive must be in the descriptor.
    for name in METHODS:
        service.FindMethodByName(name)
    return classes


def message_class(pool, desc):
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


def path(method):
    return f"/{SERVICE}/{method}"
