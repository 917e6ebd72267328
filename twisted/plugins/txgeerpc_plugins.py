from twisted.application.service import ServiceMaker

geerpc = ServiceMaker(
    "txgeerpc server",
    "txgeerpc.tap",
    "Serve GeeRPC services (python -m txgeerpc call ... to call them).",
    "geerpc",
)
