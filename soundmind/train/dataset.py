"""Where the training data is, and preparing it once when the spec points at a raw ALR layout.

`dataset.path` is either a prepared directory (`train.parquet`, `dev.parquet`) or a raw ALR layout.
A raw layout is prepared into `<path>/prepared/<modality>/` on the data volume. Pods of the same or
of other trainings may start together on the same volume, so preparation holds an exclusive lock
(flock on `<path>/prepared/.<modality>.lock`), re-checks for a finished copy under it, and marks the
copy finished by atomically renaming a `.complete` file into place last. A pod killed mid-way leaves
no marker, and the next one prepares again.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from soundmind import atomic
from soundmind.api.training import Modality
from soundmind.errors import ConfigError
from soundmind.train.budget import PromptEstimate

TRAIN_FILE = "train.parquet"
VAL_FILE = "dev.parquet"
PREPARED_DIR = "prepared"
COMPLETE_MARKER = ".complete"


@dataclass(frozen=True)
class DatasetFiles:
    directory: Path  # holds TRAIN_FILE and VAL_FILE (once prepared)
    raw_root: Path | None  # the raw ALR layout it is prepared from, if any
    absent: bool = False  # not on this machine (a dry run elsewhere than in the pod)

    @property
    def train(self) -> Path:
        return self.directory / TRAIN_FILE

    @property
    def val(self) -> Path:
        return self.directory / VAL_FILE

    @property
    def ready(self) -> bool:
        if self.absent:
            return False
        if self.raw_root is None:
            return True
        return (self.directory / COMPLETE_MARKER).is_file()

    @property
    def pending(self) -> str:
        """Why the data checks wait for the pod (when not `ready`)."""
        if self.absent:
            return f"{self.directory} is not on this machine"
        return f"{self.directory} is prepared from {self.raw_root} on start"


def locate(path: str | Path, modality: str, absent_ok: bool = False) -> DatasetFiles:
    """The parquet files for `dataset.path`; ConfigError when it is neither prepared data of this
    modality nor a raw ALR layout with the splits training needs. `absent_ok`: a path that does not
    exist here is accepted, unchecked (a dry run away from the data volume)."""
    from soundmind.data.layouts import detect_layout, present_splits
    from soundmind.errors import DataError

    root = Path(path)
    if absent_ok and not root.exists():
        return DatasetFiles(directory=root, raw_root=None, absent=True)
    if (root / TRAIN_FILE).is_file():
        if not (root / VAL_FILE).is_file():
            raise ConfigError("dataset.path", f"{root} has {TRAIN_FILE} but no {VAL_FILE} (the validation split)")
        files = DatasetFiles(directory=root, raw_root=None)
        _check_modality(files, modality)
        return files
    try:
        layout = detect_layout(root)
    except DataError as exc:
        raise ConfigError(
            "dataset.path", f"{root} holds neither prepared data ({TRAIN_FILE}, {VAL_FILE}) nor a raw ALR layout: {exc}"
        ) from None
    needed = [Path(name).stem for name in (TRAIN_FILE, VAL_FILE)]
    present = present_splits(root, layout)
    if missing := [split for split in needed if split not in present]:
        raise ConfigError(
            "dataset.path",
            f"the raw ALR layout at {root} ({layout.value}) has splits {present}; training needs {needed}, "
            f"missing {missing}",
        )
    return DatasetFiles(directory=root / PREPARED_DIR / modality, raw_root=root)


def _check_modality(files: DatasetFiles, modality: str) -> None:
    from soundmind.data.prepare import prepared_modality

    for path in (files.train, files.val):
        try:
            found = prepared_modality(path)
        except (OSError, ValueError) as exc:
            raise ConfigError("dataset.path", f"{path} is not a prepared ALR split: {exc}") from None
        if found != Modality(modality):
            raise ConfigError(
                "dataset.modality",
                f"'{modality}', but {path} was prepared for '{found}'; set dataset.modality: {found} or "
                f"prepare the data again with --modality {modality}",
            )


def ensure_prepared(
    files: DatasetFiles,
    modality: str,
    prepare: Callable[[Path, Path, str], object] | None = None,
    timeout: float = 6 * 3600,
    poll: float = 1.0,
) -> bool:
    """Prepare a raw layout unless a finished copy exists; True when this call prepared it.
    `prepare(raw_root, out_dir, modality)` defaults to soundmind.data's."""
    if files.ready:
        return False
    if prepare is None:
        from soundmind.data.prepare import prepare
    files.directory.mkdir(parents=True, exist_ok=True)
    lock_path = files.directory.parent / f".{modality}.lock"
    with open(lock_path, "a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another process has held {lock_path} for {timeout:g}s while preparing {files.directory}"
                    ) from None
                time.sleep(poll)
        try:
            if files.ready:  # someone else finished while we waited
                return False
            prepare(files.raw_root, files.directory, modality)
            _mark_complete(files.directory, {"source": str(files.raw_root), "modality": modality})
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _mark_complete(directory: Path, info: dict) -> None:
    atomic.write_text(directory / COMPLETE_MARKER, json.dumps(info) + "\n")


def row_count(parquet: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(parquet).metadata.num_rows


def longest_prompt(parquet: Path) -> PromptEstimate | None:
    """The row of a prepared split that needs the most prompt tokens (None for an empty split).
    Reads only the prompt text and extra_info columns, never the embedded audio."""
    import pyarrow.parquet as pq

    table = pq.read_table(parquet, columns=["prompt", "extra_info"])
    longest = None
    for prompt, info in zip(table.column("prompt").to_pylist(), table.column("extra_info").to_pylist(), strict=True):
        estimate = PromptEstimate(
            sample_id=str(info.get("id")),
            audio_seconds=info.get("question_seconds") or 0.0,
            text_chars=sum(len(message.get("content") or "") for message in prompt),
        )
        if longest is None or estimate.tokens > longest.tokens:
            longest = estimate
    return longest
