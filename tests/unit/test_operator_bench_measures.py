"""benchmarks/operator_bench.py's figures can fail: an unreadable memory figure is an error, not
0 MB, and the operator's reads are the API server's count for its identity alone (no cluster)."""

from __future__ import annotations

import os

import pytest

from benchmarks import operator_bench
from tests.support import api_reads

STATUS = "Name:\tpython\nState:\tS (sleeping)\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t33\n"


def test_memory_figures_are_read_in_mb():
    assert operator_bench.memory_mb(STATUS, "VmRSS") == 100.0
    assert operator_bench.memory_mb(STATUS, "VmHWM") == 200.0


@pytest.mark.parametrize(
    ("status", "said"),
    [
        ("Name:\tkthreadd\nState:\tS (sleeping)\nThreads:\t1\n", "no VmRSS"),  # a kernel thread has none
        ("VmRSS:\t  n/a kB\n", "not a number of kB"),
        ("VmRSS:\t  102400 MB\n", "not a number of kB"),
    ],
)
def test_a_memory_figure_that_cannot_be_read_is_an_error_not_zero(status, said):
    with pytest.raises(ValueError, match=said):
        operator_bench.memory_mb(status, "VmRSS")


def test_rss_of_a_process_that_is_gone_fails_naming_it():
    with pytest.raises(RuntimeError, match=r"process 2147483647\) cannot be read"):
        operator_bench.rss_mb(2**31 - 1)
    assert operator_bench.rss_mb(os.getpid()) > 0


OURS = api_reads.flow_schema_name("ns", "op")
METRICS = f"""\
# TYPE {api_reads.DISPATCHED} counter
{api_reads.DISPATCHED}{{flow_schema="{OURS}",priority_level="workload-low"}} 7
{api_reads.DISPATCHED}{{flow_schema="{OURS}-2",priority_level="workload-low"}} 100
{api_reads.DISPATCHED}{{flow_schema="service-accounts",priority_level="workload-low"}} 1234
{api_reads.DISPATCHED}{{priority_level="exempt",flow_schema="exempt"}} 99
apiserver_request_total{{code="200",verb="LIST",flow_schema="{OURS}"}} 50
"""


def test_the_operators_reads_are_its_flow_schemas_dispatched_requests_alone():
    assert api_reads.dispatched(METRICS, OURS) == 7
    assert api_reads.dispatched(METRICS, "exempt") == 99
    assert api_reads.dispatched(METRICS, "not-installed") == 0
