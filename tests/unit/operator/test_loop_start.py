"""A new object's first pass decides on the version kopf's own writes are on (no cluster)."""

import asyncio
import time

from soundmind_operator import loop

FINALIZER = "soundmind.ai/finalizer"


def test_the_first_pass_waits_for_kopfs_finalizer():
    body = {"metadata": {"resourceVersion": "1"}}

    async def kopf_writes() -> None:
        await asyncio.sleep(0.2)
        body["metadata"] = {"resourceVersion": "2", "finalizers": [FINALIZER]}

    async def scenario() -> float:
        began = time.monotonic()
        await asyncio.gather(loop._adopted(body, FINALIZER), kopf_writes())
        return time.monotonic() - began

    assert 0.2 <= asyncio.run(scenario()) < 1


def test_an_object_kopf_handled_before_waits_for_nothing_and_none_waits_for_ever():
    handled = {"metadata": {"finalizers": [FINALIZER]}}
    began = time.monotonic()
    asyncio.run(loop._adopted(handled, FINALIZER))
    asyncio.run(loop._adopted({"metadata": {"deletionTimestamp": "now"}}, FINALIZER))
    asyncio.run(loop._adopted({"metadata": {}}, None))
    assert time.monotonic() - began < 0.1
    began = time.monotonic()
    asyncio.run(loop._adopted({"metadata": {}}, FINALIZER))
    # At least the adoption period, and then it gives up: the upper bound only says "not for ever"
    # (a loaded CI machine took 6.3 s for the 5 s period).
    assert loop.KOPF_ADOPTION_SECONDS <= time.monotonic() - began < loop.KOPF_ADOPTION_SECONDS + 10


def test_a_pass_decides_on_its_own_copy_of_the_live_view_without_managed_fields():
    live = {
        "kind": "SoundMindTraining",
        "metadata": {"name": "alr", "resourceVersion": "7", "managedFields": [{"manager": "kopf"}]},
        "status": {"conditions": [{"type": "Running", "status": "True"}]},
    }
    copied = asyncio.run(loop._current(live, superseded=None, fetch=lambda: None))
    assert copied == {**live, "metadata": {"name": "alr", "resourceVersion": "7"}}
    copied["status"]["conditions"][0]["status"] = "False"
    assert live["status"]["conditions"][0]["status"] == "True" and "managedFields" in live["metadata"]


def test_time_alone_brings_the_next_pass_only_when_the_decision_may_change_with_it():
    resync = 15.0
    assert loop._next_pass(resync, loop.Outcome(body={}, settled=True)) is None
    assert loop._next_pass(resync, loop.Outcome(body={}, periodic=True)) == resync
    assert loop._next_pass(resync, loop.Outcome(body={})) == resync * loop.QUIET_RESYNCS
    # A timeout due in 40 s: a pass just after it, not 20 resyncs later; one already due: at once.
    assert loop._next_pass(resync, loop.Outcome(body={}, recheck_after=40.0)) == 40.0 + loop.DUE_MARGIN_SECONDS
    assert loop._next_pass(resync, loop.Outcome(body={}, recheck_after=-3.0)) == loop.DUE_MARGIN_SECONDS
    assert loop._next_pass(resync, loop.Outcome(body={}, periodic=True, recheck_after=4.0)) == 5.0
