from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.errors import ConfigError

REPOSITORY = Path(__file__).resolve().parents[2]


def test_shipped_default_config_loads_once_its_inbox_exists(tmp_path):
    text = (REPOSITORY / "config" / "autokr.toml").read_text(encoding="utf-8")
    inbox = tmp_path / "library"
    inbox.mkdir()
    text = text.replace('inbox = ["~/Videos/autokr-inbox"]', f'inbox = ["{inbox}"]\nstate_dir = "state"')
    path = tmp_path / "autokr.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    assert config.daemon.inbox == (inbox,)
    assert config.daemon.state_dir == tmp_path / "state"  # relative to the file
    assert config.daemon.stable_seconds == 10
    assert config.models.whisper == "auto" and config.languages.target == "ko"
    assert config.model_dir == tmp_path / "state" / "models"
    assert (config.models.decoding, config.models.transcribe_batch_size) == ("batched", 0)
    assert config.models.packing == "on"


def test_every_problem_is_reported_at_once_with_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        '[daemon]\ninbox = ["missing"]\nstable_seconds = "ten"\nmax_attempts = 0\ncolour = "red"\n'
        '[models]\ndevice = "gpu"\ndecoding = "fast"\ntranscribe_batch_size = -1\npacking = "tight"\n'
        '[languages]\ntarget = "xx"\n[extra]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    assert caught.value.path == path
    assert f"[daemon] inbox folder does not exist: {tmp_path / 'missing'}" in problems
    assert "[daemon] stable_seconds must be a number, not 'ten'" in problems
    assert "[daemon] max_attempts must be a whole number from 1 to 100, not 0" in problems
    assert "unknown key [daemon] colour" in problems
    assert "unknown section [extra]" in problems
    assert any(p.startswith("[models] device must be") for p in problems)
    assert "[models] decoding must be batched or sequential, not 'fast'" in problems
    assert "[models] packing must be on, scenes or off, not 'tight'" in problems
    assert "[models] transcribe_batch_size must be a whole number from 0 to 256, not -1" in problems
    assert any(p.startswith("[languages] target 'xx' is not supported") for p in problems)


def test_unwritable_state_dir_and_bad_toml_are_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = tmp_path / "c.toml"
    path.write_text(f'[daemon]\ninbox = ["{tmp_path}"]\nstate_dir = "{blocker}/state"\n')
    with pytest.raises(ConfigError, match="state_dir cannot be created"):
        load_config(path)
    path.write_text("[daemon\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_autokr_once_does_not_need_the_inbox_to_exist(tmp_path):
    path = tmp_path / "autokr.toml"
    path.write_text(f'[daemon]\ninbox = ["{tmp_path}/not-yet"]\nstate_dir = "{tmp_path}/state"\n')
    assert load_config(path, need_inbox=False).daemon.inbox == (tmp_path / "not-yet",)
    with pytest.raises(ConfigError, match="inbox folder does not exist"):
        load_config(path)


def test_memory_levels_halve_the_batch_then_step_down_the_model():
    from workers.catalog import SMALLER_TRANSLATOR, SMALLER_WHISPER, step_down

    nllb = "facebook/nllb-200-1.3B"
    assert step_down(nllb, 16, 0, SMALLER_TRANSLATOR) == (nllb, 16)
    assert step_down(nllb, 16, 2, SMALLER_TRANSLATOR) == (nllb, 4)
    assert step_down(nllb, 16, 5, SMALLER_TRANSLATOR) == ("facebook/nllb-200-distilled-1.3B", 1)
    assert step_down(nllb, 16, 9, SMALLER_TRANSLATOR) == ("facebook/nllb-200-distilled-600M", 1)
    assert step_down("large-v3", 1, 1, SMALLER_WHISPER) == ("large-v2", 1)
    assert step_down("/models/tiny.pt", 1, 3, SMALLER_WHISPER) == ("/models/tiny.pt", 1)  # a path: kept


def test_global_options_are_taken_before_or_after_the_command():
    from daemon.cli import build_parser

    parser = build_parser()
    for words in (["--config", "a.toml", "-v", "status"], ["status", "--config", "a.toml", "-v"],
                  ["-v", "status", "--config", "a.toml"]):  # fmt: skip
        parsed = parser.parse_args(words)
        assert (parsed.command, parsed.config, parsed.verbose) == ("status", Path("a.toml"), True), words
    parsed = parser.parse_args(["run"])
    assert (parsed.config, parsed.verbose) == (None, False)
    assert parser.parse_args(["--config", "a.toml", "run", "--config", "b.toml"]).config == Path("b.toml")


@pytest.mark.parametrize(
    ("packing", "flags"),
    [("on", []), ("scenes", ["--no-packing-across-pauses"]), ("off", ["--no-packing"])],
)
def test_packing_reaches_the_transcribe_worker_as_its_flags(tmp_path, packing, flags):
    from daemon.stages import stage_options

    (tmp_path / "inbox").mkdir()
    path = tmp_path / "autokr.toml"
    path.write_text(f'[daemon]\ninbox = ["inbox"]\nstate_dir = "state"\n[models]\npacking = "{packing}"\n', "utf-8")
    options = stage_options(load_config(path), "transcribe")
    assert [flag for flag in options if flag.startswith("--") and "packing" in flag] == flags


def test_the_library_and_web_sections_default_to_japanese_and_no_socket_and_say_what_is_wrong(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = tmp_path / "autokr.toml"
    path.write_text(f'[daemon]\ninbox = ["{inbox}"]\nstate_dir = "state"\n', encoding="utf-8")
    config = load_config(path)
    assert (config.web.listen, config.spoken_languages, config.library.check_untagged_audio) == ("", ("ja",), True)
    assert not config.library.forced_subtitles_count
    path.write_text(
        f'[daemon]\ninbox = ["{inbox}"]\nstate_dir = "state"\n[library]\nspoken_languages = ["ja", "xx"]\n'
        '[web]\nlisten = "127.0.0.1"\ntoken = "short"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = "\n".join(caught.value.problems)
    assert "[library] spoken_languages: 'xx' is not a language code" in problems
    assert '[web] listen must be an address and a port such as "127.0.0.1:8787"' in problems
    assert "[web] token must be at least 16 characters" in problems and "short" not in problems
    path.write_text(
        f'[daemon]\ninbox = ["{inbox}"]\nstate_dir = "state"\n[web]\nlisten = "[::1]:8787"\n'
        'token_file = "credential:web"\n',
        encoding="utf-8",
    )
    config = load_config(path)
    assert (config.web.listen, config.web.token_file) == ("[::1]:8787", "credential:web")
