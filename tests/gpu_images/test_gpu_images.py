"""The trainer and server images `make images-all` builds, checked inside themselves on CPU: loaded from
the very tarballs a node imports into a Docker engine of the test's own, run with no network, as the
images' own non-root users, with this checkout mounted read-only where a check needs its files.

`make test-gpu-images` runs this module; `make test` leaves it out (tests/conftest.py): a cold build of
the two images takes about an hour and tens of GB of disk (README, "Images"). Needs root, Debian's
dockerd and debootstrap, like tests/integration/test_built_images.py.

The tiny-Omni proofs (tests/unit/models, tests/unit/train/test_export.py) run inside the trainer image
with the image's own pytest (verl's lock brings it): nothing is added to the image. The export they
write is what the server checks load.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.utils.quantity import parse_quantity

from hack.images import wheels
from hack.images.build import IMAGES, INPUTS_LABEL, Image, build
from hack.images.docker import Docker, Dockerd, remove_tree
from soundmind.serve import vllm_args
from soundmind.train import contract
from soundmind.train.rehearse import BUILT, STOPPED
from tests.support import alr, smoke
from tests.support.prerequisite import missing

ROOT = Path(__file__).resolve().parents[2]
TRAINER, SERVER = IMAGES["trainer"], IMAGES["server"]
REPO = "/repo"  # where the checkout is mounted, read-only
WORK = "/work"  # a folder of the test's, writable by the images' user (uid 1000)
TINY_OMNI_PROOFS = ("tests/unit/models", "tests/unit/train/test_export.py")
EXPORT_GLOB = "**/export/global_step_*"
# The volumes a training pod mounts (soundmind.train.contract), writable where a check mounts them.
POD_VOLUMES = (contract.MODELS_MOUNT, contract.DATA_MOUNT)


def _missing() -> list[str]:
    lacking = [] if os.geteuid() == 0 else ["root"]
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    return lacking + [tool for tool in ("dockerd", "debootstrap") if not shutil.which(tool, path=path)]


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    """A private dockerd for the checks (the images come in through :func:`_only`)."""
    lacking = _missing()
    if lacking:
        missing(f"building and running images needs {', '.join(lacking)} (apt-get install docker.io debootstrap)")
    home = Path(tempfile.mkdtemp(prefix="smd-gpu-", dir="/tmp"))  # short: dockerd's socket path
    try:
        with Dockerd(home) as engine:
            yield engine
    finally:
        remove_tree(home)


def _only(docker: Docker, image: Image) -> str:
    """``image``'s tag in the test's engine, the other GPU image removed first, then ``image`` built
    (unless its tarball is current) and loaded from its tarball: a build, or `docker load` (which
    unpacks a whole tarball before it copies the layers), beside the other image's 10 GB would not
    fit a disk that holds the tarballs too."""
    if docker.image_label(image.tag, INPUTS_LABEL) is None:
        for other in (TRAINER, SERVER):
            if other is not image and docker.image_label(other.tag, INPUTS_LABEL) is not None:
                docker("image", "rm", other.tag)
        (tarball,) = build([image.name])
        started = time.monotonic()
        docker("load", f"--input={tarball}")
        print(f"loaded {image.tag} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return image.tag


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    """Where the containers write (the tiny export, the synthesized clip): the images' user is uid 1000."""
    folder = Path(tempfile.mkdtemp(prefix="smd-gpu-work-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _run(docker: Docker, image: str, *args: str, mounts: dict[Path, str] | None = None,
         env: dict[str, str] | None = None, entrypoint: str | None = "python", shm_size: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    """``args`` run in a fresh container of ``image`` (removed after), as the image's user, with no
    network, through ``entrypoint`` (None: the image's own); ``mounts``: host folder -> container
    path, read-only unless the path is WORK or a pod volume's; ``shm_size``: /dev/shm's size, a
    Kubernetes quantity (Docker's default is 64 MB)."""
    writable = (WORK, *POD_VOLUMES)
    volumes = [f"--volume={host}:{path}{'' if path in writable else ':ro'}" for host, path in (mounts or {}).items()]
    environment = [f"--env={key}={value}" for key, value in {"PYTHONDONTWRITEBYTECODE": "1", **(env or {})}.items()]
    override = [f"--entrypoint={entrypoint}"] if entrypoint else []
    shm = [f"--shm-size={int(parse_quantity(shm_size))}b"] if shm_size else []
    result = docker("run", "--rm", "--network=none", *volumes, *environment, *override, *shm, image, *args,
                    capture=True, check=False)  # fmt: skip
    if check and result.returncode != 0:
        pytest.fail(f"{entrypoint or 'the entrypoint'} {' '.join(args)} in {image} exited {result.returncode}:\n"
                    f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}", pytrace=False)  # fmt: skip
    return result


def _pins(image) -> dict[str, str]:
    return dict(pin.split("==", 1) for pin in wheels.read_pins(image.folder / "requirements.lock"))


def _installed(docker: Docker, image) -> dict[str, str]:
    """Every distribution in the image's environment, by its normalised name, and its version."""
    script = (
        "import json, re; from importlib.metadata import distributions\n"
        "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version for d in distributions()}))"
    )
    return json.loads(_run(docker, _only(docker, image), "-c", script).stdout)


def _holds_its_lock(docker: Docker, image) -> None:
    installed = _installed(docker, image)
    wrong = {
        name: (pinned, installed.get(re.sub(r"[-_.]+", "-", name).lower()))
        for name, pinned in _pins(image).items()
        if installed.get(re.sub(r"[-_.]+", "-", name).lower()) != pinned
    }
    assert not wrong, f"{image.tag}: not at the lock's versions (lock, image): {wrong}"


# --- the trainer image


def test_the_trainer_image_imports_its_stack_at_the_locked_versions(docker):
    stack = ("verl", "vllm", "ray", "torch", "transformers")
    modules = ", ".join(stack)
    script = f"import json, {modules}; print(json.dumps({{m.__name__: m.__version__ for m in [{modules}]}}))"
    versions = json.loads(_run(docker, _only(docker, TRAINER), "-c", script).stdout.splitlines()[-1])
    pins = _pins(TRAINER)
    # torch's own version string carries the CUDA build (2.11.0+cu130); the distribution's is the lock's.
    assert {name: v.split("+")[0] for name, v in versions.items()} == {name: pins[name] for name in stack}
    _holds_its_lock(docker, TRAINER)


def test_the_trainer_images_dry_run_renders_what_this_checkout_renders(docker):
    """`soundmind train --dry-run` of examples/training.yaml: the image's soundmind is this checkout's."""
    args = ["--config", f"{REPO}/examples/training.yaml", "--dry-run"]
    in_image = _run(docker, _only(docker, TRAINER), *args, mounts={ROOT: REPO}, entrypoint=None)  # `soundmind train`
    here_args = [arg.replace(REPO, str(ROOT)) for arg in args]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SOUNDMIND_")}
    here = subprocess.run([sys.executable, "-m", "soundmind", "train", *here_args], capture_output=True, text=True,
                          env=environment, cwd=ROOT)  # fmt: skip
    assert here.returncode == 0, here.stderr
    # Each side names its own interpreter and its own copy of soundmind (the reward function's file):
    # the image's installed wheel, this checkout here. Everything else must be the same.
    image_python, image_package = "/opt/venv/bin/python3", "/opt/venv/lib/python3.11/site-packages/soundmind/"
    assert f"{image_python} -m verl.trainer.main_ppo " in in_image.stdout
    assert f"reward.custom_reward_function.path={image_package}reward/__init__.py" in in_image.stdout
    in_image_named = in_image.stdout.replace(image_python, "PYTHON").replace(image_package, "SOUNDMIND/")
    here_named = here.stdout.replace(sys.executable, "PYTHON").replace(f"{ROOT}/soundmind/", "SOUNDMIND/")
    assert in_image_named == here_named


# Triton's own launcher build (triton/runtime/build.py, the step that fails without Python.h): a
# module using the C API, compiled with the image's gcc and headers, loaded and called.
_TRITON_BUILD = r"""
import os, sysconfig, triton
from triton.runtime.build import compile_module_from_src
include = sysconfig.get_paths()["include"]
assert os.path.isfile(os.path.join(include, "Python.h")), include
src = '''
#include <Python.h>
static PyObject *twice(PyObject *self, PyObject *arg) { return PyLong_FromLong(2 * PyLong_AsLong(arg)); }
static PyMethodDef methods[] = {{"twice", twice, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "soundmind_probe", NULL, -1, methods};
PyMODINIT_FUNC PyInit_soundmind_probe(void) { return PyModule_Create(&module); }
'''
print(triton.__version__, include, compile_module_from_src(src, "soundmind_probe").twice(21))
"""


def test_the_trainer_image_has_python_headers_and_triton_builds_a_launcher(docker):
    out = _run(
        docker, _only(docker, TRAINER), "-c", _TRITON_BUILD, env={"TRITON_CACHE_DIR": "/tmp/triton"}
    ).stdout.split()
    assert out == [_pins(TRAINER)["triton"], "/usr/include/python3.11", "42"]


@pytest.fixture(scope="module")
def tiny_omni_proofs(docker, work) -> subprocess.CompletedProcess:
    """tests/unit/models and the export test, run by pytest inside the trainer image; their files
    (the tiny Omni, the export) stay under WORK/pytest."""
    return _run(
        docker, _only(docker, TRAINER), "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={WORK}/pytest", "-q",
        *(f"{REPO}/{path}" for path in TINY_OMNI_PROOFS),
        mounts={ROOT: REPO, work: WORK},
        env={"PYTHONPATH": REPO, "HOME": "/tmp", "HF_HOME": "/tmp/hf"},
        check=False,
    )  # fmt: skip


def test_the_tiny_omni_proofs_pass_inside_the_trainer_image(tiny_omni_proofs):
    out = tiny_omni_proofs.stdout
    assert tiny_omni_proofs.returncode == 0, out[-8000:] + tiny_omni_proofs.stderr[-4000:]
    summary = out.strip().splitlines()[-1]
    assert re.fullmatch(r"=* ?\d+ passed(, \d+ warnings?)? in .*", summary), out[-2000:]  # nothing skipped


def test_the_rehearsal_of_the_smoke_run_passes_inside_the_trainer_image(docker, work):
    """The smoke run's setup steps (examples/smoke/setup.yaml: the tiny Omni, spoken data, prepared)
    and then `soundmind train --rehearse` of examples/smoke/training.yaml as it is, all inside the
    trainer image, as the pods run them: the models and data volumes mounted where the pods mount
    them (the image's HF_HOME is on the models volume), /dev/shm the training's shmSize. Every step
    of the rehearsal is built or stopped on CPU."""
    image = _only(docker, TRAINER)
    volumes = {work / Path(mount).name: mount for mount in POD_VOLUMES}
    for folder in volumes:
        folder.mkdir(mode=0o777)
        folder.chmod(0o777)  # the images' user (uid 1000) writes there, as the pods' fsGroup allows
    for argv in smoke.setup_steps():
        _run(docker, image, *argv[1:], mounts=volumes, entrypoint="soundmind", env={"HOME": "/tmp"})
    training = f"{REPO}/{smoke.SMOKE.relative_to(ROOT)}/training.yaml"
    shm_size = smoke.manifest("training.yaml")["spec"]["resources"]["shmSize"]
    done = _run(docker, image, "--config", training, "--rehearse", mounts={**volumes, ROOT: REPO}, entrypoint=None,
                env={"HOME": "/tmp"}, shm_size=shm_size)  # fmt: skip
    # One line a step; before them, the command's own notes (`# ...`: run outside a pod, it has no training name).
    statuses = dict(line.split(": ")[:2] for line in done.stdout.splitlines() if not line.startswith("# "))
    assert statuses == {
        "verl-config": BUILT, "model-config": BUILT, "actor-and-reference": BUILT, "grpo-checks": BUILT,
        "rollout-server": STOPPED, "reward": BUILT, "dataset": BUILT,
    }, done.stdout  # fmt: skip


@pytest.fixture(scope="module")
def alr_clip(docker, work) -> Path:
    """One ALR dev row, spoken by `soundmind data synth` in the trainer image (espeak-ng is there)."""
    rows = alr.dev_rows()[:1]
    (work / "alr.jsonl").write_text(json.dumps(rows[0]) + "\n")
    synth = ["data", "synth", "--from", f"{WORK}/alr.jsonl", "--out", f"{WORK}/alr", "--limit", "1", "--workers", "1"]
    _run(docker, _only(docker, TRAINER), *synth, mounts={work: WORK}, entrypoint="soundmind")
    (clip,) = (work / "alr").glob(f"*/{rows[0]['id']}/question.wav")
    return clip


def test_the_trainer_image_speaks_an_alr_row(alr_clip):
    import soundfile

    info = soundfile.info(alr_clip)
    assert (info.samplerate, info.channels) == (16000, 1) and info.duration > 1


# --- the server image (after the trainer's: its checks read what the trainer image wrote)


def test_the_server_image_holds_its_lock(docker):
    _holds_its_lock(docker, SERVER)


# `vllm serve --help=all` as vLLM's own parser prints it, and the description soundmind generates from
# it. On a machine without a GPU the `vllm` command stops before its parser exists ("Failed to infer
# device type"): vllm_args.vllm_serve_parser builds that parser with vLLM's CPU platform, as `vllm
# bench` does on such machines (option names and types do not depend on the platform).
_SERVE_HELP = r"""
import contextlib, io, json
from soundmind.serve import vllm_args
top, _ = vllm_args.vllm_serve_parser()
text = io.StringIO()
with contextlib.redirect_stdout(text):
    try:
        top.parse_args(["serve", "--help=all"])
    except SystemExit:
        pass
print(json.dumps({"help": text.getvalue(), "described": vllm_args.render(vllm_args.describe())}))
"""


def test_vllm_serve_help_in_the_server_image_is_the_description_soundmind_validates_with(docker):
    """The flags `vllm serve --help=all` lists in the server image are exactly those of
    soundmind/serve/vllm_serve_args.json, and the description generated there is that file, byte for byte."""
    env = {"PYTHONPATH": REPO, "HOME": "/tmp"}
    out = _run(docker, _only(docker, SERVER), "-c", _SERVE_HELP, mounts={ROOT: REPO}, env=env).stdout
    found = json.loads(out.strip().splitlines()[-1])  # vLLM logs to stdout before it
    assert found["help"].startswith("usage: vllm serve")
    option_lines = [line for line in found["help"].splitlines() if re.match(r"  -", line)]  # argparse's indent
    listed = {flag for line in option_lines for flag in re.findall(r"(?:^  |, )(--?[A-Za-z][-\w.]*)", line)}
    described = json.loads(vllm_args.DATA_FILE.read_text())
    assert listed - {"-h", "--help"} == {flag for option in described["options"] for flag in option["flags"]}
    assert found["described"] == vllm_args.DATA_FILE.read_text()


def _export(work: Path) -> Path:
    """The export test_export.py's `exported` fixture wrote in the trainer image: the one complete
    export (the merger-failure test leaves an export folder without config.json)."""
    (export,) = {path.resolve() for path in work.glob(f"pytest/{EXPORT_GLOB}") if (path / "config.json").is_file()}
    return export


_REGISTRY = r"""
import json, sys
from safetensors import safe_open
from vllm.config import ModelConfig
from vllm.model_executor.models.registry import ModelRegistry
export = sys.argv[1]
config = ModelConfig(model=export, dtype="bfloat16", max_model_len=1024)
model_class, architecture = ModelRegistry.resolve_model_cls(config.architectures, config)
with safe_open(f"{export}/model.safetensors", "pt") as weights:
    names = sorted(weights.keys())
mapped = model_class.hf_to_vllm_mapper.apply_list(names)
print(json.dumps({"class": model_class.__name__, "architecture": architecture, "weights": len(names),
                  "mapped": len(mapped), "towers": sorted({n.split(".")[0] for n in mapped})}))
"""


def test_vllms_registry_in_the_server_image_resolves_the_export_and_maps_every_weight(tiny_omni_proofs, work, docker):
    assert tiny_omni_proofs.returncode == 0, "the trainer image's export test did not pass"
    export = _export(work)
    inside = f"{WORK}/{export.relative_to(work)}"
    out = _run(docker, _only(docker, SERVER), "-c", _REGISTRY, inside, mounts={work: WORK}, env={"HOME": "/tmp"}).stdout
    found = json.loads(out.splitlines()[-1])
    assert found["class"] == "Qwen2_5OmniThinkerForConditionalGeneration"
    assert found["mapped"] == found["weights"] > 0
    assert found["towers"] == ["audio_tower", "language_model", "visual"]


_PROCESSOR = r"""
import json, sys
import soundfile
from transformers import AutoProcessor
processor = AutoProcessor.from_pretrained(sys.argv[1])
audio, rate = soundfile.read(sys.argv[2], dtype="float32")
messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Entailed?"}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
batch = processor(text=text, audio=[audio], sampling_rate=rate, return_tensors="np")
ids = batch["input_ids"][0].tolist()
print(json.dumps({"class": type(processor).__name__, "rate": rate, "seconds": len(audio) / rate, "input_ids": ids,
                  "audio_tokens": ids.count(processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")),
                  "features": list(batch["input_features"].shape)}))
"""


def test_the_omni_processor_in_the_server_image_reads_an_alr_clip_as_this_environment_does(
    tiny_omni_proofs, work, docker, alr_clip
):
    """The exported processor, in the server image, on one spoken ALR row: the same tokens and
    feature shape as transformers here (the same version: both locked)."""
    assert tiny_omni_proofs.returncode == 0, "the trainer image's export test did not pass"
    export = _export(work)
    inside = [f"{WORK}/{export.relative_to(work)}", f"{WORK}/{alr_clip.relative_to(work)}"]
    out = _run(
        docker, _only(docker, SERVER), "-c", _PROCESSOR, *inside, mounts={work: WORK}, env={"HOME": "/tmp"}
    ).stdout
    found = json.loads(out.splitlines()[-1])
    here = subprocess.run([sys.executable, "-c", _PROCESSOR, str(export), str(alr_clip)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert found == json.loads(here.stdout.splitlines()[-1])
    assert found["class"] == "Qwen2_5OmniProcessor" and found["rate"] == 16000 and found["features"][1] == 128
    assert abs(found["audio_tokens"] - 25 * found["seconds"]) <= 2  # Omni's audio encoder: 25 tokens a second
