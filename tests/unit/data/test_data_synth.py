"""`soundmind data synth`: real espeak-ng speech at 16 kHz mono in the published layout, from generated
problems (correct labels, both represented) or from an annotation file."""

from __future__ import annotations

import json

import pytest
import soundfile

from soundmind.cli import main
from soundmind.data import problems
from soundmind.data.layouts import Layout, detect_layout
from soundmind.prompt import ENTAILED, NOT_ENTAILED
from soundmind.reward import parse_answer


def test_generated_data_set_is_spoken_at_16k_mono(spoken_dir):
    assert detect_layout(spoken_dir) is Layout.PUBLISHED
    rows = [json.loads(line) for line in (spoken_dir / "dev.jsonl").read_text().splitlines()]
    assert {row["label"] for row in rows} == {0, 1}
    for row in rows:
        for name, text in (("question.wav", row["user_content"]), (f"answer_{row['label']}.wav", row["answer"])):
            info = soundfile.info(spoken_dir / "dev" / row["id"] / name)
            assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
            # espeak-ng at 175 words per minute: a real reading of the text, not a stub
            assert info.duration > len(text.split()) / 175 * 60 * 0.5
        samples, _ = soundfile.read(spoken_dir / "dev" / row["id"] / "question.wav")
        assert abs(samples).max() > 0.05


def test_synth_from_an_annotation_file(tmp_path, capsys, write_jsonl):
    source = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"id": "x1", "user_content": "Is the sky green?", "answer": "No.\nAnswer: not-entailed", "label": 0},
            {"id": "x2", "user_content": "Is water wet?", "answer": "Yes.\nAnswer: entailed", "label": 1},
            {"id": "x3", "user_content": "Not spoken.", "answer": "Beyond the limit.", "label": 1},
        ],
    )
    out = tmp_path / "out"
    assert main(["data", "synth", "--out", str(out), "--from", str(source), "--split", "test", "--limit", "2"]) == 0
    assert "2 test samples" in capsys.readouterr().out
    written = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    assert [row["id"] for row in written] == ["x1", "x2"]
    assert (out / "test" / "x1" / "answer_0.wav").is_file() and (out / "test" / "x2" / "answer_1.wav").is_file()
    assert not (out / "test" / "x3").exists()


def test_synth_from_a_malformed_file_exits_2(tmp_path, capsys, write_jsonl):
    source = write_jsonl(tmp_path / "bad.jsonl", ['{"id": "q9", "label": 1,'])
    assert main(["data", "synth", "--out", str(tmp_path / "out"), "--from", str(source)]) == 2
    assert "split 'dev', line 1, id 'q9': malformed JSON" in capsys.readouterr().err


def test_generated_problems_are_deterministic_distinct_and_balanced():
    first = list(problems.generate(200, seed=3))
    assert first == list(problems.generate(200, seed=3))
    assert first != list(problems.generate(200, seed=4))
    assert len({(p.premises, p.conclusion) for p in first}) == 200
    assert [p.label for p in first] == [1, 0] * 100
    for p in first:
        assert parse_answer(p.reasoning) == (ENTAILED if p.label else NOT_ENTAILED)
        assert (p.counterexample is None) is (p.label == 1)
        assert p.conclusion in p.question and all(premise in p.question for premise in p.premises)


@pytest.mark.parametrize(
    ("premises", "conclusion", "valid"),
    [
        # a, b, c = 0, 1, 2. Barbara, Celarent, Darii are valid; undistributed middle, illicit
        # major and two particular premises are not.
        ((("all", 0, 1), ("all", 1, 2)), ("all", 0, 2), True),
        ((("all", 0, 1), ("no", 1, 2)), ("no", 0, 2), True),
        ((("some", 0, 1), ("all", 1, 2)), ("some", 0, 2), True),
        ((("all", 0, 1), ("all", 2, 1)), ("all", 0, 2), False),
        ((("all", 1, 0), ("no", 1, 2)), ("no", 0, 2), False),
        ((("some", 0, 1), ("some", 1, 2)), ("some", 0, 2), False),
    ],
)
def test_syllogism_judgement_matches_the_textbook(premises, conclusion, valid):
    counter_model = problems.judge_syllogism(premises, conclusion)
    assert (counter_model is None) is valid
    if not valid:  # the counter-model really satisfies the premises and refutes the conclusion
        assert all(problems._holds(p, counter_model) for p in premises)
        assert not problems._holds(conclusion, counter_model)


def test_syllogisms_that_hinge_on_existential_import_are_not_produced():
    # "All a are b, all b are c, so some a are c" holds only if some a exist.
    premises, conclusion = (("all", 0, 1), ("all", 1, 2)), ("some", 0, 2)
    assert problems.judge_syllogism(premises, conclusion) == problems._NOT_DECIDABLE


@pytest.mark.parametrize(
    ("second", "conclusion", "valid"),
    [
        (("lit", (0, True)), ("lit", (1, True)), True),  # modus ponens
        (("lit", (1, False)), ("lit", (0, False)), True),  # modus tollens
        (("lit", (1, True)), ("lit", (0, True)), False),  # affirming the consequent
        (("lit", (0, False)), ("lit", (1, False)), False),  # denying the antecedent
        (("or", (0, True), (2, True)), ("lit", (1, True)), False),
        (("or", (0, True), (1, True)), ("lit", (1, True)), True),
    ],
)
def test_conditional_judgement_matches_the_textbook(second, conclusion, valid):
    if_0_then_1 = ("if", (0, True), (1, True))
    counter_model = problems.judge_conditional((if_0_then_1, second), conclusion)
    assert (counter_model is None) is valid
    props = [("it rains", "it does not rain"), ("the road is wet", "the road is not wet")]
    assert problems._sentence(if_0_then_1, props) == "If it rains, then the road is wet."


def test_blank_text_is_an_error_naming_the_sample(tmp_path, capsys, write_jsonl):
    source = write_jsonl(tmp_path / "blank.jsonl", [{"id": "b7", "user_content": "Hi.", "answer": " ", "label": 1}])
    assert main(["data", "synth", "--out", str(tmp_path / "out"), "--from", str(source)]) == 2
    assert "split 'dev', id 'b7': nothing to speak for answer_1.wav" in capsys.readouterr().err
    assert not (tmp_path / "out" / "dev.jsonl").exists()
