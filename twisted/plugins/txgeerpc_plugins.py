from twisted.application.service import ServiceMaker

geerpc = ServiceMaker(
    "txgeerpc server",
    "txgeerpc.tap",
    "Serve GeeRPC services (python -m txgeerpc call ... to call them).",
    "geerpc",
)

geerpc_registry = ServiceMaker(
    "txgeerpc registry",
    "txgeerpc.registry_tap",
    "Serve a GeeRPC registry (servers heartbeat to it, clients discover through it).",
    "geerpc-registry",
)
