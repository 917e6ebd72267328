"""
``txgeerpc.blocking`` and ``txgeerpc.aio`` used the wrong way, each in a
fresh Python process (they touch the process's one reactor): a clear
``RuntimeError``, never a hang.  No server is needed: each refusal comes first.
And the blocking XClient over a real registry.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests._processes import environment, start, stop, wait_for


def python(source: str) -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode, result.stdout, result.stderr


def test_blocking_refuses_a_program_running_its_own_reactor() -> None:
    assert python(
        """
        from twisted.internet import reactor
        from txgeerpc import blocking

        def main():
            try:
                blocking.connect("tcp@127.0.0.1:1")
            except RuntimeError as error:
                print(error)
            reactor.stop()

        reactor.callWhenRunning(main)
        reactor.run()
        """
    ) == (
        0,
        "a Twisted reactor already runs in this process: txgeerpc.blocking will not "
        "start a second one; use the Twisted API (txgeerpc.connect) in that program\n",
        "",
    )


def test_blocking_refuses_the_reactor_thread() -> None:
    # A blocking call made in the reactor's thread (as from a callback) would
    # wait for itself forever: it raises instead.
    status, out, err = python(
        """
        import queue
        from txgeerpc import blocking

        xclient = blocking.XClient.from_servers([])  # starts the reactor thread
        from twisted.internet import reactor

        told = queue.SimpleQueue()

        def inside():
            try:
                blocking.connect("tcp@127.0.0.1:1")
            except RuntimeError as error:
                told.put(str(error))

        reactor.callFromThread(inside)
        print(told.get(timeout=10))
        xclient.close()
        """
    )
    assert (status, err) == (0, "")
    assert out.startswith("txgeerpc.blocking was called in the reactor's own thread")


def test_blocking_errors_are_txgeerpc_errors_unwrapped() -> None:
    assert python(
        """
        from txgeerpc import blocking
        from txgeerpc.errors import ConnectFailed, NoServers

        try:
            blocking.connect("tcp@127.0.0.1:1", connect_timeout=5)
        except ConnectFailed as error:
            print("ConnectFailed")
        with blocking.XClient.from_servers([]) as xclient:
            try:
                xclient.call("Foo.Sum", {"Num1": 1, "Num2": 2}, timeout=0.1)
            except NoServers:
                print("NoServers")
        """
    ) == (0, "ConnectFailed\nNoServers\n", "")


def test_aio_refuses_another_reactor() -> None:
    status, out, err = python(
        """
        import asyncio
        import twisted.internet.reactor  # installs the default reactor
        from txgeerpc import aio

        async def main():
            try:
                await aio.connect("tcp@127.0.0.1:1")
            except RuntimeError as error:
                print(error)

        asyncio.run(main())
        """
    )
    assert (status, err) == (0, "")
    assert out.startswith("txgeerpc.aio needs Twisted's asyncio reactor, but this process")


def test_aio_works_on_one_loop() -> None:
    assert python(
        """
        import asyncio
        from txgeerpc import aio
        from txgeerpc.errors import ConnectFailed

        async def main():
            try:
                await aio.connect("tcp@127.0.0.1:1", connect_timeout=5)
            except (ConnectFailed, RuntimeError) as error:
                print(type(error).__name__)

        asyncio.run(main())
        asyncio.run(main())  # a second loop
        """
    ) == (0, "ConnectFailed\nRuntimeError\n", "")


def test_aio_without_a_running_loop() -> None:
    status, _, err = python(
        """
        from txgeerpc import aio
        aio.reactor()
        """
    )
    assert status == 1 and "RuntimeError: no running event loop" in err


def test_blocking_xclient_over_a_registry(tmp_path: Path) -> None:
    # A's embedded registry lists B, which heartbeats to it.
    a = start(tmp_path, "geerpc", "--listen", "tcp:0:interface=127.0.0.1")
    b = None
    try:
        registry = wait_for(a, rb"registry: (http://127\.0\.0\.1:\d+/_geerpc_/registry)")
        b = start(
            tmp_path,
            "geerpc",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--registry",
            registry,
            "--advertise",
            "tcp@127.0.0.1:0",
        )
        b_address = wait_for(b, rb"serving .* on (tcp@127\.0\.0\.1:\d+)")
        wait_for(a, rb"registry: tcp@127\.0\.0\.1:\d+ joined")
        status, out, err = python(
            f"""
            from txgeerpc import blocking

            with blocking.XClient.from_registry({registry!r}, connect_timeout=5) as xclient:
                print(xclient.call("Foo.Sum", {{"Num1": 1, "Num2": 2}}, timeout=5))
                print(xclient.broadcast("Foo.Sum", {{"Num1": 3, "Num2": 4}}, timeout=5))
                print(xclient.calls_sent)
            """
        )
        assert (status, err) == (0, "")
        assert out == f"3\n7\n{{{b_address!r}: 2}}\n"
    finally:
        if b is not None:
            stop(b)
        stop(a)


def test_blocking_and_aio_carry_metadata_and_trailers(tmp_path: Path) -> None:
    # One process each: the two APIs run different reactors.
    server = start(tmp_path, "geerpc", "--listen", "tcp:0:interface=127.0.0.1")
    try:
        address = wait_for(server, rb"serving .* on (tcp@127\.0\.0\.1:\d+)")
        blocking_run = python(
            f"""
            from txgeerpc import blocking

            trailers = {{}}
            with blocking.connect({address!r}) as client:
                info = client.call(
                    "Ctx.Info", {{}}, timeout=5, metadata={{"tenant": "acme"}}, trailers=trailers
                )
            print(info["Metadata"], info["HasBudget"], "budget-left" in trailers)
            """
        )
        aio_run = python(
            f"""
            import asyncio
            from txgeerpc import aio

            async def main():
                trailers = {{}}
                async with aio.connect({address!r}) as client:
                    info = await client.call(
                        "Ctx.Info", {{}}, metadata={{"tenant": "zeta"}}, trailers=trailers
                    )
                print(info["Metadata"], info["HasBudget"], "budget-left" in trailers)

            asyncio.run(main())
            """
        )
    finally:
        stop(server)
    assert blocking_run == (0, "{'tenant': 'acme'} True True\n", "")
    assert aio_run == (0, "{'tenant': 'zeta'} False True\n", "")
