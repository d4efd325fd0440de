"""The embedded amqtt broker's subscription table survives changes while the broker walks it."""

from __future__ import annotations

import asyncio

import pytest
from amqtt.broker import Broker

from cloud.transport.broker import _guard_subscription_iteration

CONFIG = {"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}}}


async def _walk_while_others_subscribe(broker: Broker) -> list[str]:
    """What amqtt does on a connect: await per topic filter, while other clients (un)subscribe.

    Each ``asyncio.sleep(0)`` is the ``await`` inside amqtt's loop: a yield to the other task at a
    fixed point, which makes the interleaving deterministic; nothing here waits for time to pass.
    """
    table = broker._subscriptions
    table.update({f"ef/v1/f/dev/d{i}/{channel}": [] for i in range(5) for channel in ("desired", "cmd")})

    async def others() -> None:
        for i in range(5, 10):
            table[f"ef/v1/f/dev/d{i}/desired"] = []
            await asyncio.sleep(0)
            table.pop(f"ef/v1/f/dev/d{i - 5}/cmd", None)  # a session cleaned up meanwhile

    changer = asyncio.create_task(others())
    walked = []
    for topic in table:
        walked.append(topic)
        await asyncio.sleep(0)
    for _topic, _subs in table.items():
        await asyncio.sleep(0)
    await changer
    return walked


def test_the_guard_lets_the_broker_walk_a_changing_table() -> None:
    async def scenario() -> list[str]:
        broker = Broker(CONFIG)
        _guard_subscription_iteration(broker)
        return await _walk_while_others_subscribe(broker)

    walked = asyncio.run(scenario())
    # A snapshot: the filters present when the walk began.
    assert walked == [f"ef/v1/f/dev/d{i}/{c}" for i in range(5) for c in ("desired", "cmd")]


def test_without_the_guard_amqtt_fails_the_same_walk() -> None:
    async def scenario() -> list[str]:
        return await _walk_while_others_subscribe(Broker(CONFIG))

    with pytest.raises(RuntimeError, match="dictionary changed size during iteration"):
        asyncio.run(scenario())
