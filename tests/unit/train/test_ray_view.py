"""The head's cluster view (soundmind.train.ray_view) with no Ray cluster to look at. Its counts on a
real cluster are proved by tests/integration/test_ray_cluster.py."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_view_never_starts_a_cluster_of_its_own(tmp_path):
    """Without a running head, `ray.init()` would start a new one-node cluster here and the view
    would count that (and write a Ray auth token into HOME); the view must fail instead, so the
    head keeps waiting for the real one."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    env.update(TMPDIR=str(tmp_path / "tmp"), HOME=str(tmp_path / "home"))  # no cluster recorded, no token
    (tmp_path / "tmp").mkdir()

    done = subprocess.run(
        [sys.executable, "-m", "soundmind.train.ray_view"], env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode != 0, done.stdout
    assert done.stdout == ""
    assert not (tmp_path / "tmp" / "ray").exists() or not any((tmp_path / "tmp" / "ray").glob("session_*"))
    assert not (tmp_path / "home" / ".ray").exists()
