"""Channel and select: rendezvous, buffering, close, iteration, select fairness and timeouts."""

from __future__ import annotations

from collections import Counter

import pytest

from stackful.channel import Channel, ChannelClosed, Recv, Send, select, select_random
from stackful.lowlevel import current_time
from stackful.runtime_api import (
    Cancelled,
    DeadlockError,
    run,
    sleep,
    spawn,
    yield_now,
)

from ._support import vrun


def test_unbuffered_send_waits_for_a_receiver() -> None:
    log: list[str] = []

    def main() -> None:
        ch: Channel[int] = Channel()

        def sender() -> None:
            ch.send(1)
            log.append("sent")

        t = spawn(sender)
        yield_now()
        assert t.state == "blocked" and t.waiting_on == "Channel.send"
        log.append("recv")
        assert ch.recv() == 1
        t.join()

    run(main)
    assert log == ["recv", "sent"]


def test_buffered_channel_sends_without_blocking_until_full() -> None:
    def main() -> None:
        ch: Channel[int] = Channel(2)
        ch.send(1)
        ch.send(2)
        assert len(ch) == 2
        with pytest.raises(TimeoutError, match="Channel.send timed out"):
            ch.send(3, timeout=1)
        t = spawn(ch.send, 4)
        yield_now()
        assert [ch.recv(), ch.recv(), ch.recv()] == [1, 2, 4]
        t.join()

    vrun(main)


def test_ping_pong() -> None:
    def main() -> int:
        ping: Channel[int] = Channel()
        pong: Channel[int] = Channel()

        def echo() -> None:
            for v in ping:
                pong.send(v + 1)

        spawn(echo)
        v = 0
        for _ in range(100):
            ping.send(v)
            v = pong.recv()
        ping.close()
        return v

    assert run(main) == 100


def test_close_drains_then_ends_iteration_and_wakes_waiters() -> None:
    def main() -> None:
        ch: Channel[int] = Channel(3)
        for i in range(3):
            ch.send(i)
        ch.close()
        assert list(ch) == [0, 1, 2]
        with pytest.raises(ChannelClosed, match="receive from closed channel"):
            ch.recv()

        empty: Channel[int] = Channel()
        receivers = [spawn(empty.recv) for _ in range(2)]
        sender = spawn(Channel[int]().send, 1)  # unrelated, stays blocked until shutdown
        yield_now()
        empty.close()
        for r in receivers:
            with pytest.raises(ChannelClosed):
                r.join()
        sender.cancel()

    run(main)


def test_send_on_closed_channel_and_double_close() -> None:
    def main() -> None:
        ch: Channel[int] = Channel()
        blocked = spawn(ch.send, 1)
        yield_now()
        ch.close()
        with pytest.raises(ChannelClosed, match="send on closed channel"):
            blocked.join()
        with pytest.raises(ChannelClosed, match="send on closed channel") as info:
            ch.send(2)
        assert info.value.channel is ch
        with pytest.raises(ChannelClosed, match="close of closed channel"):
            ch.close()

    run(main)


def test_recv_timeout_and_bad_capacity() -> None:
    def main() -> None:
        ch: Channel[int] = Channel()
        with pytest.raises(TimeoutError):
            ch.recv(timeout=4)
        assert current_time() == 4

    vrun(main)
    with pytest.raises(ValueError, match="capacity must be an int >= 0"):
        Channel(-1)


def test_deadlock_on_unreceived_send() -> None:
    def main() -> None:
        Channel[int]().send(1)

    with pytest.raises(DeadlockError, match="task 'main' waiting on Channel.send"):
        run(main)


def test_select_picks_the_ready_operation() -> None:
    def main() -> None:
        a: Channel[str] = Channel(1)
        b: Channel[str] = Channel(1)
        b.send("from b")
        assert select(Recv(a), Recv(b)) == (1, "from b")
        assert select(Recv(a), Send(b, "x")) == (1, None)
        assert b.recv() == "x"

    run(main)


def test_select_blocks_until_one_fires_and_withdraws_the_others() -> None:
    def main() -> None:
        a: Channel[int] = Channel()
        b: Channel[int] = Channel()

        def later() -> None:
            sleep(2)
            b.send(7)

        spawn(later)
        assert select(Recv(a), Recv(b)) == (1, 7)
        assert current_time() == 2
        # The waiter left on `a` is gone: a sender on `a` must block, not vanish.
        t = spawn(a.send, 1)
        yield_now()
        assert t.state == "blocked"
        assert a.recv() == 1

    vrun(main)


def test_select_send_completes_with_a_receiver() -> None:
    def main() -> None:
        out: Channel[int] = Channel()
        r = spawn(out.recv)
        assert select(Send(out, 5), timeout=10) == (0, None)
        assert r.join() == 5

    vrun(main)


def test_select_timeout_and_poll() -> None:
    def main() -> None:
        a: Channel[int] = Channel()
        with pytest.raises(TimeoutError, match="select timed out"):
            select(Recv(a), timeout=3)
        assert current_time() == 3
        with pytest.raises(TimeoutError, match="no ready operation"):
            select(Recv(a), timeout=0)

    vrun(main)


def test_select_is_random_among_ready_ops_and_seedable() -> None:
    def pick_many() -> list[int]:
        def main() -> list[int]:
            a: Channel[int] = Channel(100)
            b: Channel[int] = Channel(100)
            picks = []
            for _ in range(100):
                a.send(0)
                b.send(0)
                i, _ = select(Recv(a), Recv(b))
                picks.append(i)
                (b if i == 0 else a).recv()
            return picks

        result: list[int] = run(main)
        return result

    select_random.seed(1234)
    first = pick_many()
    select_random.seed(1234)
    assert pick_many() == first
    counts = Counter(first)
    assert counts[0] > 20 and counts[1] > 20  # neither channel starves


def test_select_misuse_and_closed_channels() -> None:
    def main() -> None:
        with pytest.raises(ValueError, match="at least one"):
            select()
        with pytest.raises(TypeError, match="takes Recv and Send"):
            select("nope")  # type: ignore[arg-type]
        ch: Channel[int] = Channel()
        ch.close()
        with pytest.raises(ChannelClosed, match="receive from closed channel"):
            select(Recv(ch))
        with pytest.raises(ChannelClosed, match="send on closed channel"):
            select(Send(ch, 1))
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            select(Recv(ch), timeout=-1)

    run(main)


def test_cancelled_select_leaves_no_waiters() -> None:
    def main() -> None:
        a: Channel[int] = Channel()
        b: Channel[int] = Channel()
        t = spawn(select, Recv(a), Recv(b))
        yield_now()
        t.cancel()
        with pytest.raises(Cancelled):
            t.join()
        assert "receivers=0" in repr(a) and "receivers=0" in repr(b)

    run(main)


@pytest.mark.parametrize("op", ["send", "recv"])
def test_bad_timeout_is_rejected_before_the_channel_changes(op: str) -> None:
    def main() -> None:
        ch: Channel[int] = Channel()
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            if op == "send":
                ch.send(1, timeout=float("nan"))
            else:
                ch.recv(timeout=-1)
        assert "receivers=0 senders=0" in repr(ch)  # no stale waiter left behind
        with pytest.raises(TimeoutError):
            (ch.recv if op == "send" else lambda timeout: ch.send(2, timeout))(timeout=1)

    vrun(main)


def test_receiver_cancelled_after_the_hand_over_keeps_the_value() -> None:
    def main() -> None:
        ch: Channel[str] = Channel()
        r = spawn(ch.recv)
        yield_now()
        ch.send("v")  # hands "v" to r, which is ready but has not run
        r.cancel()
        assert r.join() == "v"

    vrun(main)
