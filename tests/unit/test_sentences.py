"""Whole sentences are translated, then spread back over their segments (no model needed)."""

from workers.segments import Segment
from workers.sentences import regroup, sentence_groups, spread

LINES = [
    {"start": 0.0, "end": 2.0, "text": "昨日、私は"},
    {"start": 2.3, "end": 4.0, "text": "駅の前で友達に"},
    {"start": 4.2, "end": 5.0, "text": "会いました。"},
    {"start": 9.0, "end": 10.0, "text": "はい。"},
    {"start": 13.0, "end": 14.0, "text": "それで"},  # a pause longer than 1.5 s ends a group too
    {"start": 16.0, "end": 17.0, "text": "終わり"},
]
SEGMENTS = [Segment(line["start"], line["end"], line["text"]) for line in LINES]


def test_segments_are_grouped_into_sentences():
    assert sentence_groups(SEGMENTS) == [[0, 1, 2], [3], [4], [5]]


def test_the_translation_is_spread_by_duration_at_word_boundaries():
    parts = spread("어제 나는 역 앞에서 친구를 만났습니다.", [2.0, 1.7, 0.8])
    assert " ".join(parts) == "어제 나는 역 앞에서 친구를 만났습니다."
    assert all(parts) and parts[0].startswith("어제") and parts[-1] == "만났습니다."


def test_segments_left_without_words_are_merged_not_emptied():
    result = regroup(SEGMENTS[:3], [[0, 1, 2]], ["네."])
    assert [s.to_json() for s in result] == [
        {"start": 0.0, "end": 5.0, "text": "네.", "source_text": "昨日、私は駅の前で友達に会いました。"}
    ]
    full = regroup(SEGMENTS[:4], [[0, 1, 2], [3]], ["어제 나는 역 앞에서 친구를 만났습니다.", "네."])
    assert [s.text for s in full] == ["어제 나는 역 앞에서", "친구를", "만났습니다.", "네."]
    assert [s.source_text for s in full] == [line["text"] for line in LINES[:4]]


def test_translation_batches_group_similar_lengths_within_a_token_budget():
    from workers.translate import TOKENS_PER_SENTENCE, token_batches

    lengths = [5, 200, 7, 6, 90, 8, 100, 95]
    batches = token_batches(lengths, batch_size=3)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert batches[0] == [0, 3, 2]  # the three shortest together
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 3 * TOKENS_PER_SENTENCE
    assert [1] in batches  # a sentence longer than the budget still goes, alone
