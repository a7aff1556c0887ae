"""A fake NVML for machines without an NVIDIA GPU: a `pynvml` module with the four calls the trainer's
preflight makes (`soundmind.train.preflight`), reporting a driver version and a GPU count chosen by the
test, or failing `nvmlInit` as the real library does on a node without a driver.

`write` puts it in a directory; a `soundmind train` subprocess finds it first with that directory at
the front of PYTHONPATH, and `load` imports it in the test's own process.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

DRIVER_580 = "580.65.06"
NO_LIBRARY = "NVML Shared Library Not Found"  # what the real pynvml says where libnvidia-ml is absent

SOURCE = """\
class NVMLError(Exception):
    pass


def nvmlInit():
    if {error!r}:
        raise NVMLError({error!r})


def nvmlShutdown():
    pass


def nvmlSystemGetDriverVersion():
    return {driver!r}


def nvmlDeviceGetCount():
    return {gpus!r}
"""


def write(directory: Path, driver: str = DRIVER_580, gpus: int = 8, error: str = "") -> Path:
    """Write `pynvml.py` into `directory` (created) and return the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pynvml.py").write_text(SOURCE.format(driver=driver, gpus=gpus, error=error))
    return directory


def load(directory: Path) -> ModuleType:
    """The fake written into `directory`, imported under a name of its own (the real pynvml stays)."""
    spec = importlib.util.spec_from_file_location(f"fake_pynvml_{id(directory)}", directory / "pynvml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
