"""A task cancelled in the middle of a Redis call ends (castway.cancellation).

On Python 3.11 redis-py's ``asyncio.wait_for`` drops a cancellation that lands as a
command completes; before castway raised it again, about 1 cancel in 10 of a task
looping on the live state left the task running forever (a watcher loop that a test,
or a shutdown, then waited on for good). Each test cancels a real client's loop against
a real redis-server at moments spread over a few round trips, many times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from castway.live.redis import RedisLiveState
from chat.bus import RedisBus
from scheduler.coordination import RedisCoordinator

TRIALS = 200
#: the cancel lands this long after the loop starts: 0 to 5 ms, spread over a few
#: round trips to a local redis-server (about 0.1 ms each)
SPREAD_S = 0.005
#: far longer than a round trip: a task not done by then ran on past its cancellation
ENDS_WITHIN_S = 2.0


async def cancelled_loops_that_ran_on(step: Callable[[], Awaitable[object]],
                                      trials: int = TRIALS) -> int:
    """How many of ``trials`` loops of ``step``, each cancelled once, were still running
    ENDS_WITHIN_S after their cancellation (counting stops at the first)."""
    ran_on = 0
    for i in range(trials):
        async def loop() -> None:
            while True:
                await step()

        task = asyncio.create_task(loop())
        await asyncio.sleep(SPREAD_S * (i % 50) / 50)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=ENDS_WITHIN_S)
        if not done:
            ran_on += 1
            for _ in range(20):  # leave nothing running: cancel until it takes
                task.cancel()
                if (await asyncio.wait({task}, timeout=0.1))[0]:
                    break
            break  # one is a failure: no need to wait out the others
        else:
            assert task.cancelled(), task.exception()
    return ran_on


async def test_a_task_cancelled_in_a_live_state_call_ends(redis_url: str) -> None:
    live = RedisLiveState(redis_url)
    try:
        async def read() -> None:
            await live.get_broadcast("b1")
            await live.live_broadcast("ch")

        assert await cancelled_loops_that_ran_on(read) == 0
        assert await live.get_broadcast("b1") is None  # the client still works
    finally:
        await live.close()


async def test_a_scheduler_tick_cancelled_in_its_redis_commands_ends(redis_url: str) -> None:
    coordinator = RedisCoordinator(redis_url)
    try:
        async def tick() -> None:
            if await coordinator.acquire(30):
                try:
                    await coordinator.save_memory(await coordinator.load_memory())
                finally:
                    await coordinator.release()

        assert await cancelled_loops_that_ran_on(tick) == 0
        # and no cancelled tick kept the lock: the next one takes it
        assert await coordinator.acquire(30)
        await coordinator.release()
    finally:
        await coordinator.close()


async def test_a_task_cancelled_in_a_chat_bus_call_ends(redis_url: str) -> None:
    bus = RedisBus([redis_url], 10)
    try:
        async def read() -> None:
            await bus.history("demo")

        assert await cancelled_loops_that_ran_on(read) == 0
    finally:
        await bus.stop()


async def test_a_loop_that_drops_its_cancellation_is_counted() -> None:
    """The measure can see a failure: a step that swallows the first cancellation, as
    ``wait_for`` does, keeps its loop running."""
    swallowed = False

    async def drops_one() -> None:
        nonlocal swallowed
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True

    assert await cancelled_loops_that_ran_on(drops_one, trials=1) == 1
