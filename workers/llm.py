"""Subtitle lines → Korean with a large language model, line for line: the protocol (pure logic;
the model is a callable, run by ``workers/llm_server.py`` on an OpenAI-compatible server).

What the peers' users complain about most is lines merged (every later cue shifts), dropped,
left in Japanese, padded with blanks, or reasoning text in the subtitles. Here:

- Each transcript segment is one line with a stable id. A window of lines is translated
  together, with the lines before it *and their accepted Korean* as context, and the next few
  source lines as look-ahead that is not to be translated.
- The answer is ids → text (a JSON schema where the server takes one), then checked: every id
  asked for exactly once and nothing else, no empty line for a non-empty source, no kana or
  kanji left outside quotes, no ``<think>`` text, a sane length, the glossary's names used.
- A failed check is asked once more with the problem named; then the window is halved, down
  to one line. A line that still fails is left to the caller's fallback (NLLB) and counted:
  never Japanese left silently, never a blank, never two lines merged.
- Each line carries its reading budget: the characters a viewer reads in its cue's time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from contract.manifest import Term
from workers.cues import READING_SPEED

SHORTEST_BUDGET = 6

KANA = re.compile(r"[\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
KANJI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
QUOTED = re.compile(r"「[^」]*」|『[^』]*』|“[^”]*”|\"[^\"]*\"")
THINKING = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.S | re.I)
FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")

REGISTERS = {
    "auto": "choose the speech level from who speaks to whom, as a Korean subtitler would",
    "haeyo": "use the polite informal speech level (해요체) throughout",
    "hapsyo": "use the formal speech level (합쇼체) throughout",
    "banmal": "use casual speech (반말) throughout",
}


@dataclass(frozen=True)
class Line:
    """One subtitle line to translate: a transcript segment."""

    id: int
    source: str
    budget: int
    """The most Korean characters a viewer can read in the line's time."""


def reading_budget(seconds: float) -> int:
    return max(SHORTEST_BUDGET, round(READING_SPEED * max(seconds, 0.0)))


@dataclass(frozen=True)
class Request:
    """One window, as the model is asked it."""

    window: tuple[Line, ...]
    context: tuple[tuple[Line, str], ...] = ()
    """The lines just before, with the Korean already accepted for them."""
    lookahead: tuple[Line, ...] = ()
    """The next lines, for meaning only: not to be translated."""
    terms: tuple[Term, ...] = ()
    """Names and terms to write as given: the person's glossary first, then the series memory."""
    checked: int = 0
    """How many of ``terms`` (the first ones) are the glossary's: the answer must use those."""
    register: str = "auto"
    problem: str | None = None
    """What was wrong with the last answer to this window, said once more."""

    @property
    def ids(self) -> list[int]:
        return [line.id for line in self.window]


@dataclass(frozen=True)
class Reply:
    """The model's answer text and what it cost (tokens as the backend counts them)."""

    text: str
    prompt_tokens: int = 0
    answer_tokens: int = 0


class AnswerProblem(Exception):
    """What is wrong with an answer, in one sentence the model is shown on the next try."""


Ask = Callable[[Request], Reply]


def instructions(register: str) -> str:
    return (
        "You translate Japanese subtitles into natural Korean, as a professional Korean subtitler "
        'would write them. You are given JSON: "translate" holds the lines to translate, each with '
        "its id and max_chars, the most characters a viewer can read in its time (condense a long "
        'line to fit rather than drop meaning); "context" holds the lines just before with their '
        'Korean, for continuity; "after" holds the next lines, for meaning only: do not translate '
        'them; "glossary" holds names and terms to write exactly as given. Translate every line of '
        '"translate" on its own, keeping each id: never merge two lines or split one, never leave '
        "Japanese, never leave a line empty. "
        f"Speech level: {REGISTERS.get(register, REGISTERS['auto'])}. Answer with JSON only, no "
        'explanation: {"lines": [{"id": <id>, "ko": "<Korean>"}, ...], "names": '
        '{"<Japanese name or recurring term>": "<its Korean>", ...}}.'
    )


def messages(request: Request) -> list[dict[str, str]]:
    """The chat messages of ``request``: instructions, then the window as JSON."""
    document: dict[str, object] = {}
    if request.terms:
        document["glossary"] = dict(request.terms)
    if request.context:
        document["context"] = [{"id": line.id, "ja": line.source, "ko": korean} for line, korean in request.context]
    document["translate"] = [{"id": line.id, "ja": line.source, "max_chars": line.budget} for line in request.window]
    if request.lookahead:
        document["after"] = [{"id": line.id, "ja": line.source} for line in request.lookahead]
    content = json.dumps(document, ensure_ascii=False)
    if request.problem:
        content += f"\n\nYour last answer could not be used: {request.problem} Answer again, in the same JSON form."
    return [{"role": "system", "content": instructions(request.register)}, {"role": "user", "content": content}]


def answer_schema(request: Request) -> dict[str, object]:
    """A JSON schema of the answer, for servers that constrain decoding to one."""
    count = len(request.window)
    line = {
        "type": "object",
        "properties": {"id": {"type": "integer", "enum": request.ids}, "ko": {"type": "string", "minLength": 1}},
        "required": ["id", "ko"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "lines": {"type": "array", "items": line, "minItems": count, "maxItems": count},
            "names": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["lines"],
        "additionalProperties": False,
    }


def japanese_left(text: str, allowed: Sequence[str] = ()) -> str | None:
    """The Japanese in ``text`` outside quotes and the ``allowed`` names, or None."""
    for name in allowed:
        text = text.replace(name, "")
    text = QUOTED.sub("", text)
    found = KANA.findall(text) + KANJI.findall(text)
    return "".join(found[:8]) if found else None


def _json_object(text: str) -> dict[str, object]:
    if re.search(r"<(think|thinking|reasoning)>", text, re.I):
        raise AnswerProblem("it held reasoning text (<think>); give only the JSON answer.")
    text = FENCE.sub("", text.strip())
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise AnswerProblem("it was not JSON.")
    try:
        document = json.loads(text[start : end + 1])
    except ValueError:
        raise AnswerProblem("it was not valid JSON.") from None
    if not isinstance(document, dict):
        raise AnswerProblem("it was not a JSON object.")
    return document


def read_answer(reply: Reply, request: Request) -> tuple[dict[int, str], tuple[Term, ...]]:
    """The Korean of each line of the window, and the names the model gave.

    Raises:
        AnswerProblem: the answer cannot be used as it is (the first problem found).
    """
    document = _json_object(THINKING.sub("", reply.text))
    lines = document.get("lines")
    if not isinstance(lines, list):
        raise AnswerProblem('it had no "lines" list.')
    wanted = {line.id: line for line in request.window}
    found: dict[int, str] = {}
    for entry in lines:
        if not isinstance(entry, dict) or not isinstance(entry.get("ko"), str):
            raise AnswerProblem('each entry of "lines" must be {"id": <id>, "ko": "<Korean>"}.')
        number = entry.get("id")
        if isinstance(number, str) and number.strip().isdigit():
            number = int(number)
        if not isinstance(number, int) or isinstance(number, bool) or number not in wanted:
            raise AnswerProblem(f"it held a line {number!r} that was not asked for (translate only the given ids).")
        if number in found:
            raise AnswerProblem(f"it held line {number} twice.")
        found[number] = " ".join(entry["ko"].split())
    missing = [number for number in wanted if number not in found]
    if missing:
        raise AnswerProblem(f"line {missing[0]} was missing (every id must be answered, none merged).")
    glossary = dict(request.terms)
    for number, korean in found.items():
        line = wanted[number]
        if not korean:
            raise AnswerProblem(f"line {number} was empty.")
        left = japanese_left(korean, [source for source, target in glossary.items() if source == target])
        if left:
            raise AnswerProblem(f"line {number} still held Japanese ({left}); translate it into Korean.")
        if len(korean) > max(3 * line.budget, 3 * len(line.source) + 12):
            raise AnswerProblem(f"line {number} was far too long for its {line.budget} characters.")
        for source, target in request.terms[: request.checked]:
            if source in line.source and target not in korean:
                raise AnswerProblem(f"line {number} must write {source} as {target}.")
    return found, _names(document.get("names"), request)


def _names(value: object, request: Request) -> tuple[Term, ...]:
    """The names the model reported that occur in the window and read as Korean."""
    if not isinstance(value, dict):
        return ()
    sources = "".join(line.source for line in request.window)
    return tuple(
        (source.strip(), target.strip())
        for source, target in value.items()
        if isinstance(source, str) and isinstance(target, str) and source.strip() and target.strip()
        and source.strip() in sources and len(source) <= 20 and len(target) <= 20
        and japanese_left(target) is None and (KANA.search(source) or KANJI.search(source))
    )  # fmt: skip


@dataclass
class Outcome:
    """What came of translating one video's lines."""

    korean: dict[int, str] = field(default_factory=dict)
    failed: list[int] = field(default_factory=list)
    """Lines the model could not give: for the fallback."""
    names: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    prompt_tokens: int = 0
    answer_tokens: int = 0


def translate_lines(
    lines: Sequence[Line],
    ask: Ask,
    glossary: Sequence[Term] = (),
    memory: Sequence[Term] = (),
    register: str = "auto",
    window: int = 12,
    context: int = 8,
    lookahead: int = 3,
    log: Callable[[str], None] = lambda _: None,
    progress: Callable[[float], None] = lambda _: None,
) -> Outcome:
    """Translates ``lines`` window by window (see the module's docstring). A line with no text
    gets none and is not sent. Errors of the server itself (it cannot be reached, times out)
    propagate: they are the job's, not a line's."""
    outcome = Outcome()
    order = [line for line in lines if line.source.strip()]
    position = {line.id: index for index, line in enumerate(order)}
    person = dict(glossary)
    terms = tuple(glossary) + tuple((source, target) for source, target in memory if source not in person)

    def accepted_before(first: Line) -> tuple[tuple[Line, str], ...]:
        before = [line for line in order[: position[first.id]] if line.id in outcome.korean]
        return tuple((line, outcome.korean[line.id]) for line in before[-context:] if context)

    def relevant(chunk: Sequence[Line]) -> tuple[Term, ...]:
        text = "".join(line.source for line in chunk)
        return tuple(term for term in terms if term[0] in text)

    def solve(chunk: Sequence[Line]) -> None:
        last = position[chunk[-1].id]
        chosen = relevant(chunk)
        request = Request(
            tuple(chunk), accepted_before(chunk[0]), tuple(order[last + 1 : last + 1 + lookahead]),
            chosen, sum(1 for source, _ in chosen if source in person), register,
        )  # fmt: skip
        for _attempt in range(2):
            outcome.requests += 1
            try:
                reply = ask(request)
                outcome.prompt_tokens += reply.prompt_tokens
                outcome.answer_tokens += reply.answer_tokens
                found, names = read_answer(reply, request)
            except AnswerProblem as problem:
                log(f"lines {chunk[0].id}-{chunk[-1].id}: the answer could not be used: {problem}")
                request = replace(request, problem=str(problem))
                continue
            outcome.korean.update(found)
            for source, target in names:
                outcome.names.setdefault(source, target)
            return
        if len(chunk) == 1:
            outcome.failed.append(chunk[0].id)
            return
        half = len(chunk) // 2
        solve(chunk[:half])
        solve(chunk[half:])

    step = max(1, window)
    for start in range(0, len(order), step):
        solve(order[start : start + step])
        progress(100.0 * min(len(order), start + step) / len(order))
    return outcome
