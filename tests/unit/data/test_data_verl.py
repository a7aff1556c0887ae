"""Prepared rows through verl 0.9.1's own dataset code (installed from PyPI by hack/requirements-verl.txt).

verl reads the parquet with `datasets`, builds the chat messages (`_build_messages`), measures every
prompt with the tokenizer or, for audio, with the processor, dropping rows that fail (so "no row
dropped" means every row went through), and batches with `collate_fn`. The processor is a real
transformers audio processor (Whisper features, 25 audio tokens per second like Qwen2.5-Omni's) over
a tiny word-level tokenizer built here: nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from soundmind.data import prepare

pytestmark = pytest.mark.verl

_SPECIAL_TOKENS = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
# ChatML, with an audio part rendered as Qwen's audio markers (the processor expands <|AUDIO|>).
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_AUDIO_TOKENS_PER_SECOND = 25
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
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(_SPECIAL_TOKENS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|im_end|>",
        additional_special_tokens=_SPECIAL_TOKENS[2:],
        chat_template=_CHAT_TEMPLATE,
    )


@pytest.fixture(scope="module")
def processor(tokenizer):
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    return Qwen2AudioProcessor(WhisperFeatureExtractor(), tokenizer, chat_template=_CHAT_TEMPLATE)


def _config(tmp_path, max_prompt_length=_NO_LIMIT, **overrides):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "max_prompt_length": max_prompt_length,
            "filter_overlong_prompts_workers": 1,
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
    limit = int(shortest * _AUDIO_TOKENS_PER_SECOND * 0.9)
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
