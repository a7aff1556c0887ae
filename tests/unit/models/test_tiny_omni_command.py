"""`soundmind model tiny-omni`: the command the smoke run (examples/smoke, hack/gpu-smoke.sh) makes its
model with, run as a user runs it. Its checkpoint is the one the tiny-Omni proofs use (the
`tiny_omni_dir` fixture), byte for byte, so those proofs hold for what the smoke run trains."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from soundmind.errors import EXIT_CANNOT_WRITE


def soundmind(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "soundmind", *argv], capture_output=True, text=True, timeout=300)


def digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.suffix in (".safetensors", ".json", ".jinja")
    }


def test_the_command_writes_the_checkpoint_the_proofs_use(tmp_path, tiny_omni_dir):
    from transformers import AutoConfig, AutoProcessor

    out = tmp_path / "models" / "tiny-omni"
    done = soundmind("model", "tiny-omni", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{out}: tiny random Qwen2.5-Omni (seed 0, ")

    assert digests(out) == digests(tiny_omni_dir)
    assert "model.safetensors" in digests(out) and (out / "spk_dict.pt").is_file()
    on_disk = json.loads((out / "config.json").read_text())
    assert (on_disk["model_type"], on_disk["architectures"]) == ("qwen2_5_omni", ["Qwen2_5OmniModel"])
    assert AutoConfig.from_pretrained(out).thinker_config.text_config.hidden_size == 32
    assert type(AutoProcessor.from_pretrained(out)).__name__ == "Qwen2_5OmniProcessor"
    assert not [path.name for path in tmp_path.joinpath("models").iterdir() if path.name != "tiny-omni"]


def test_another_seed_writes_other_weights(tmp_path, tiny_omni_dir):
    out = tmp_path / "tiny-omni"
    assert soundmind("model", "tiny-omni", "--out", str(out), "--seed", "1").returncode == 0
    assert digests(out)["config.json"] == digests(tiny_omni_dir)["config.json"]
    assert digests(out)["model.safetensors"] != digests(tiny_omni_dir)["model.safetensors"]


def test_an_output_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("a file, not a directory\n")
    done = soundmind("model", "tiny-omni", "--out", str(blocker / "tiny-omni"))
    assert done.returncode == EXIT_CANNOT_WRITE
    assert done.stderr == f"soundmind model tiny-omni: cannot write {blocker}: it exists and is not a directory\n"


def test_the_processor_hears_a_whole_alr_length_question(tiny_omni_dir):
    """ALR's questions last 60-130 s. The tiny Omni's processor, like the real model's, turns all of a
    100 s clip into audio tokens (25 a second, the prompt budget's rate), not only its first 30 s."""
    import numpy as np
    from transformers import AutoProcessor

    from soundmind.train.budget import AUDIO_TOKENS_PER_SECOND

    processor = AutoProcessor.from_pretrained(tiny_omni_dir)
    messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Entailed?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    seconds = 100
    clip = np.random.default_rng(0).uniform(-0.1, 0.1, seconds * 16000).astype(np.float32)
    ids = processor(text=text, audio=[clip], sampling_rate=16000, return_tensors="np")["input_ids"][0].tolist()
    audio_tokens = ids.count(processor.tokenizer.convert_tokens_to_ids(processor.tokenizer.audio_token))
    assert abs(audio_tokens - AUDIO_TOKENS_PER_SECOND * seconds) <= 2, audio_tokens
