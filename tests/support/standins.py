"""What kwok leaves out of a serving's pods: a process answering as vLLM would.

kwok marks a pod Ready but runs no container. :class:`StandinFleet` follows one SoundMindServing's
pods and runs a vLLM stand-in (`python -m soundmind.serve.standin`) on loopback for each Ready one,
configured from the pod's own `vllm serve` arguments (model, served model name, max model length,
max concurrent sequences); when a pod goes (or stops being Ready), its stand-in stops. It keeps
Prometheus' ``file_sd`` target list in step, with the labels a Kubernetes pod scrape gives the
series (the pod's namespace and name, and its labels with invalid characters made ``_``, as a
ServiceMonitor's podTargetLabels or the kubernetes-pods labelmap do), so queries written for a
real cluster select the stand-ins' series unchanged.
"""

from __future__ import annotations

import re
import select
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from soundmind.serve.standin import READY_LINE, vllm_serve_arguments
from soundmind_operator.serving import names
from tests.support.kube import Kube
from tests.support.processes import LocalProcess
from tests.support.prometheus import Prometheus

START_TIMEOUT_SECONDS = 60  # a busy two-core machine takes seconds to start a Python process


@dataclass(frozen=True)
class Simulation:
    """How fast the simulated engine is and how well it answers (``soundmind.serve.standin``)."""

    prefill_seconds_per_audio_second: float = 0.05
    seconds_per_output_token: float = 0.03
    output_tokens: int = 32
    accuracy: float = 1.0
    answers: Path | None = None  # a prepared parquet whose ground truth the answers follow


def standin_arguments(vllm_args: list[str], simulation: Simulation) -> list[str]:
    """`soundmind.serve.standin` arguments for a pod whose container runs `vllm serve <vllm_args>`,
    listening on loopback on a free port (the pods' own address and port are for a real node)."""
    argv = vllm_serve_arguments(vllm_args) + ["--host=127.0.0.1", "--port=0"]
    argv += [
        f"--prefill-seconds-per-audio-second={simulation.prefill_seconds_per_audio_second}",
        f"--seconds-per-output-token={simulation.seconds_per_output_token}",
        f"--output-tokens={simulation.output_tokens}",
        f"--accuracy={simulation.accuracy}",
    ]
    if simulation.answers:
        argv.append(f"--answers={simulation.answers}")
    return argv


def scrape_labels(pod) -> dict[str, str]:
    """The target labels a Kubernetes pod scrape gives: namespace, pod, and the pod's labels."""
    labels = {re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in (pod.metadata.labels or {}).items()}
    return {**labels, "namespace": pod.metadata.namespace, "pod": pod.metadata.name}


def _ready(pod) -> bool:
    if pod.metadata.deletion_timestamp is not None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


@dataclass
class Standin:
    pod: str
    url: str
    labels: dict[str, str]
    process: LocalProcess


class StandinFleet:
    def __init__(
        self, kube: Kube, namespace: str, serving: str, prometheus: Prometheus, workdir: Path, simulation: Simulation
    ):
        self.kube, self.namespace, self.serving = kube, namespace, serving
        self.prometheus, self.workdir, self.simulation = prometheus, workdir, simulation
        self._standins: dict[str, Standin] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="standin-fleet", daemon=True)
        self.error: BaseException | None = None
        self.started = 0  # stand-in processes started in all

    def start(self) -> StandinFleet:
        self._thread.start()
        return self

    def endpoints(self) -> list[str]:
        with self._lock:
            return [s.url for s in self._standins.values()]

    def pods(self) -> list[str]:
        with self._lock:
            return sorted(self._standins)

    def check(self) -> None:
        """Raise what stopped the fleet from following the pods, if anything did."""
        if self.error is not None:
            raise AssertionError(f"the stand-in fleet failed: {self.error!r}") from self.error

    def _follow(self) -> None:
        while not self._stopping.is_set():
            try:
                self.sync()
            except BaseException as error:  # noqa: BLE001 - reported through check()
                self.error = error
                return
            self._stopping.wait(0.25)

    def sync(self) -> None:
        """One step: stand-ins for the Ready pods, none for the others, and the target list to match."""
        pods = self.kube.core_v1.list_namespaced_pod(self.namespace, label_selector=names.selector(self.serving)).items
        ready = {p.metadata.name: p for p in pods if _ready(p)}
        gone = [name for name in self._standins if name not in ready]
        for name in gone:
            with self._lock:
                standin = self._standins.pop(name)
            self._publish()  # out of the scrape before it stops answering
            standin.process.stop()
        new = [pod for name, pod in ready.items() if name not in self._standins]
        starting = [(pod, self._spawn(pod)) for pod in new]
        for pod, process in starting:
            url = self._wait_serving(process)
            with self._lock:
                self._standins[pod.metadata.name] = Standin(pod.metadata.name, url, scrape_labels(pod), process)
        if starting:
            self._publish()

    def _spawn(self, pod) -> LocalProcess:
        container = pod.spec.containers[0]
        argv = [sys.executable, "-m", "soundmind.serve.standin"]
        argv += standin_arguments(list(container.args or []), self.simulation)
        self.started += 1
        return LocalProcess(f"stand-in for {pod.metadata.name}", argv, self.workdir / f"{pod.metadata.name}.log").start(
            stdout_pipe=True
        )

    @staticmethod
    def _wait_serving(process: LocalProcess) -> str:
        """The URL the stand-in prints once it listens."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        stdout = process.process.stdout
        while time.monotonic() < deadline:
            process.check("starting")
            readable, _, _ = select.select([stdout], [], [], 0.2)
            if readable:
                line = stdout.readline().strip()
                if line.startswith(READY_LINE):
                    return line.split()[1]
                process.check("starting")
        raise AssertionError(f"{process.name} did not start in {START_TIMEOUT_SECONDS}s:\n{process.log_tail()}")

    def _publish(self) -> None:
        with self._lock:
            groups = [
                {"targets": [s.url.removeprefix("http://")], "labels": s.labels}
                for s in sorted(self._standins.values(), key=lambda s: s.pod)
            ]
        self.prometheus.set_targets(groups)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        with self._lock:
            standins, self._standins = list(self._standins.values()), {}
        self.prometheus.set_targets([])
        for standin in standins:
            standin.process.stop()
