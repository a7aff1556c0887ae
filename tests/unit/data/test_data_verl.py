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


def test_the_prompt_budget_check_holds_the_agent_loops_real_prompts(
    verl, tokenizer, processor, omni_model_config, spoken_dir, tmp_path
):
    """The length check the product runs: `render` refuses a `maxPromptLength` its data cannot fit
    (`_check_prompt_budget`, before any GPU), since the rendered config turns verl's own length filter
    off and the agent loop then refuses a longer audio prompt at rollout. Checked on rows prepared from
    espeak-ng speech, against the prompt verl's agent loop builds for each of them with the Omni
    processor: the audio tokens the check counts are the processor's, and its figure is a limit that
    passes exactly and fails one token below."""
    import asyncio
    import shutil

    from soundmind.api.training import TrainingSpec
    from soundmind.data.verl_dataset import AudioRLHFDataset
    from soundmind.errors import ConfigError
    from soundmind.train.budget import PromptEstimate
    from soundmind.train.config import PodIdentity
    from soundmind.train.dataset import locate, longest_prompt
    from soundmind.train.render import render
    from tests.support.rendered import rendered_config
    from tests.support.verl_rollout import AgentLoop

    rendered = rendered_config()
    assert rendered.data.filter_overlong_prompts is False  # verl does not drop long rows: the check must
    assert rendered.actor_rollout_ref.rollout.prompt_length == rendered.data.max_prompt_length

    (summary,) = prepare.prepare(spoken_dir, tmp_path / "prepared", "audio-text")
    data = summary.path.parent
    shutil.copy(summary.path, data / "train.parquet")  # the same rows stand in for the training split
    rows = pq.read_table(summary.path).to_pylist()

    dataset = AudioRLHFDataset(str(summary.path), tokenizer, _config(tmp_path), processor=processor)
    builder = AgentLoop(omni_model_config, response_length=1).builder
    real = []
    for index, row in enumerate(rows):
        messages = dataset[index]["raw_prompt"]
        _, _, audios = asyncio.run(dataset.process_multi_modal_info(messages, 14, dataset.config))
        prompt_ids = builder.build_initial_tokens(messages, audios=audios)  # what the agent loop measures
        info = row["extra_info"]
        estimate = PromptEstimate(info["id"], info["question_seconds"], len(row["prompt"][0]["content"]))
        real.append((estimate, prompt_ids.count(processor.audio_token_id), len(prompt_ids)))
    for estimate, audio_tokens, _ in real:
        # The processor's own count for the clip, rounded up once at most (ceil of seconds x 25).
        assert 0 <= estimate.audio_tokens - audio_tokens <= 1, (estimate, audio_tokens)
    longest = longest_prompt(summary.path)
    assert longest == max((estimate for estimate, _, _ in real), key=lambda estimate: estimate.tokens)
    print(
        "prompt budget: "
        + ", ".join(
            f"{estimate.sample_id}: checked {estimate.tokens} (audio {estimate.audio_tokens}), "
            f"agent loop {length} (audio {audio_tokens})"
            for estimate, audio_tokens, length in real
        )
    )

    def render_at(limit: int):
        spec = TrainingSpec.model_validate(
            {"dataset": {"path": str(data)}, "algorithm": {"maxPromptLength": limit, "trainBatchSize": len(rows)}}
        )
        identity = PodIdentity.from_env({}, default_name="budget")
        return render(spec, identity, locate(data, "audio-text"), checkpoints_root=str(tmp_path / "checkpoints"))

    assert render_at(longest.tokens).total_steps is not None  # exactly at the limit: accepted
    with pytest.raises(ConfigError) as refused:
        render_at(longest.tokens - 1)
    assert refused.value.field == "algorithm.maxPromptLength"
    assert f"{longest.tokens - 1} tokens cannot hold the longest prompt" in str(refused.value)
    assert f"sample {longest.sample_id!r}" in str(refused.value)
    assert str(refused.value).endswith(f"set at least {longest.tokens}")


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
    verl, tokenizer, processor, omni_model_config, omni_engine, build_sharded_module, spoken_dir, tmp_path
):
    """ALR rows as training sees them: verl's dataset and collate, the agent loop's audio extraction
    (through the dataset class, which decodes the WAV bytes) and tokenization, the engine's packing,
    and the adapted model's forward as training runs it (FSDP1, bf16), which agrees with the unpacked
    model."""
    import asyncio

    import torch

    from soundmind.data.verl_dataset import AudioRLHFDataset
    from tests.support.verl_rollout import BF16_TOLERANCE, AgentLoop, packed_vs_unpacked

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

    difference = packed_vs_unpacked(omni_engine, build_sharded_module(), rows)
    assert torch.isfinite(difference).all()
    assert difference.max() < BF16_TOLERANCE
