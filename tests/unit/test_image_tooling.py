"""The pure parts of hack/images (the offline image builds): reading apt's sources, naming and keying
the debootstrapped base, choosing the wheels that fit the images, the build command and the labels it
gives the images."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hack.images import base, build, wheels
from soundmind import version

ONE_LINE = """\
# a comment
deb http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://mirror.example/debian-security bookworm-security main
"""

DEB822 = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

# disabled
Types: deb
URIs: http://old.example/debian
Suites: bookworm-security
Enabled: no

Types: deb deb-src
URIs: http://a.example/debian-security
 http://b.example/debian-security
Suites: bookworm-security
"""


def test_one_line_sources_give_their_binary_uris_and_suites():
    assert base.parse_sources_list(ONE_LINE) == [
        base.AptSource("http://deb.debian.org/debian", ("bookworm",)),
        base.AptSource("https://mirror.example/debian-security", ("bookworm-security",)),
    ]


def test_deb822_sources_skip_disabled_stanzas_and_read_continued_fields():
    assert base.parse_deb822(DEB822) == [
        base.AptSource("http://deb.debian.org/debian", ("bookworm", "bookworm-updates")),
        base.AptSource("http://a.example/debian-security", ("bookworm-security",)),
        base.AptSource("http://b.example/debian-security", ("bookworm-security",)),
    ]


def test_the_mirrors_are_apts_own_for_bookworm_and_its_security_updates():
    mirrors = base.choose_mirrors(base.parse_deb822(DEB822))
    assert mirrors == base.Mirrors("http://deb.debian.org/debian", "http://a.example/debian-security")
    assert base.choose_mirrors([], override="http://m.example/debian/").main == "http://m.example/debian"


def test_a_host_without_a_bookworm_source_is_told_how_to_name_a_mirror():
    with pytest.raises(base.BaseError, match=base.MIRROR_ENV):
        base.choose_mirrors([base.AptSource("http://archive.ubuntu.com/ubuntu", ("noble",))])


def test_the_images_apt_sources_carry_no_credentials():
    sources = base.image_sources(base.Mirrors("https://user:secret@mirror.example:8443/debian", None))
    assert "URIs: https://mirror.example:8443/debian\n" in sources
    assert "secret" not in sources and "security" not in sources


def test_the_base_is_keyed_by_what_decides_it_and_tagged_by_its_packages():
    mirrors = base.Mirrors("http://deb.debian.org/debian", "http://deb.debian.org/debian-security")
    python_only = base.Base(base.PYTHON_PACKAGES, mirrors)
    with_audio = base.Base(tuple(sorted({*base.PYTHON_PACKAGES, "ffmpeg"})), mirrors)
    assert python_only.tag == "soundmind-base:bookworm"
    assert with_audio.tag.startswith("soundmind-base:bookworm-") and with_audio.tag != python_only.tag
    other_mirror = base.Base(base.PYTHON_PACKAGES, base.Mirrors("http://m.example/debian", None))
    assert len({python_only.key, with_audio.key, other_mirror.key}) == 3
    assert python_only.tarball(Path("/c")) == Path(f"/c/base/soundmind-base-bookworm-{python_only.key}.tar")


def test_a_base_named_by_the_environment_is_built_on_as_it_is(monkeypatch):
    monkeypatch.setenv(base.GIVEN_BASE_ENV, "python:3.11-slim-bookworm")
    given = base.base_for(("ffmpeg",))
    assert given == base.GivenBase("python:3.11-slim-bookworm")  # no debootstrap, no mirrors read
    image, wheel_files = build.IMAGES["operator"], [Path("/pool/pyyaml-6.0.4-py3-none-any.whl")]
    pinned = base.GivenBase("python:3.11-slim-bookworm@sha256:" + "0" * 64)
    assert build.inputs_hash(image, given, wheel_files, "s") != build.inputs_hash(image, pinned, wheel_files, "s")


@pytest.mark.parametrize(
    ("wheel", "fits"),
    [
        ("pyyaml-6.0.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", True),
        ("pydantic-2.14.4-py3-none-any.whl", True),
        ("cryptography-46.0.0-cp38-abi3-manylinux_2_34_x86_64.whl", True),
        ("antlr4_python3_runtime-4.9.3-py3-none-any.whl", True),  # built here from its sdist
        ("x-1.0-cp311-cp311-linux_x86_64.whl", True),
        ("x-1.0-cp311-cp311-manylinux_2_39_x86_64.whl", False),  # newer glibc than bookworm's
        ("x-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", False),
        ("x-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", False),
        ("x-1.0-cp311-cp311-macosx_11_0_arm64.whl", False),
        ("not-a-wheel.whl", False),
    ],
)
def test_only_wheels_for_cpython_311_on_bookworm_x86_64_fit(wheel, fits):
    assert wheels.fits(wheel) is fits


def test_a_lock_with_a_loose_line_is_refused_naming_it(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# header\npyyaml==6.0.4\nrequests>=2\n")
    with pytest.raises(wheels.WheelError, match=r"requests>=2; hack/lock-images.sh"):
        wheels.read_pins(lock)
    lock.write_text("# header\npyyaml==6.0.4\n\nPyYAML==6.0.4  # same\n")
    assert wheels.read_pins(lock) == ["pyyaml==6.0.4", "PyYAML==6.0.4"]


def _pool(tmp_path: Path, *names: str, python: str = "/nonexistent/python") -> wheels.Pool:
    directory = tmp_path / "pool"
    directory.mkdir()
    for name in names:
        (directory / name).write_bytes(b"wheel")
    return wheels.Pool(directory, python)


def test_pins_the_pool_holds_are_taken_from_it_without_pip(tmp_path):
    pool = _pool(
        tmp_path,
        "python_dateutil-4.0.0-py3-none-any.whl",  # the lock spells it python-dateutil
        "pyyaml-6.0.4-cp311-cp311-manylinux_2_17_x86_64.whl",
        "pyyaml-6.0.3-cp311-cp311-manylinux_2_17_x86_64.whl",
    )
    assert [w.name for w in pool.ensure(["python-dateutil==4.0.0", "PyYAML==6.0.4"])] == [
        "python_dateutil-4.0.0-py3-none-any.whl",
        "pyyaml-6.0.4-cp311-cp311-manylinux_2_17_x86_64.whl",
    ]


def test_a_pin_pip_leaves_only_an_unfitting_wheel_for_is_named(tmp_path):
    """pip ran on a machine of another kind (here `true`, a pip that leaves the pool as it is)."""
    pool = _pool(tmp_path, "pyyaml-6.0.4-cp311-cp311-macosx_11_0_arm64.whl", python=shutil.which("true"))
    with pytest.raises(wheels.WheelError, match=r"pyyaml==6.0.4.*macosx_11_0_arm64"):
        pool.ensure(["pyyaml==6.0.4"])


def test_a_dry_run_prints_the_fetch_and_fetches_nothing(tmp_path, capsys):
    pool = _pool(tmp_path)
    assert pool.ensure(["pyyaml==6.0.4", "verl==0.9.1"], dry_run=True) == []
    err = capsys.readouterr().err
    assert f"would fetch 2 of 2 wheels: {pool.python} -m pip wheel --no-deps --wheel-dir {pool.directory} " in err
    assert err.rstrip().endswith("pyyaml==6.0.4 verl==0.9.1") and not list(pool.directory.iterdir())


def test_wheels_are_placed_in_the_build_context_as_links(tmp_path):
    pool = _pool(tmp_path, "a-1-py3-none-any.whl")
    context = tmp_path / "context"
    (context / "stale.whl").parent.mkdir()
    (context / "stale.whl").write_bytes(b"old")
    wheels.place([pool.directory / "a-1-py3-none-any.whl"], context)
    assert [p.name for p in context.iterdir()] == ["a-1-py3-none-any.whl"]
    assert os.path.samefile(context / "a-1-py3-none-any.whl", pool.directory / "a-1-py3-none-any.whl")


def test_the_project_wheel_is_built_from_the_package_sources_only():
    files = wheels.project_files()
    assert Path("pyproject.toml") in files and Path("soundmind/serve/vllm_serve_args.json") in files
    assert Path("operator/soundmind_operator/main.py") in files
    assert files[:2] == [Path("pyproject.toml"), Path("README.md")]
    assert all(f.parts[0] in ("soundmind", "operator") and "__pycache__" not in f.parts for f in files[2:])


def test_the_images_debian_packages_come_from_their_dockerfiles():
    assert build.IMAGES["operator"].debian_packages() == ()
    trainer = build.IMAGES["trainer"].debian_packages()
    assert "espeak-ng" in trainer and "ffmpeg" in trainer and "python3" not in trainer


def test_the_build_runs_with_no_network_on_the_given_base():
    image = build.IMAGES["standin"]
    command = build.build_command(image, "soundmind-base:bookworm", "abc", "0123abc")
    assert command[0] == "build" and command[-1] == str(build.ROOT)
    assert {
        "--network=none",
        "--build-arg=BASE=soundmind-base:bookworm",
        f"--label={build.INPUTS_LABEL}=abc",
        f"--file={build.ROOT / 'images/standin/Dockerfile'}",
        "--tag=soundmind-standin:dev",
    } <= set(command)


def test_an_images_inputs_change_with_its_wheels_sources_and_base():
    image = build.IMAGES["operator"]
    mirrors = base.Mirrors("http://deb.debian.org/debian", None)
    base_image = base.Base(base.PYTHON_PACKAGES, mirrors)
    wheel_files = [Path("/pool/pyyaml-6.0.4-py3-none-any.whl")]
    reference = build.inputs_hash(image, base_image, wheel_files, "sources-1")
    assert build.inputs_hash(image, base_image, wheel_files, "sources-1") == reference
    assert build.inputs_hash(image, base_image, wheel_files, "sources-2") != reference
    assert build.inputs_hash(image, base_image, [Path("/pool/pyyaml-6.0.3-py3-none-any.whl")], "sources-1") != reference
    other_base = base.Base(base.PYTHON_PACKAGES, base.Mirrors("http://m.example/debian", None))
    assert build.inputs_hash(image, other_base, wheel_files, "sources-1") != reference
    server = build.IMAGES["server"]  # installs no soundmind wheel: the sources do not matter
    assert build.inputs_hash(server, base_image, [], "a") == build.inputs_hash(server, base_image, [], "b")


@pytest.mark.parametrize("name", sorted(build.IMAGES))
def test_every_image_is_labelled_with_its_source_version_and_revision(name):
    command = build.build_command(build.IMAGES[name], "soundmind-base:bookworm", "abc", "0123abc")
    labels = dict(arg.removeprefix("--label=").split("=", 1) for arg in command if arg.startswith("--label="))
    assert labels == {
        build.INPUTS_LABEL: "abc",
        "org.opencontainers.image.source": "https://github.com/soundmind-ai/soundmind-k8s",
        "org.opencontainers.image.version": version.VERSION,
        "org.opencontainers.image.revision": "0123abc",
    }
    unlabelled = build.build_command(build.IMAGES[name], "soundmind-base:bookworm", "abc", None)
    assert not any("image.revision" in arg for arg in unlabelled)


def test_the_source_label_is_the_operator_charts_home():
    chart = yaml.safe_load((build.ROOT / "charts/soundmind-operator/Chart.yaml").read_text())
    assert build.oci_labels(None)["org.opencontainers.image.source"] == chart["home"]


def test_a_new_version_rebuilds_even_the_image_without_project_sources(monkeypatch):
    server = build.IMAGES["server"]
    given = base.GivenBase("python:3.11-slim-bookworm")
    before = build.inputs_hash(server, given, [], "s")
    monkeypatch.setattr(build, "VERSION", "9.9.9")
    assert build.inputs_hash(server, given, [], "s") != before


def _git(tree: Path, *args: str) -> str:
    environment = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    environment |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    git = subprocess.run(["git", "-C", str(tree), *args], check=True, capture_output=True, text=True, env=environment)
    return git.stdout


def test_the_revision_is_heads_commit_marked_dirty_by_changed_tracked_files(tmp_path):
    _git(tmp_path, "init", "--quiet")
    (tmp_path / "a").write_text("1")
    _git(tmp_path, "add", "a")
    _git(tmp_path, "commit", "--quiet", "--message=one")
    head = _git(tmp_path, "rev-parse", "HEAD").strip()
    assert build.git_revision(tmp_path) == head
    (tmp_path / "untracked").write_text("not in the image's history")
    assert build.git_revision(tmp_path) == head
    (tmp_path / "a").write_text("2")
    assert build.git_revision(tmp_path) == f"{head}-dirty"


def test_a_tree_that_is_not_a_git_checkout_has_no_revision(tmp_path):
    assert build.git_revision(tmp_path) is None
    _git(tmp_path, "init", "--quiet")
    (tmp_path / "unpacked").mkdir()  # a source archive unpacked inside some other checkout
    assert build.git_revision(tmp_path / "unpacked") is None
