"""A tiny random Qwen2.5-Omni checkpoint in the hub's layout, made here: nothing is downloaded.

`soundmind model tiny-omni --out DIR` writes it: the smoke run (examples/smoke, hack/gpu-smoke.sh)
trains it on a new GPU cluster, and the tests run verl's and vLLM's own code on it.

The directory looks like `Qwen/Qwen2.5-Omni-7B` to every loader that reads it: `config.json` with
`architectures: ["Qwen2_5OmniModel"]`, `model_type: qwen2_5_omni`, thinker, talker and token2wav
configs (no top-level `tie_word_embeddings`, like the hub's); safetensors weights for all three
modules; `spk_dict.pt`; a `Qwen2_5OmniProcessor` (Qwen2-VL image and video processors, a Whisper
feature extractor with Omni's 128 mel bins) over a byte-level tokenizer with Omni's special tokens
at ids of its own, which the thinker config names. Hidden sizes are 32 and layer counts 1-2, so a
forward pass takes milliseconds; the weights are random (seeded), so the same seed writes the same
weights. The audio encoder keeps Omni's down-sampling: 25 tokens per second of audio, as
`soundmind.train.budget` counts. transformers and torch are imported only when a checkpoint is made.
"""

from __future__ import annotations

import json
from pathlib import Path

from soundmind import atomic
from soundmind.errors import OutputError

# Omni's special tokens (names as in the hub tokenizer), in id order after the 256 byte tokens.
SPECIAL_TOKENS = {
    "pad": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "audio": "<|AUDIO|>",
    "audio_bos": "<|audio_bos|>",
    "audio_eos": "<|audio_eos|>",
    "image": "<|IMAGE|>",
    "video": "<|VIDEO|>",
    "vision_bos": "<|vision_bos|>",
    "vision_eos": "<|vision_eos|>",
}
# ChatML with an audio part rendered as Omni's audio markers (the processor expands <|AUDIO|>).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HIDDEN = 32
MAX_POSITION_EMBEDDINGS = 32768  # the hub thinker's context, whence vLLM and verl derive the longest sequence
SEED = 0


def tokenizer():
    """A byte-level tokenizer (every byte one token, so any text round-trips) plus Omni's specials."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={symbol: index for index, symbol in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS.values()])
    named = ("image", "audio", "video", "vision_bos", "vision_eos", "audio_bos", "audio_eos")
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=SPECIAL_TOKENS["pad"],
        eos_token=SPECIAL_TOKENS["im_end"],
        # What Qwen2_5OmniProcessor reads from its tokenizer (tokenizer.audio_token, ...).
        extra_special_tokens={f"{name}_token": SPECIAL_TOKENS[name] for name in named},
        chat_template=CHAT_TEMPLATE,
    )


AUDIO_CHUNK_SECONDS = 300


def processor():
    from transformers import (
        Qwen2_5OmniProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    return Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(),
        video_processor=Qwen2VLVideoProcessor(),
        # Qwen/Qwen2.5-Omni-7B's feature extractor: 128 mel bins over chunks of 300 s (Whisper's default,
        # 30 s, would cut ALR's 60-130 s questions short, unlike the real model's processor).
        feature_extractor=WhisperFeatureExtractor(feature_size=128, chunk_length=AUDIO_CHUNK_SECONDS),
        tokenizer=tokenizer(),
        chat_template=CHAT_TEMPLATE,
    )


def config(token_ids: dict[str, int], vocab_size: int):
    from transformers import Qwen2_5OmniConfig

    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}  # head_dim 8
    markers = {
        "audio_token_index": token_ids["audio"],
        "image_token_index": token_ids["image"],
        "video_token_index": token_ids["video"],
        "audio_start_token_id": token_ids["audio_bos"],
        "audio_end_token_id": token_ids["audio_eos"],
        "vision_start_token_id": token_ids["vision_bos"],
        "vision_end_token_id": token_ids["vision_eos"],
    }
    layers = {"num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64}
    return Qwen2_5OmniConfig(
        thinker_config={
            **markers,
            "audio_config": {
                "num_mel_bins": 128,
                "encoder_layers": 2,
                "encoder_attention_heads": 4,
                "encoder_ffn_dim": 64,
                "d_model": HIDDEN,
                "output_dim": HIDDEN,
            },
            "vision_config": {
                "depth": 1,
                "hidden_size": HIDDEN,
                "intermediate_size": 64,
                "num_heads": 4,
                "out_hidden_size": HIDDEN,
                "fullatt_block_indexes": [0],
            },
            "text_config": {
                **layers,
                "vocab_size": vocab_size,
                "hidden_size": HIDDEN,
                "num_hidden_layers": 2,
                "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
                "tie_word_embeddings": False,
                "rope_parameters": rope,
            },
        },
        talker_config={
            **markers,
            **layers,
            "vocab_size": 64,
            "embedding_size": HIDDEN,
            "hidden_size": HIDDEN,
            "num_hidden_layers": 1,
            "head_dim": 8,
            "tts_codec_start_token_id": 60,
            "tts_codec_end_token_id": 61,
            "tts_codec_pad_token_id": 62,
            "tts_codec_mask_token_id": 63,
            "tts_text_start_token_id": token_ids["im_start"],
            "tts_text_end_token_id": token_ids["im_end"],
            "tts_text_pad_token_id": token_ids["pad"],
            "rope_parameters": rope,
        },
        token2wav_config={
            "dit_config": {
                "hidden_size": HIDDEN,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "head_dim": 16,
                "ff_mult": 1,
                "emb_dim": 16,
                "enc_emb_dim": 16,
                "enc_dim": 16,
                "enc_channels": [16, 16, 16, 16, 48],
                "enc_attention_channels": 8,
                "enc_se_channels": 8,
                "num_embeds": 64,
                "mel_dim": 16,
                "look_ahead_layers": [1],
                "look_backward_layers": [0],
            },
            "bigvgan_config": {
                "mel_dim": 16,
                "upsample_initial_channel": 32,
                "resblock_kernel_sizes": [3],
                "resblock_dilation_sizes": [[1, 3, 5]],
                "upsample_rates": [2],
                "upsample_kernel_sizes": [4],
            },
        },
    )


def write(directory: str | Path, seed: int = SEED) -> Path:
    """Write the checkpoint into `directory` and return it. The directory is replaced as a whole
    once the checkpoint is complete (soundmind.atomic), so an interrupted write leaves no half model."""
    directory = Path(directory)
    atomic.ensure_directory(directory.parent)  # an output that cannot be written fails before the model is built
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration

    omni_processor = processor()
    omni_tokenizer = omni_processor.tokenizer
    token_ids = {name: omni_tokenizer.convert_tokens_to_ids(token) for name, token in SPECIAL_TOKENS.items()}
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration(config(token_ids, vocab_size=len(omni_tokenizer)))
    with atomic.staged_directory(directory) as staging:
        try:
            model.save_pretrained(staging)
            omni_processor.save_pretrained(staging)
            torch.save({}, staging / "spk_dict.pt")  # the talker's voices; the hub checkpoint ships them
            # The hub's name for this layout, which save_pretrained replaced with the class name.
            config_path = staging / "config.json"
            written = json.loads(config_path.read_text())
            written["architectures"] = ["Qwen2_5OmniModel"]
            config_path.write_text(json.dumps(written, indent=2))
        except OSError as exc:
            raise OutputError(directory, exc) from None
    return directory
