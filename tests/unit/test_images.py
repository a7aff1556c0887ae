"""The Dockerfiles keep the security, offline-build and reproducibility promises, and the locks the
versions that pyproject.toml and verl pin (these checks read what a build would run; the images
themselves are built and run by tests/integration/test_built_images.py)."""

import importlib.metadata
import pathlib
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from hack.images import build
from soundmind.train import contract
from soundmind.train.verl_config import VERL_VERSION
from soundmind_operator.serving import names as serving_names

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGES = sorted(p.parent.name for p in (ROOT / "images").glob("*/Dockerfile"))


def _dockerfile(image: str) -> str:
    return (ROOT / "images" / image / "Dockerfile").read_text()


def _lock(image: str) -> dict[str, Version]:
    lines = (ROOT / "images" / image / "requirements.lock").read_text().splitlines()
    pins = (line.split("==") for line in lines if line and not line.startswith("#"))
    return {canonicalize_name(name): Version(version) for name, version in pins}


def test_every_image_has_a_dockerfile_that_make_images_builds():
    assert IMAGES == ["operator", "server", "standin", "trainer"]
    assert sorted(build.IMAGES) == IMAGES


@pytest.mark.parametrize("image", IMAGES)
def test_image_runs_as_a_numeric_non_root_user(image):
    users = re.findall(r"^USER\s+(\S+)", _dockerfile(image), re.M)
    assert users, f"{image}: no USER line, so it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{image}: final USER {users[-1]!r} must be a numeric non-root uid"


@pytest.mark.parametrize("image", IMAGES)
def test_image_installs_from_its_lock(image):
    assert f"source=images/{image}/requirements.lock" in _dockerfile(image)
    lock = ROOT / "images" / image / "requirements.lock"
    pins = [line for line in lock.read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[a-z0-9._-]+==[^=\s]+", p) for p in pins), f"{lock} has unpinned lines"


@pytest.mark.parametrize("image", IMAGES)
def test_image_builds_with_no_network_from_the_wheels_the_host_fetched(image):
    """Every pip install reads only the mounted wheels, each image mounts only its own wheels (and
    the project's, when it installs soundmind), and no `# syntax=` line makes BuildKit pull a frontend."""
    dockerfile = _dockerfile(image)
    installs = re.findall(r"pip install[^&\n]*", dockerfile)
    assert installs and all("--no-index" in line for line in installs), installs
    sources = set(re.findall(r"--mount=type=bind,source=([^,\s]+)", dockerfile))
    expected = {f".build/wheels/{image}", f"images/{image}/requirements.lock"}
    assert sources == expected | ({".build/project"} if build.IMAGES[image].project else set())
    assert not re.search(r"^#\s*syntax=", dockerfile, re.M | re.I)


def _final_uid(image: str) -> int:
    users = re.findall(r"^USER\s+(\S+)", _dockerfile(image), re.M)
    return int(users[-1].split(":")[0])


def test_pods_run_as_the_images_users():
    """The operator's pod specs name the uid the image was built with: a mismatch makes volumes
    unwritable (fsGroup) or runAsNonRoot checks fail."""
    assert _final_uid("trainer") == contract.TRAINER_UID
    assert _final_uid("server") == serving_names.SERVER_UID
    assert _final_uid("standin") == serving_names.SERVER_UID  # it stands in for the server in serving pods


def test_operator_image_needs_no_verl():
    """The operator checks verl overrides against the schema soundmind ships (issue 21, point 4)."""
    instructions = [line for line in _dockerfile("operator").splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in instructions if "verl" in line]
    assert not [pin for pin in build.IMAGES["operator"].pins() if pin.split("==")[0].lower() == "verl"]


def _bases(image: str) -> list[str]:
    """The images each FROM starts from, with `${BASE}` resolved to its ARG default."""
    dockerfile = _dockerfile(image)
    arguments = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", dockerfile, re.M))
    return [re.sub(r"\$\{(\w+)\}", lambda m: arguments[m.group(1)], base) for base in _froms(dockerfile)]


def _froms(dockerfile: str) -> list[str]:
    return re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)


@pytest.mark.parametrize("image", IMAGES)
def test_image_takes_its_base_from_a_build_argument(image):
    """The same file builds on the official image (the default) and on the debootstrapped one."""
    assert _froms(_dockerfile(image)) == ["${BASE}"]


@pytest.mark.parametrize("image", IMAGES)
def test_image_runs_the_python_its_lock_is_resolved_for(image):
    """hack/lock-images.sh resolves every lock for one CPython; the base must be that Python's image,
    not a distribution that would have to install (or cannot package) it."""
    locked = re.search(r"py=\$\{PYTHON:-python(3\.\d+)\}", (ROOT / "hack" / "lock-images.sh").read_text()).group(1)
    bases = _bases(image)
    assert bases and all(base.startswith(f"python:{locked}-slim-") for base in bases), bases
    assert not [p for p in build.IMAGES[image].debian_packages() if p.startswith("python")]


@pytest.mark.parametrize("image", ["server", "trainer"])
def test_gpu_images_get_cuda_from_their_locked_wheels(image):
    locks = (ROOT / "images" / image / "requirements.lock").read_text()
    assert re.search(r"^nvidia-cuda-runtime==", locks, re.M) and re.search(r"^nvidia-nccl-cu\d+==", locks, re.M)


# -- the locked versions are the ones pyproject.toml and verl pin -------------------------------

LOCKED_EXTRAS = {"trainer": "train", "server": "server"}  # hack/lock-images.sh: image -> pyproject extra
VERL_EXTRA = "vllm"  # pyproject's train extra installs verl[vllm]


def _mismatch(image: str, requirement: Requirement, source: str) -> str | None:
    name = canonicalize_name(requirement.name)
    locked = _lock(image).get(name)
    if locked is None:
        return f"images/{image}/requirements.lock has no {name}, which {source} pins to {requirement.specifier}"
    if not requirement.specifier.contains(locked, prereleases=True):
        return f"images/{image}/requirements.lock has {name}=={locked}, but {source} pins {name}{requirement.specifier}"
    return None


@pytest.mark.parametrize("image", sorted(LOCKED_EXTRAS))
def test_locks_have_the_versions_pyproject_pins(image):
    extra = LOCKED_EXTRAS[image]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = [Requirement(r) for r in project["optional-dependencies"][extra]]
    pinned = [r for r in pinned if any(s.operator == "==" for s in r.specifier)]
    assert pinned, f"pyproject.toml's {extra} extra pins nothing exactly"
    problems = [_mismatch(image, r, f"pyproject.toml's {extra} extra") for r in pinned]
    assert not [p for p in problems if p], "\n".join(filter(None, problems))


def _verl_requirements() -> list[Requirement]:
    """verl's requirements for the extras pyproject installs it with (verl[vllm] and the extras that
    one names, e.g. verl[verl-core]), from the wheel's own metadata."""
    assert importlib.metadata.version("verl") == VERL_VERSION
    requirements = [Requirement(r) for r in importlib.metadata.requires("verl")]
    extras, more = set(), {VERL_EXTRA}
    while more:
        extras |= more
        more = {
            extra
            for r in requirements
            if r.name == "verl" and r.marker and any(r.marker.evaluate({"extra": e}) for e in extras)
            for extra in r.extras
        } - extras
    return [
        r
        for r in requirements
        if r.name != "verl" and (r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras))
    ]


def test_the_trainer_lock_satisfies_every_requirement_of_verl():
    source = f"verl {VERL_VERSION} (verl[{VERL_EXTRA}])"
    problems = [_mismatch("trainer", r, source) for r in _verl_requirements()]
    assert not [p for p in problems if p], "\n".join(filter(None, problems))


def test_the_server_runs_the_versions_verl_rolls_out_with():
    """What verl pins exactly (vLLM, torch, transformers) is the stack its rollouts ran on: the
    server must serve the trained model with the same."""
    exact = [r for r in _verl_requirements() if any(s.operator == "==" for s in r.specifier)]
    assert {"vllm", "torch"} <= {r.name for r in exact}
    server = _lock("server")
    source = f"verl {VERL_VERSION} (verl[{VERL_EXTRA}])"
    problems = [_mismatch("server", r, source) for r in exact if canonicalize_name(r.name) in server]
    assert not [p for p in problems if p], "\n".join(filter(None, problems))
