"""Logic problems the project makes itself, so the demo needs no outside data.

Two kinds, each decided by checking every model rather than by a table of known forms:

- categorical syllogisms ("All poets are runners. No runners are bakers. / No poets are bakers."):
  a model says which of the 8 regions of a three-set Venn diagram are inhabited; a syllogism whose
  answer depends on whether a term may be empty (existential import) is never produced, since its
  label would depend on a convention;
- conditionals over two or three propositions ("If it rains, the road is wet. It rains. / The road
  is wet."): a model is a truth assignment.

The conclusion is `entailed` when it holds in every model of the premises, else `not-entailed`; the
reference reasoning then names a model where the premises hold and the conclusion fails. Labels
alternate, so both are equally represented.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from soundmind.prompt import ENTAILED, NOT_ENTAILED

QUESTION_INTRO = (
    "Decide whether a conclusion follows logically from two premises. Say 'entailed' if the "
    "conclusion must be true whenever both premises are true, and 'not-entailed' otherwise."
)

_TERMS = (
    "poets", "runners", "bakers", "doctors", "painters", "farmers", "sailors", "singers",
    "teachers", "gardeners", "pilots", "chess players",
)  # fmt: skip
# (affirmed, denied) forms of each proposition.
_PROPOSITIONS = (
    ("it rains", "it does not rain"),
    ("the road is wet", "the road is not wet"),
    ("the alarm rings", "the alarm does not ring"),
    ("the shop is open", "the shop is not open"),
    ("Maya studies", "Maya does not study"),
    ("the train is late", "the train is not late"),
    ("the lights are on", "the lights are not on"),
    ("the river floods", "the river does not flood"),
    ("the match is cancelled", "the match is not cancelled"),
)


@dataclass(frozen=True)
class Problem:
    premises: tuple[str, str]
    conclusion: str
    label: int  # 0 = not-entailed, 1 = entailed
    counterexample: str | None  # a model of the premises where the conclusion fails

    @property
    def question(self) -> str:
        first, second = self.premises
        return f"{QUESTION_INTRO}\n\nPremise one: {first}\nPremise two: {second}\nConclusion: {self.conclusion}"

    @property
    def reasoning(self) -> str:
        first, second = self.premises
        opening = f"The premises are: {first} {second} The conclusion to test is: {self.conclusion}"
        if self.label:
            body = (
                "I look for a situation where both premises are true and the conclusion is false. "
                "There is none: every situation that makes both premises true also makes the "
                "conclusion true, so the conclusion follows."
            )
            answer = ENTAILED
        else:
            body = (
                f"Both premises can be true while the conclusion is false: {self.counterexample}. "
                "So the conclusion does not follow from the premises."
            )
            answer = NOT_ENTAILED
        return f"{opening}\n{body}\nAnswer: {answer}"


# --- syllogisms ------------------------------------------------------------------------------------
# A region is a bitmask over the three terms (bit i set: inside term i); a model is the set of
# inhabited regions. A statement is (quantifier, subject, predicate) with term indices.
_QUANTIFIERS = ("all", "no", "some", "some-not")
_REGIONS = range(8)


def _inside(region: int, term: int) -> bool:
    return bool(region >> term & 1)


def _holds(statement: tuple[str, int, int], model: frozenset[int]) -> bool:
    quantifier, subject, predicate = statement
    both = any(_inside(r, subject) and _inside(r, predicate) for r in model)
    subject_only = any(_inside(r, subject) and not _inside(r, predicate) for r in model)
    return {"all": not subject_only, "no": not both, "some": both, "some-not": subject_only}[quantifier]


def _inhabits_every_term(model: frozenset[int]) -> bool:
    return all(any(_inside(r, t) for r in model) for t in range(3))


_MODELS = [frozenset(r for r in _REGIONS if mask >> r & 1) for mask in range(256)]  # every set of regions
# Each statement's truth over all models, as a bitset (bit m: holds in _MODELS[m]), so checking a
# syllogism is three AND operations instead of 256 model evaluations.
_TRUTH = {
    (q, s, p): sum(1 << m for m, model in enumerate(_MODELS) if _holds((q, s, p), model))
    for q in _QUANTIFIERS
    for s in range(3)
    for p in range(3)
    if s != p
}
_EVERY_MODEL = (1 << len(_MODELS)) - 1
_INHABITED = sum(1 << m for m, model in enumerate(_MODELS) if _inhabits_every_term(model))  # existential import


def _syllogism_sentence(statement: tuple[str, int, int], terms: list[str]) -> str:
    quantifier, subject, predicate = statement
    s, p = terms[subject], terms[predicate]
    return {
        "all": f"All {s} are {p}.",
        "no": f"No {s} are {p}.",
        "some": f"Some {s} are {p}.",
        "some-not": f"Some {s} are not {p}.",
    }[quantifier]


def _describe_region(region: int, terms: list[str]) -> str:
    inside = [terms[t] for t in range(3) if _inside(region, t)]
    outside = [terms[t] for t in range(3) if not _inside(region, t)]
    text = inside[0]
    if len(inside) > 1:
        text += " who are also " + " and ".join(inside[1:])
    if outside:
        text += " who are not " + " or ".join(outside)
    return text


_NOT_DECIDABLE = "not decidable"


def judge_syllogism(premises: tuple, conclusion: tuple) -> frozenset[int] | None | str:
    """None when the conclusion follows; else the smallest counter-model (inhabited regions); or
    `_NOT_DECIDABLE` when no world with every term inhabited satisfies the premises, or the answer
    hinges on existential import. Statements are (quantifier, subject, predicate) term indices."""
    first, second = (_TRUTH[p] for p in premises)
    counter = first & second & ~_TRUTH[conclusion] & _EVERY_MODEL
    if not first & second & _INHABITED or bool(counter) != bool(counter & _INHABITED):
        return _NOT_DECIDABLE
    if not counter:
        return None
    return min((_MODELS[m] for m in range(len(_MODELS)) if (counter & _INHABITED) >> m & 1), key=len)


def _syllogism(rng: random.Random) -> Problem | None:
    a, b, c = 0, 1, 2  # premise one links a-b, premise two b-c, the conclusion a-c
    terms = rng.sample(_TERMS, 3)
    premises = (
        (rng.choice(_QUANTIFIERS), *rng.choice([(a, b), (b, a)])),
        (rng.choice(_QUANTIFIERS), *rng.choice([(b, c), (c, b)])),
    )
    conclusion = (rng.choice(_QUANTIFIERS), *rng.choice([(a, c), (c, a)]))
    counter_model = judge_syllogism(premises, conclusion)
    if counter_model == _NOT_DECIDABLE:
        return None
    counterexample = None
    if counter_model:
        kinds = "; ".join(_describe_region(r, terms) for r in sorted(counter_model) if r)
        counterexample = f"picture a world whose only members are {kinds}"
    return Problem(
        premises=(_syllogism_sentence(premises[0], terms), _syllogism_sentence(premises[1], terms)),
        conclusion=_syllogism_sentence(conclusion, terms),
        label=0 if counter_model else 1,
        counterexample=counterexample,
    )


# --- conditionals ----------------------------------------------------------------------------------
# A literal is (proposition index, affirmed); a formula is ("lit", literal) or ("if", literal, literal)
# or ("or", literal, literal). A model maps proposition index -> truth value.


def _literal_true(literal: tuple[int, bool], model: dict[int, bool]) -> bool:
    proposition, affirmed = literal
    return model[proposition] == affirmed


def _formula_true(formula: tuple, model: dict[int, bool]) -> bool:
    kind, *literals = formula
    values = [_literal_true(lit, model) for lit in literals]
    if kind == "lit":
        return values[0]
    if kind == "if":
        return not values[0] or values[1]
    return values[0] or values[1]


def _clause(literal: tuple[int, bool], props: list[tuple[str, str]]) -> str:
    proposition, affirmed = literal
    return props[proposition][0 if affirmed else 1]


def _sentence(formula: tuple, props: list[tuple[str, str]]) -> str:
    kind, *literals = formula
    clauses = [_clause(lit, props) for lit in literals]
    text = {
        "lit": lambda: clauses[0],
        "if": lambda: f"if {clauses[0]}, then {clauses[1]}",
        "or": lambda: f"either {clauses[0]} or {clauses[1]}",
    }[kind]()
    return text[0].upper() + text[1:] + "."


def judge_conditional(premises: tuple, conclusion: tuple) -> dict[int, bool] | None | str:
    """None when the conclusion follows; else a truth assignment where the premises hold and the
    conclusion fails; or `_NOT_DECIDABLE` for inconsistent premises (everything would follow)."""
    used = sorted({literal[0] for formula in (*premises, conclusion) for literal in formula[1:]})
    models = [dict(zip(used, values, strict=True)) for values in itertools.product([True, False], repeat=len(used))]
    premise_models = [m for m in models if all(_formula_true(p, m) for p in premises)]
    if not premise_models:
        return _NOT_DECIDABLE
    return next((m for m in premise_models if not _formula_true(conclusion, m)), None)


def _conditional(rng: random.Random) -> Problem | None:
    props = rng.sample(_PROPOSITIONS, 3)

    def literal(choices: tuple[int, ...]) -> tuple[int, bool]:
        return rng.choice(choices), rng.random() < 0.6

    def formula(kind: str, choices: tuple[int, ...]) -> tuple:
        if kind == "lit":
            return ("lit", literal(choices))
        first = literal(choices)
        second = literal(tuple(c for c in choices if c != first[0]))
        return (kind, first, second)

    first = formula("if", (0, 1))
    second = formula(rng.choice(["lit", "lit", "if", "or"]), (0, 1, 2))
    used = tuple(sorted({lit[0] for f in (first, second) for lit in f[1:]}))
    # A plain statement as conclusion: a conditional one can be "entailed" only vacuously (its
    # condition false in every model), which is valid logic but a poor teaching example.
    conclusion = formula("lit", used)
    if conclusion in (first, second):
        return None
    counter_model = judge_conditional((first, second), conclusion)
    if counter_model == _NOT_DECIDABLE:
        return None
    counterexample = None
    if counter_model:
        facts = ", ".join(_clause((p, value), props) for p, value in counter_model.items())
        counterexample = f"suppose {facts}"
    return Problem(
        premises=(_sentence(first, props), _sentence(second, props)),
        conclusion=_sentence(conclusion, props),
        label=0 if counter_model else 1,
        counterexample=counterexample,
    )


_KINDS: tuple[Callable[[random.Random], Problem | None], ...] = (_syllogism, _conditional)


def generate(count: int, seed: int = 0) -> Iterator[Problem]:
    """`count` distinct problems, deterministic in `seed`, labels alternating (entailed first)."""
    rng = random.Random(seed)
    seen: set[tuple[str, str, str]] = set()
    produced = 0
    while produced < count:
        want = 1 - produced % 2
        problem = rng.choice(_KINDS)(rng)
        if problem is None or problem.label != want:
            continue
        key = (*problem.premises, problem.conclusion)
        if key in seen:
            continue
        seen.add(key)
        produced += 1
        yield problem
