"""
An example protobuf service: its handler takes and returns generated message
classes (``stats_pb2``, from ``stats.proto``), so ``application/protobuf``
carries them as themselves, and the other codecs as proto3 JSON maps.

Serve it beside the example services (from the repository root)::

    twistd -n geerpc --service txgeerpc.examples:Arith \\
        --service examples.protobuf.stats_service:Stats

and call it with any codec but gob::

    python -m txgeerpc call --codec protobuf tcp@127.0.0.1:7001 Stats.Summarize \\
        '{"label":"week","values":[3,1,4]}'
"""

from __future__ import annotations

from examples.protobuf.stats_pb2 import Numbers, Summary


class Stats:
    """``Stats.Summarize``: count, total and mean of some numbers."""

    def Summarize(self, numbers: Numbers) -> Summary:
        values = list(numbers.values)
        if not values:
            raise ValueError("no numbers to summarize")
        total = sum(values)
        return Summary(
            label=numbers.label, count=len(values), total=total, mean=total / len(values)
        )
