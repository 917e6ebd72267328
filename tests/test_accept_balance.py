"""
The workers' accept gate (txgeerpc._accept_balance): a worker ahead of the
least loaded other stands aside for a moment, then takes a connection still
waiting; one level with it accepts as many as bring it level; a dead
worker's slot is ignored; stopping leaves no timer and restores the port.
"""

from __future__ import annotations

import os
import socket

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txgeerpc import _accept_balance as balance


class FakePort:
    """A listening port's parts the gate uses; doRead "accepts" up to
    numberAccepts of the connections waiting on a real socket pair's end."""

    def __init__(self, test: SynchronousTestCase) -> None:
        self.waiting = 0
        self.accepted = 0
        self.reading = True
        self.connected = True
        self.numberAccepts = 100
        # A real descriptor whose readability stands for "a connection waits".
        self.left, self.right = socket.socketpair()
        test.addCleanup(self.left.close)
        test.addCleanup(self.right.close)

    def arrive(self, count: int) -> None:
        self.waiting += count
        self.right.send(b"x" * count)

    def doRead(self) -> None:
        taken = min(self.waiting, self.numberAccepts)
        self.waiting -= taken
        self.accepted += taken
        if taken:
            self.left.recv(taken)

    def fileno(self) -> int:
        return self.left.fileno()

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


class AcceptGateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fd = balance.create_board(3)
        self.addCleanup(os.close, self.fd)
        self.clock = Clock()
        self.port = FakePort(self)
        self.board = balance.LoadBoard(self.fd, 0, 3)
        self.addCleanup(self.board.close)
        self.other = balance.LoadBoard(self.fd, 1, 3)
        self.addCleanup(self.other.close)
        self.gate = balance.AcceptGate(
            self.port, self.board, lambda: self.port.accepted, self.clock
        )
        self.gate.startService()
        self.addCleanup(self._stopped)

    def _stopped(self) -> None:
        if self.gate.running:
            self.gate.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_alone_it_accepts_in_a_batch(self) -> None:
        self.assertIsNone(self.board.least_other())  # the others' slots are empty
        self.port.arrive(5)
        self.port.doRead()
        self.assertEqual(self.port.accepted, 5)
        self.assertEqual(self.other.least_other(), 5)  # published at once

    def test_behind_or_level_it_accepts_as_many_as_bring_it_level(self) -> None:
        self.other.publish(3)
        self.port.arrive(10)
        self.port.doRead()
        self.assertEqual(self.port.accepted, 4)  # one past level: 4 against 3
        self.assertTrue(self.port.reading)
        self.assertEqual(self.gate.stood_aside, 0)

    def test_ahead_it_stands_aside_then_takes_one_still_waiting(self) -> None:
        self.port.accepted = 2
        self.other.publish(1)
        self.port.arrive(2)
        self.port.doRead()
        self.assertEqual((self.port.accepted, self.port.reading), (2, False))
        self.assertEqual(self.gate.stood_aside, 1)
        self.clock.advance(balance.STAND_ASIDE)
        # Nobody took them: this worker takes one, and reads again.
        self.assertEqual((self.port.accepted, self.port.reading), (3, True))

    def test_ahead_it_takes_nothing_the_other_took_meanwhile(self) -> None:
        self.port.accepted = 2
        self.other.publish(0)
        self.port.arrive(1)
        self.port.doRead()
        self.port.waiting = 0  # the other worker accepted it
        self.port.left.recv(1)
        self.clock.advance(balance.STAND_ASIDE)
        self.assertEqual((self.port.accepted, self.port.reading), (2, True))

    def test_a_dead_workers_slot_is_ignored(self) -> None:
        self.port.accepted = 4
        self.other.publish(0)
        balance.mark_gone(self.fd, 1)
        self.assertIsNone(self.board.least_other())
        self.port.arrive(1)
        self.port.doRead()
        self.assertEqual(self.port.accepted, 5)

    def test_closed_connections_are_published(self) -> None:
        self.port.arrive(3)
        self.port.doRead()
        self.port.accepted = 1  # two closed
        self.gate.closed()
        self.assertEqual(self.other.least_other(), 1)
        self.port.accepted = 0  # and the refresh publishes any change
        self.clock.advance(balance.REFRESH)
        self.assertEqual(self.other.least_other(), 0)

    def test_stopping_restores_the_port_and_leaves_no_timer(self) -> None:
        original = FakePort.doRead
        self.port.accepted = 2
        self.other.publish(0)
        self.port.arrive(1)
        self.port.doRead()  # standing aside: a timer runs
        self.gate.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIs(getattr(self.port.doRead, "__func__", None), original)
        self.assertIsNone(self.other.least_other())  # its slot says gone

    def test_a_pause_ending_after_the_port_closed_does_nothing(self) -> None:
        self.port.accepted = 2
        self.other.publish(0)
        self.port.arrive(1)
        self.port.doRead()
        self.port.connected = False
        self.clock.advance(balance.STAND_ASIDE)
        self.assertEqual((self.port.accepted, self.port.reading), (2, False))
