"""`soundmind eval` sends what the vLLM server takes: its chat request, captured on the wire from a real
run on prepared rows, validates against vLLM 0.24.0's own request model, and vLLM's own chat parsing
sees the audio part as audio and decodes it.

The request model alone proves little about the part: its message types accept any content part
(`{"type": "audio"}` or a format of "flac" validate too), so the part's shape is pinned here, and its
meaning comes from vLLM's part parser and media decoder. vLLM's whole message parsing
(`parse_chat_messages`) also needs the served model's Hugging Face processor files (tokenizer,
feature extractor: "Can't load image processor ... preprocessor_config.json" without them), which
only the model download has; the steps used here are the model-independent ones of that same path.
"""

from __future__ import annotations

import base64

import pyarrow.parquet as pq
import pytest

from soundmind.cli import main
from soundmind.prompt import ENTAILED
from tests.support.openai_server import ChatServer

SERVED_MODEL_NAME = "soundmind"  # the SoundMindServing default (--served-model-name)


@pytest.fixture(scope="module")
def sent(tmp_path_factory) -> tuple[list[dict], list[dict]]:
    """The prepared rows and the request bodies `soundmind eval` sent for them."""
    work = tmp_path_factory.mktemp("eval")
    assert main(["data", "synth", "--out", str(work / "alr"), "--limit", "2"]) == 0
    argv = ["data", "prepare", "--data-dir", str(work / "alr"), "--out", str(work / "prepared")]
    assert main([*argv, "--modality", "audio-text", "--audio-ref", "bytes"]) == 0
    data = next((work / "prepared").glob("*.parquet"))
    with ChatServer(lambda body: (200, f"Answer: {ENTAILED}")) as server:
        argv = ["eval", "--endpoint", server.url, "--model", SERVED_MODEL_NAME, "--data", str(data)]
        assert main([*argv, "--report", str(work / "report.json")]) == 0
    return pq.read_table(data).to_pylist(), server.requests


def audio_parts(message: dict) -> list[dict]:
    content = message["content"]
    return [part for part in content if part.get("type") == "input_audio"] if isinstance(content, list) else []


def test_request_validates_against_vllms_request_model(sent):
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    rows, bodies = sent
    assert len(bodies) == len(rows) > 0
    wavs = {row["audios"][0]["bytes"] for row in rows}
    for body in bodies:
        request = ChatCompletionRequest.model_validate(body)
        assert request.model == SERVED_MODEL_NAME
        assert not request.model_extra, f"fields vLLM would ignore: {sorted(request.model_extra)}"
        (part,) = [part for message in request.messages for part in audio_parts(message)]
        assert part == {"type": "input_audio", "input_audio": {"data": part["input_audio"]["data"], "format": "wav"}}
        assert base64.b64decode(part["input_audio"]["data"]) in wavs


def test_vllms_chat_parsing_takes_the_part_as_audio(sent):
    from vllm.entrypoints.chat_utils import _parse_chat_message_content_mm_part
    from vllm.multimodal.media import MediaConnector

    _, bodies = sent
    (part,) = [part for message in bodies[0]["messages"] for part in audio_parts(message)]
    part_type, content = _parse_chat_message_content_mm_part(part)
    assert part_type == "input_audio"
    # What vLLM's parser does with it next (MultiModalContentParser.parse_input_audio): a data URL, decoded.
    samples, rate = MediaConnector().fetch_audio(f"data:audio/{content['format']};base64,{content['data']}")
    assert rate == 16000 and samples.ndim == 1 and len(samples) > rate  # the prepared audio: 16 kHz mono, > 1 s
