"""The LLM translation protocol (workers/llm.py) against scripted answers: no line lost, merged,
blank or left Japanese, whatever the model says (no model needed)."""

from __future__ import annotations

import json

import pytest

from workers.llm import (
    AnswerProblem,
    Line,
    Reply,
    Request,
    answer_schema,
    messages,
    read_answer,
    reading_budget,
    translate_lines,
)

KOREAN = {
    "こんにちは。": "안녕하세요.",
    "ありがとう。": "고마워.",
    "田中さん。": "다나카 씨.",
    "さようなら。": "안녕히 가세요.",
}


def lines(*sources: str) -> list[Line]:
    return [Line(index, source, 16) for index, source in enumerate(sources)]


def window(request: Request) -> list[dict]:
    return json.loads(messages(request)[1]["content"].split("\n\n")[0])["translate"]


def good(request: Request) -> dict:
    return {"lines": [{"id": line["id"], "ko": KOREAN.get(line["ja"], "그래요.")} for line in window(request)]}


class Model:
    """Answers each request with the next of ``answers`` (a function of the request, or text)."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> Reply:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else good
        value = answer(request) if callable(answer) else answer
        return Reply(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False), 100, 20)


def test_a_good_answer_gives_every_line_its_own_korean_in_one_request():
    model = Model()
    outcome = translate_lines(lines("こんにちは。", "ありがとう。", "さようなら。"), model, window=12)
    assert outcome.korean == {0: "안녕하세요.", 1: "고마워.", 2: "안녕히 가세요."}
    assert (outcome.failed, outcome.requests, outcome.prompt_tokens) == ([], 1, 100)


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (lambda r: {"lines": good(r)["lines"][:-1]}, "line 2 was missing"),
        (lambda r: {"lines": [{"id": 0, "ko": "안녕하세요. 고마워."}, *good(r)["lines"][2:]]}, "line 1 was missing"),
        (lambda r: {"lines": [*good(r)["lines"], {"id": 7, "ko": "덤"}]}, "a line 7 that was not asked for"),
        (lambda r: {"lines": [good(r)["lines"][0], *good(r)["lines"]]}, "line 0 twice"),
        (lambda r: {"lines": [{"id": 0, "ko": ""}, *good(r)["lines"][1:]]}, "line 0 was empty"),
        (lambda r: {"lines": [{"id": 0, "ko": "こんにちは。"}, *good(r)["lines"][1:]]}, "line 0 still held Japanese"),
        (lambda r: {"lines": [{"id": 0, "ko": "안녕 " * 40}, *good(r)["lines"][1:]]}, "line 0 was far too long"),
        (lambda r: '{"lines": [{"id": 0, "ko": "안녕하세요."},, ]}', "it was not valid JSON"),
        (lambda r: "I cannot help with that.", "it was not JSON"),
        (lambda r: "<think>Let me see, こんにちは means", "reasoning text"),
        (lambda r: {"answer": "안녕하세요."}, 'no "lines" list'),
    ],
)
def test_an_unusable_answer_is_asked_once_more_with_its_problem_named(bad, problem):
    model = Model(bad)
    outcome = translate_lines(lines("こんにちは。", "ありがとう。", "さようなら。"), model)
    assert outcome.korean == {0: "안녕하세요.", 1: "고마워.", 2: "안녕히 가세요."} and outcome.failed == []
    first, second = model.requests
    assert first.problem is None and problem in (second.problem or "")
    assert problem in messages(second)[1]["content"]


def test_a_closed_think_block_is_dropped_and_the_answer_kept():
    model = Model(lambda r: "<think>田中 is a name, so 다나카.</think>\n```json\n" + json.dumps(good(r)) + "\n```")
    outcome = translate_lines(lines("田中さん。"), model)
    assert outcome.korean == {0: "다나카 씨."} and outcome.requests == 1


def test_a_window_that_keeps_failing_is_halved_down_to_single_lines_and_the_rest_is_left_to_the_fallback():
    def refuse_ありがとう(request: Request):
        answer = good(request)
        if any(line.source == "ありがとう。" for line in request.window):
            answer["lines"] = [
                {**entry, "ko": "ありがとう"} if entry["id"] == 1 else entry for entry in answer["lines"]
            ]
        return answer

    model = Model(*[refuse_ありがとう] * 20)
    outcome = translate_lines(lines("こんにちは。", "ありがとう。", "さようなら。", "田中さん。"), model, window=4)
    assert outcome.korean == {0: "안녕하세요.", 2: "안녕히 가세요.", 3: "다나카 씨."}
    assert outcome.failed == [1]
    # 4 lines twice, then [0, 1] twice, [0] once, [1] twice, then [2, 3] once.
    assert [request.ids for request in model.requests] == [[0, 1, 2, 3]] * 2 + [[0, 1]] * 2 + [[0], [1], [1], [2, 3]]


def test_each_window_gets_the_lines_before_with_their_accepted_korean_and_the_next_lines_for_meaning_only():
    model = Model()
    source = [f"台詞{i}です。" for i in range(10)]
    translate_lines(lines(*source), model, window=4, context=2, lookahead=3)
    second = model.requests[1]
    assert second.ids == [4, 5, 6, 7]
    assert [(line.id, korean) for line, korean in second.context] == [(2, "그래요."), (3, "그래요.")]
    assert [line.id for line in second.lookahead] == [8, 9]
    sent = json.loads(messages(second)[1]["content"])
    assert [entry["id"] for entry in sent["translate"]] == [4, 5, 6, 7]
    assert sent["after"] == [{"id": 8, "ja": "台詞8です。"}, {"id": 9, "ja": "台詞9です。"}]
    assert sent["context"][0] == {"id": 2, "ja": "台詞2です。", "ko": "그래요."}


def test_empty_lines_are_not_sent_and_get_no_text():
    model = Model()
    outcome = translate_lines([Line(0, "  ", 6), Line(1, "こんにちは。", 6)], model)
    assert outcome.korean == {1: "안녕하세요."} and model.requests[0].ids == [1]


def test_the_glossary_is_sent_and_checked_while_the_memory_is_sent_as_a_hint():
    ignores_the_glossary = lambda r: good(r)  # noqa: E731 - "다나카" where the glossary says 타나카
    model = Model(ignores_the_glossary)
    outcome = translate_lines(
        lines("田中さん。", "さようなら。"),
        model,
        glossary=[("田中", "타나카")],
        memory=[("田中", "다나카"), ("佐藤", "사토")],
    )
    first, second = model.requests[:2]
    assert first.terms == (("田中", "타나카"),) and first.checked == 1  # 佐藤 is not in these lines
    assert "line 0 must write 田中 as 타나카" in (second.problem or "")
    assert outcome.failed == [0]  # the model never wrote 타나카: the fallback gets it, it is not left wrong
    sent = json.loads(messages(first)[1]["content"])
    assert sent["glossary"] == {"田中": "타나카"}


def test_names_the_model_reports_are_kept_when_they_occur_in_the_lines():
    model = Model(lambda r: {**good(r), "names": {"田中": "다나카", "鈴木": "스즈키", "x": "y", "佐藤": "さとう"}})
    outcome = translate_lines(lines("田中さん。"), model)
    assert outcome.names == {"田中": "다나카"}  # 鈴木 is not in the line, x is not Japanese, さとう is not Korean


def test_a_name_kept_in_kanji_by_the_glossary_is_not_called_japanese():
    request = Request(tuple(lines("東京タワーへ。")), terms=(("東京タワー", "東京タワー"),), checked=1)
    found, _ = read_answer(Reply(json.dumps({"lines": [{"id": 0, "ko": "東京タワー로."}]})), request)
    assert found == {0: "東京タワー로."}
    with pytest.raises(AnswerProblem, match="still held Japanese"):
        read_answer(Reply(json.dumps({"lines": [{"id": 0, "ko": "とうきょう로."}]})), Request(tuple(lines("東京へ。"))))


def test_the_schema_asks_for_exactly_the_window_s_ids_and_the_budget_follows_the_cue_s_time():
    schema = answer_schema(Request(tuple(lines("a", "b"))))
    assert schema["properties"]["lines"]["minItems"] == schema["properties"]["lines"]["maxItems"] == 2
    assert schema["properties"]["lines"]["items"]["properties"]["id"]["enum"] == [0, 1]
    assert (reading_budget(0.3), reading_budget(2.0), reading_budget(5.0)) == (6, 24, 60)
