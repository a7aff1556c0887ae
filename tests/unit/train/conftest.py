"""Prepared data sets in the exact row format of soundmind.data.prepare, small enough to write per test."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from soundmind.api.training import Modality
from soundmind.data.prepare import prompt_messages, row_schema


def write_split(path: Path, rows: int, modality: str = "audio-text", question_seconds: float = 90.0) -> None:
    modality = Modality(modality)
    records = []
    for index in range(rows):
        record = {
            "data_source": "soundmind/alr",
            "prompt": prompt_messages("All poets are runners. Are all runners poets?", modality),
            "ability": "logical-reasoning",
            "reward_model": {"style": "rule", "ground_truth": "not-entailed"},
            "extra_info": {
                "split": path.stem,
                "index": index,
                "id": f"{path.stem}-{index}",
                "label": 0,
                "ref_answer_words": 100,
                "ref_final_answer": "not-entailed",
                "cot_consistent": True,
                "question_seconds": question_seconds if modality.has_audio and index == rows - 1 else None,
                "ref_answer_seconds": None,
            },
        }
        if modality.has_audio:
            record["audios"] = [{"bytes": b"RIFF", "path": None}]
        records.append(record)
    pq.write_table(pa.Table.from_pylist(records, schema=row_schema(modality)), path)


@pytest.fixture
def prepared(tmp_path: Path):
    """make(rows, modality, question_seconds) -> directory with train.parquet and dev.parquet."""

    def make(rows: int = 64, modality: str = "audio-text", question_seconds: float = 90.0) -> Path:
        directory = tmp_path / f"prepared-{modality}-{rows}-{question_seconds:g}"
        directory.mkdir()
        write_split(directory / "train.parquet", rows, modality, question_seconds)
        write_split(directory / "dev.parquet", 8, modality, question_seconds)
        return directory

    return make


@pytest.fixture
def spec_file(tmp_path: Path):
    def make(spec: dict) -> Path:
        path = tmp_path / "training.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    return make
