"""The Dockerfiles keep the security and reproducibility promises (no Docker engine here to build
them; these checks read what the build would run)."""

import pathlib
import re

import pytest

from soundmind.train import contract
from soundmind.train.verl_config import VERL_VERSION
from soundmind_operator.serving import names as serving_names

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGES = sorted(p.parent.name for p in (ROOT / "images").glob("*/Dockerfile"))


def test_every_image_has_a_dockerfile():
    assert IMAGES == ["operator", "server", "trainer"]


@pytest.mark.parametrize("image", IMAGES)
def test_image_runs_as_a_numeric_non_root_user(image):
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "images" / image / "Dockerfile").read_text(), re.M)
    assert users, f"{image}: no USER line, so it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{image}: final USER {users[-1]!r} must be a numeric non-root uid"


@pytest.mark.parametrize("image", IMAGES)
def test_image_installs_from_its_lock(image):
    dockerfile = (ROOT / "images" / image / "Dockerfile").read_text()
    lock = ROOT / "images" / image / "requirements.lock"
    assert "requirements.lock" in dockerfile
    pins = [line for line in lock.read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[a-z0-9._-]+==[^=\s]+", p) for p in pins), f"{lock} has unpinned lines"


def _final_uid(image: str) -> int:
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "images" / image / "Dockerfile").read_text(), re.M)
    return int(users[-1].split(":")[0])


def test_pods_run_as_the_images_users():
    """The operator's pod specs name the uid the image was built with: a mismatch makes volumes
    unwritable (fsGroup) or runAsNonRoot checks fail."""
    assert _final_uid("trainer") == contract.TRAINER_UID
    assert _final_uid("server") == serving_names.SERVER_UID


def test_operator_image_ships_the_verl_schema_it_validates_against():
    dockerfile = (ROOT / "images" / "operator" / "Dockerfile").read_text()
    assert f"--no-deps verl=={VERL_VERSION}" in dockerfile
