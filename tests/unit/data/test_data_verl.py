"""Prepared rows through verl 0.9.1's own dataset code (installed from PyPI by hack/requirements-verl.txt).

verl reads the parquet with `datasets`, builds the chat messages (`_build_messages`), measures every
prompt with the tokenizer or, for audio, with the processor, dropping rows that fail (so "no row
dropped" means every row went through), and batches with `collate_fn`. The tokenizer and processor are
the tiny Qwen2.5-Omni's (soundmind/models/tiny.py: a real `Qwen2_5OmniProcessor`, Whisper features
with 128 mel bins, 25 audio tokens per second), as verl's `HFModelConfig` loads them with SoundMind's
adapter; the last test carries the rows on through the agent loop's tokenization into the model.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from soundmind.data import prepare
from tests.support import tiny_omni

pytestmark = pytest.mark.verl

_NO_LIMIT = 1_000_000


@pytest.fixture(scope="module")
def verl(tmp_path_factory):
    """verl's dataset module, with the `datasets` cache kept in a temporary directory."""
    import datasets

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf-datasets"))
        from verl.utils.dataset import rl_dataset

        yield rl_dataset


@pytest.fixture(scope="module")
def tokenizer(omni_model_config):
    return omni_model_config.tokenizer


@pytest.fixture(scope="module")
def processor(omni_model_config):
    return omni_model_config.processor


def _config(tmp_path, max_prompt_length=_NO_LIMIT, **overrides):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "max_prompt_length": max_prompt_length,
            # In-process (null): datasets' worker pool forks, and a fork of this pytest process, whose
            # torch threads the tiny-model tests started, can deadlock in the child.
            "filter_overlong_prompts_workers": None,
            "cache_dir": str(tmp_path / "verl-cache"),
            **overrides,
        }
    )


def _rows_in(path) -> int:
    return pq.read_metadata(path).num_rows


def test_text_rows_through_the_stock_rlhf_dataset(verl, tokenizer, alr_dev_dir, spoken_dir, tmp_path):
    (dev,) = prepare.prepare(alr_dev_dir, tmp_path / "dev", "text")
    (spoken,) = prepare.prepare(spoken_dir, tmp_path / "spoken", "text")
    data_files = [str(dev.path), str(spoken.path)]

    dataset = verl.RLHFDataset(data_files, tokenizer, _config(tmp_path))

    assert len(dataset) == dev.rows + spoken.rows  # no prompt failed to tokenize
    item = dataset[dev.rows + 1]
    row = pq.read_table(spoken.path).to_pylist()[1]
    assert item["raw_prompt"] == row["prompt"]
    assert item["index"] == 1 and item["extra_info"]["id"] == row["extra_info"]["id"]
    assert item["reward_model"] == row["reward_model"] and item["data_source"] == "soundmind/alr"
    batch = verl.collate_fn([dataset[0], item])
    assert list(batch["index"]) == [0, 1]
    assert tuple(batch["dummy_tensor"].shape) == (2, 1)


@pytest.mark.parametrize(
    ("modality", "audio_ref"), [("audio-text", "bytes"), ("audio", "bytes"), ("audio-text", "path")]
)
def test_audio_rows_through_verl_with_an_audio_processor(
    verl, tokenizer, processor, spoken_dir, tmp_path, modality, audio_ref
):
    from soundmind.data.verl_dataset import AudioRLHFDataset

    (summary,) = prepare.prepare(spoken_dir, tmp_path / "out", modality, audio_ref=audio_ref)
    rows = pq.read_table(summary.path).to_pylist()

    dataset = AudioRLHFDataset(str(summary.path), tokenizer, _config(tmp_path), processor=processor)
    assert len(dataset) == len(rows)  # every row's audio was decoded and measured by the processor

    for index, row in enumerate(rows):
        messages = dataset[index]["raw_prompt"]
        (message,) = messages
        audio_part, *text_parts = message["content"]
        assert audio_part == {"type": "audio", "audio": row["audios"][0]}
        assert [part["type"] for part in text_parts] == ["text"]
        assert text_parts[0]["text"] == row["prompt"][0]["content"].removeprefix("<audio>")

        # What the agent loop does before generation: pull the audio out of the messages.
        _, _, audios = AudioRLHFDataset._process_multi_modal_info(messages, 14, dataset.config)
        (waveform,) = audios
        assert waveform.dtype == np.float32
        assert waveform.size == round(row["extra_info"]["question_seconds"] * 16_000)


def test_the_length_filter_counts_audio_tokens(verl, tokenizer, processor, spoken_dir, tmp_path):
    """Prompts short in text but long in audio are dropped when the limit is below their audio length."""
    from soundmind.data.verl_dataset import AudioRLHFDataset

    (summary,) = prepare.prepare(spoken_dir, tmp_path / "out", "audio")
    table = pq.read_table(summary.path)
    shortest = min(info["question_seconds"] for info in table["extra_info"].to_pylist())
    limit = int(shortest * tiny_omni.AUDIO_TOKENS_PER_SECOND * 0.9)
    text_tokens = max(
        len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)["input_ids"])
        for prompt in table["prompt"].to_pylist()
    )
    assert text_tokens < limit  # the text alone would pass

    strict = AudioRLHFDataset(str(summary.path), tokenizer, _config(tmp_path, limit), processor=processor)
    assert len(strict) == 0


def test_stock_message_building_accepts_audio_rows(verl, tokenizer, processor, spoken_dir, tmp_path):
    (summary,) = prepare.prepare(spoken_dir, tmp_path / "out", "audio-text")
    config = _config(tmp_path, filter_overlong_prompts=False)

    dataset = verl.RLHFDataset(str(summary.path), tokenizer, config, processor=processor)

    assert len(dataset) == _rows_in(summary.path)
    for index in range(len(dataset)):
        (message,) = dataset[index]["raw_prompt"]
        assert [part["type"] for part in message["content"]] == ["audio", "text"]


def test_verl_finds_the_dataset_class_by_its_documented_setting(verl):
    from omegaconf import OmegaConf

    from soundmind.data.verl_dataset import AudioRLHFDataset

    config = OmegaConf.create({"custom_cls": {"path": "pkg://soundmind.data.verl_dataset", "name": "AudioRLHFDataset"}})
    assert verl.get_dataset_class(config) is AudioRLHFDataset


def test_prepared_rows_reach_the_omni_model_through_verl(
    verl, tokenizer, processor, omni_model_config, omni_engine, spoken_dir, tmp_path
):
    """ALR rows as training sees them: verl's dataset and collate, the agent loop's audio extraction
    (through the dataset class, which decodes the WAV bytes) and tokenization, the engine's packing,
    and the adapted model's forward, which agrees with the unpacked model."""
    import asyncio

    import torch
    from verl.utils.model import extract_multi_modal_inputs

    from soundmind.data.verl_dataset import AudioRLHFDataset
    from tests.support.verl_rollout import AgentLoop, packed_micro_batch, padded

    (summary,) = prepare.prepare(spoken_dir, tmp_path / "out", "audio-text")
    dataset = AudioRLHFDataset(str(summary.path), tokenizer, _config(tmp_path), processor=processor)
    batch = verl.collate_fn([dataset[index] for index in range(len(dataset))])
    assert len(batch["raw_prompt"]) == _rows_in(summary.path)

    samples = []
    for messages in batch["raw_prompt"]:
        _, _, audios = asyncio.run(dataset.process_multi_modal_info(messages, 14, dataset.config))
        samples.append((messages, audios, tokenizer.encode("Answer")))
    rows = AgentLoop(omni_model_config, response_length=8).rows(samples)
    seconds = [info["question_seconds"] for info in batch["extra_info"]]
    for row, length in zip(rows, seconds, strict=True):
        assert row.multi_modal_inputs["input_features"].shape[1] == 128
        audio_tokens = row.prompt_ids.count(processor.audio_token_id)
        assert abs(audio_tokens - length * tiny_omni.AUDIO_TOKENS_PER_SECOND) <= 1

    module = omni_engine._build_module().float()
    with torch.no_grad():
        model_inputs, _ = omni_engine.prepare_model_inputs(packed_micro_batch(rows))
        packed = module(**model_inputs, use_cache=False).logits[0]
        attention_mask = padded(rows, "attention_mask")
        reference = module(
            input_ids=padded(rows, "input_ids"),
            attention_mask=attention_mask,
            **extract_multi_modal_inputs([row.multi_modal_inputs for row in rows]),
            use_cache=False,
        ).logits[attention_mask.bool()]
    assert packed.shape[0] == int(attention_mask.sum()) and torch.isfinite(packed).all()
    assert (packed - reference).abs().max() < 1e-4
