"""The memo of a pass's pure, costly parts: computed once per key, even when asked at once."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from soundmind_operator.cached import cached


def test_threads_asking_for_one_key_at_once_compute_it_once():
    calls: list[str] = []
    started = threading.Barrier(8)

    @cached(maxsize=4)
    def slow(key: str) -> str:
        calls.append(key)
        time.sleep(0.05)  # long enough for every thread to be waiting on the same miss
        return key.upper()

    def ask(_: int) -> str:
        started.wait()
        return slow("spec")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(8)))
    assert results == ["SPEC"] * 8
    assert calls == ["spec"]
    assert slow("other") == "OTHER" and calls == ["spec", "other"]
    assert slow.cache_info().hits == 7
