"""A new object's first pass decides on the version kopf's own writes are on (no cluster)."""

import asyncio
import time

from soundmind_operator import loop

FINALIZER, DIFFBASE = "soundmind.ai/finalizer", "soundmind.ai/last-handled-configuration"


def test_the_first_pass_waits_for_kopfs_finalizer_and_last_handled_configuration():
    body = {"metadata": {"resourceVersion": "1"}}

    async def kopf_writes() -> None:
        await asyncio.sleep(0.1)
        body["metadata"] = {"resourceVersion": "2", "finalizers": [FINALIZER]}
        await asyncio.sleep(0.1)
        body["metadata"] = {"resourceVersion": "3", "finalizers": [FINALIZER], "annotations": {DIFFBASE: "{}"}}

    async def scenario() -> float:
        began = time.monotonic()
        await asyncio.gather(loop._adopted(body, FINALIZER, DIFFBASE), kopf_writes())
        return time.monotonic() - began

    assert 0.2 <= asyncio.run(scenario()) < 1


def test_an_object_kopf_handled_before_waits_for_nothing_and_none_waits_for_ever():
    handled = {"metadata": {"finalizers": [FINALIZER], "annotations": {DIFFBASE: "{}"}}}
    began = time.monotonic()
    asyncio.run(loop._adopted(handled, FINALIZER, DIFFBASE))
    asyncio.run(loop._adopted({"metadata": {"deletionTimestamp": "now"}}, FINALIZER, DIFFBASE))
    asyncio.run(loop._adopted({"metadata": {}}, None, None))
    assert time.monotonic() - began < 0.1
    began = time.monotonic()
    asyncio.run(loop._adopted({"metadata": {}}, FINALIZER, DIFFBASE))
    assert loop.KOPF_ADOPTION_SECONDS <= time.monotonic() - began < loop.KOPF_ADOPTION_SECONDS + 1
