"""The LLM engine's settings, the glossary a person writes and the series memory (no model)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from contract.manifest import ManifestItem, TranslateOrder, read_manifest, write_manifest
from contract.protocol import StageDone, WorkerEvent, decode_event, encode_event
from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.series import SeriesMemory, read_glossary, series_folder, translate_order
from daemon.stages import stage_options, worker_environment
from daemon.store import Store


def config_file(tmp_path: Path, llm: str, models: str = 'translator = "llm"') -> Path:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "autokr.toml"
    path.write_text(f'[daemon]\ninbox = ["inbox"]\nstate_dir = "state"\n[models]\n{models}\n[llm]\n{llm}\n', "utf-8")
    return path


def test_the_llm_engine_is_configured_as_the_issue_says_and_its_options_reach_the_worker(tmp_path):
    (tmp_path / "llm.key").write_text("sk-file-key\n", encoding="utf-8")
    path = config_file(tmp_path, 'url = "http://127.0.0.1:11434/v1"\nmodel = "hy-mt1.5:7b"\n'
                                 'api_key_file = "llm.key"\nfallback = "facebook/nllb-200-distilled-600M"\n'
                                 'register = "haeyo"')  # fmt: skip
    config = load_config(path)
    options = stage_options(config, "translate")
    assert options[:4] == ["--model", "llm", "--llm-url", "http://127.0.0.1:11434/v1"]
    assert "hy-mt1.5:7b" in options and "haeyo" in options and "sk-file-key" not in " ".join(options)
    # The key reaches the translate worker in its environment alone, never a command line.
    assert worker_environment(config, "translate")["AUTOKR_LLM_API_KEY"] == "sk-file-key"
    assert "AUTOKR_LLM_API_KEY" not in worker_environment(config, "transcribe")


def test_llm_settings_are_checked_without_showing_the_key(tmp_path):
    path = config_file(tmp_path, 'url = "http://user:pw@host/v1"\napi_key = "sk-a b"\nregister = "polite"\n'
                                 'api_key_file = "k"\nfallback = ""')  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    assert '[llm] model must name the model when [models] translator is "llm"' in problems
    assert "[llm] url must not hold a user name or password (the key goes in api_key or api_key_file)" in problems
    assert "[llm] needs at most one of api_key and api_key_file" in problems
    assert "[llm] register must be one of auto, haeyo, hapsyo, banmal, not 'polite'" in problems
    assert '[llm] fallback must name an NLLB model, or be "none"' in problems
    assert not any("sk-a" in problem or "pw" in problem for problem in problems)
    named = config_file(tmp_path, 'model = "qwen3:8b"')  # a server's name, but no server
    with pytest.raises(ConfigError, match=r"\[llm\] model must be a model folder .* when url is not set"):
        load_config(named)
    local = load_config(config_file(tmp_path, 'model = "./models/tiny-chat"'))  # run in the worker itself
    assert local.llm.model == str(tmp_path / "models" / "tiny-chat")
    assert stage_options(local, "translate")[:6] == ["--model", "llm", "--llm-url", "", "--llm-model", local.llm.model]


def test_the_glossary_of_every_folder_down_to_the_video_counts_and_the_nearer_one_wins(tmp_path):
    inbox = tmp_path / "inbox"
    season = inbox / "Show" / "Season 1"
    season.mkdir(parents=True)
    (inbox / "autokr-glossary.txt").write_text("田中 = 다나카\n東京 = 도쿄\n", encoding="utf-8")
    (inbox / "Show" / "autokr-glossary.txt").write_text(
        "\ufeff# the fans' spelling\n田中 = 타나카  # as the fans write it\n佐藤\t사토\n鈴木 → 스즈키\nno pair\n",
        encoding="utf-8",
    )
    warnings: list[str] = []
    glossary = dict(read_glossary(season / "01.mkv", [inbox], warnings.append))
    assert glossary == {"田中": "타나카", "東京": "도쿄", "佐藤": "사토", "鈴木": "스즈키"}
    assert warnings == [
        f"{inbox / 'Show' / 'autokr-glossary.txt'} line 5: write it as 日本語 = 한국어; the line is left out"
    ]


def test_an_odd_glossary_is_left_out_with_a_sentence_and_stops_nothing(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "A").mkdir(parents=True)
    (inbox / "B").mkdir()
    (inbox / "A" / "autokr-glossary.txt").write_bytes("田中 = 다나카".encode("shift_jis", "replace"))
    os.mkfifo(inbox / "B" / "autokr-glossary.txt")  # a FIFO would block a plain open
    (inbox / "autokr-glossary.txt").symlink_to("/etc/passwd")
    warnings: list[str] = []
    assert read_glossary(inbox / "A" / "1.mkv", [inbox], warnings.append) == ()
    assert read_glossary(inbox / "B" / "1.mkv", [inbox], warnings.append) == ()
    assert any("not UTF-8 text; save it as UTF-8" in warning for warning in warnings)
    assert any("B/autokr-glossary.txt: not a regular file" in warning for warning in warnings)
    assert any("cannot read the glossary" in warning for warning in warnings)  # the link is not followed


def test_the_series_is_the_first_folder_below_the_inbox():
    inbox = Path("/srv/anime")
    assert series_folder(inbox / "Show" / "Season 1" / "01.mkv", [inbox]) == inbox / "Show"
    assert series_folder(inbox / "Show" / "01.mkv", [inbox]) == inbox / "Show"
    assert series_folder(inbox / "01.mkv", [inbox]) is None
    assert series_folder(Path("/elsewhere/Show/01.mkv"), [inbox]) is None


def test_a_nested_inbox_owns_its_videos_for_the_glossary_and_the_series_alike(tmp_path):
    # /media is an inbox, and so is /media/Anime inside it: a video belongs to the nearer one
    # (as intake says), whatever order the config lists them in.
    media = tmp_path / "media"
    anime = media / "Anime"
    (anime / "Show" / "Season 1").mkdir(parents=True)
    (media / "autokr-glossary.txt").write_text("田中 = 다나카\n", encoding="utf-8")
    (anime / "autokr-glossary.txt").write_text("佐藤 = 사토\n", encoding="utf-8")
    video = anime / "Show" / "Season 1" / "01.mkv"
    for inboxes in ([media, anime], [anime, media]):
        assert series_folder(video, inboxes) == anime / "Show"
        assert dict(read_glossary(video, inboxes, print)) == {"佐藤": "사토"}


def test_the_memory_keeps_the_first_answer_the_person_s_word_wins_and_it_travels_in_the_manifest(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "Show").mkdir(parents=True)
    with Store(tmp_path / "db.sqlite3") as store:
        memory = SeriesMemory(store)
        assert memory.remember(inbox / "Show", [("田中", "다나카"), ("佐藤", "사토")], 1) == 2
        assert memory.remember(inbox / "Show", [("田中", "타나카"), ("鈴木", "스즈키")], 2) == 1  # 田中 stays
        memory.set(inbox / "Show", "佐藤", "사토우")
        assert memory.terms(inbox / "Show") == (("佐藤", "사토우"), ("田中", "다나카"), ("鈴木", "스즈키"))
        (inbox / "Show" / "autokr-glossary.txt").write_text("田中 = 타나카\n", encoding="utf-8")
        order = translate_order(store, inbox / "Show" / "02.mkv", [inbox], print)
        assert order == TranslateOrder(glossary=(("田中", "타나카"),), memory=(("佐藤", "사토우"), ("鈴木", "스즈키")))
        assert memory.forget(inbox / "Show", "鈴木") == 1 and memory.series() == [(str(inbox / "Show"), 2)]
    item = ManifestItem("7", tmp_path / "t.json", tmp_path / "k.json", translate=order)
    write_manifest(tmp_path / "m.json", [item])
    assert read_manifest(tmp_path / "m.json") == [item]


def test_a_done_event_carries_the_names_and_the_fallback_count_and_is_checked():
    line = encode_event("done", "1", model="m", fallback_lines=3, fallback_model="nllb", terms=[["田中", "다나카"]])
    done = StageDone.from_event(decode_event(line) or WorkerEvent("x", "1"))
    assert (done.fallback_lines, done.fallback_model, done.terms) == (3, "nllb", (("田中", "다나카"),))
    for bad in ({"terms": [["田中"]]}, {"terms": "田中"}, {"fallback_lines": "3"}):
        with pytest.raises(ValueError):
            decode_event(encode_event("done", "1", **bad))


def test_auto_takes_an_llm_folder_only_where_it_fits_on_the_card(tmp_path):
    from workers.catalog import GB, LLM_HEADROOM, llm_fits

    folder = tmp_path / "Qwen3-4B"
    folder.mkdir()
    with open(folder / "model.safetensors", "wb") as weights:
        weights.truncate(2 * GB)  # sparse: the size counts, not the bytes
    assert llm_fits(folder, None) == (False, 2 * GB + LLM_HEADROOM)  # a CPU: NLLB
    assert llm_fits(folder, 3 * GB)[0] is False and llm_fits(folder, 4 * GB)[0] is True
    config = load_config(config_file(tmp_path, f'model = "{folder}"', models='translator = "auto"'))
    options = stage_options(config, "translate")
    assert options[:6] == ["--model", "auto", "--llm-url", "", "--llm-model", str(folder)]
    plain = load_config(config_file(tmp_path, "", models='translator = "auto"'))
    assert stage_options(plain, "translate")[:2] == ["--model", "auto"] and "--llm-url" not in stage_options(
        plain, "translate"
    )
