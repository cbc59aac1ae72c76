"""Pointed at a whole library, on plain data: which audio track and whether it is Japanese,
which subtitles already there count, the order of a backlog, and the webhooks' payloads."""

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from contract.media import AudioTrack, MediaInfo, SubtitleTrack
from contract.pipeline import STAGES
from contract.subtitles import existing_sidecars
from daemon import hooks
from daemon.scheduler import episode_number, following, library_order, next_cohort
from workers.language_id import MIXED_SHARE, combine, sample_windows


def track(index: int, language: str, default: bool = False, title: str = "", commentary: bool = False) -> AudioTrack:
    return AudioTrack(index, language, 0.0, "aac", title, default, commentary)


def info(*tracks: AudioTrack, subtitles: tuple[SubtitleTrack, ...] = ()) -> MediaInfo:
    return MediaInfo(10.0, tracks, 0.0, 10.0, subtitles)


# --- which audio track -------------------------------------------------------------------------


def test_the_japanese_track_is_chosen_wherever_it_lies_and_the_default_one_among_several():
    assert info(track(0, "eng", default=True), track(1, "jpn")).audio_choice().track == track(1, "jpn")
    several = info(track(0, "eng"), track(1, "jpn"), track(2, "jpn", default=True))
    assert several.audio_choice().track.audio_index == 2
    commentary = info(track(0, "jpn", default=True, commentary=True), track(1, "ja"))
    assert commentary.audio_choice().track.audio_index == 1  # commentaries last, even when default


def test_tracks_all_tagged_none_japanese_give_no_track_and_a_reason():
    choice = info(track(0, "eng"), track(1, "kor")).audio_choice(("ja",))
    assert choice.track is None and choice.reason == "no Japanese audio (eng, kor)"
    assert info(track(0, "eng")).audio_choice(("ja", "en")).track.audio_index == 0  # English counts when asked
    assert info(track(0, "eng"), track(1, "kor")).choose_audio().audio_index == 0  # --force: the default


def test_an_untagged_track_is_to_be_listened_to_and_a_tagged_japanese_one_wins_over_it():
    for tag in ("und", "", "unknown"):
        choice = info(track(0, "eng"), track(1, tag)).audio_choice()
        assert choice.track.audio_index == 1 and choice.listen
    assert not info(track(0, "und"), track(1, "jpn")).audio_choice().listen


def test_a_korean_subtitle_track_counts_and_a_forced_only_one_only_when_configured():
    korean = SubtitleTrack(0, "kor", "hdmv_pgs_subtitle")
    forced = SubtitleTrack(1, "ko", "ass", forced=True)
    english = SubtitleTrack(2, "eng", "subrip")
    assert info(track(0, "jpn"), subtitles=(english, forced)).subtitles_in("ko") == []
    assert info(track(0, "jpn"), subtitles=(english, forced)).subtitles_in("ko", forced_counts=True) == [forced]
    assert info(track(0, "jpn"), subtitles=(korean, english)).subtitles_in("ko") == [korean]


# --- which sidecars ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Video.ko.srt", "Video.kor.ass", "Video.korean.ssa", "Video.ko-KR.vtt", "Video.KO.SMI", "Video.ko.sdh.srt",
        "Video.kor.cc.sub", "Video.ko.default.sup", "Subs/Video.ko.srt", "subs/Video.Korean.smi",
    ],
)  # fmt: skip
def test_each_sidecar_variant_beside_the_video_or_in_its_subs_folder_is_found(tmp_path, name):
    (tmp_path / "Video.mkv").write_bytes(b"x")
    (tmp_path / name).parent.mkdir(exist_ok=True)
    (tmp_path / name).write_text("1\n")
    (tmp_path / "Video.en.srt").write_text("1\n")
    (tmp_path / "Video 2.ko.srt").write_text("1\n")
    assert [path.relative_to(tmp_path) for path in existing_sidecars(tmp_path / "Video.mkv", "ko")] == [Path(name)]


def test_a_forced_only_sidecar_counts_only_when_configured_and_a_linked_subs_folder_is_not_followed(tmp_path):
    (tmp_path / "Video.mkv").write_bytes(b"x")
    (tmp_path / "Video.ko.forced.srt").write_text("1\n")
    assert existing_sidecars(tmp_path / "Video.mkv", "ko") == []
    assert existing_sidecars(tmp_path / "Video.mkv", "ko", forced_counts=True) == [tmp_path / "Video.ko.forced.srt"]
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    (elsewhere / "Video.ko.srt").write_text("1\n")
    (tmp_path / "Subs").symlink_to(elsewhere)
    assert existing_sidecars(tmp_path / "Video.mkv", "ko") == []


# --- is the speech Japanese --------------------------------------------------------------------


def test_windows_are_spread_over_the_whole_of_the_speech_not_its_start():
    audio = (pytest.importorskip("numpy").arange(16000 * 600) % 16000).astype("float32")
    windows = sample_windows(audio, [(0.0, 600.0)])
    assert len(windows) == 6 and all(len(window) == 16000 * 30 for window in windows)
    assert sample_windows(audio, []) == []
    assert len(sample_windows(audio, [(10.0, 25.0)])) == 1


def test_english_speech_is_not_taken_for_japanese_and_a_mixed_track_still_is():
    english = [{"en": 0.95, "ja": 0.02}] * 6
    heard = combine(english, ["ja"])
    assert not heard.accepted and heard.reason(["ja"]) == "speech is English (p 0.95), not Japanese"
    mixed = [{"ja": 0.9, "en": 0.05}] * 2 + [{"en": 0.9, "ja": 0.05}] * 4  # a third of it Japanese
    assert MIXED_SHARE <= 2 / 6 and combine(mixed, ["ja"]).accepted and combine(mixed, ["ja"]).language == "ja"
    song = [{"ja": 0.9, "en": 0.05}] + [{"en": 0.9, "ja": 0.05}] * 5  # an English dub with a Japanese opening
    assert not combine(song, ["ja"]).accepted
    assert combine(english, ["ja", "en"]).accepted


# --- the order of a backlog --------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    id: int
    stage: str
    path: str
    mtime_ns: int = 0
    priority: float = 0.0


def test_episodes_come_in_their_natural_order_and_the_newest_folder_first():
    names = ["Show - 10 [1080p].mkv", "Show - 02 [1080p].mkv", "Show - 01 [1080p].mkv"]
    assert [episode_number(name) for name in names] == [(0, 10), (0, 2), (0, 1)]
    assert episode_number("番組 第10話.mp4") == (0, 10) and episode_number("Show.S02E03.mkv") == (2, 3)
    jobs = [
        Job(1, "extract", "/lib/Old/S01E10.mkv", mtime_ns=100),
        Job(2, "extract", "/lib/Old/S01E02.mkv", mtime_ns=200),
        Job(3, "extract", "/lib/New/第10話.mkv", mtime_ns=900),
        Job(4, "extract", "/lib/New/第2話.mkv", mtime_ns=300),
        Job(5, "extract", "/lib/Films/A (2015).mkv", mtime_ns=500),
        Job(6, "extract", "/lib/Films/B (2020).mkv", mtime_ns=600),
    ]
    assert [job.id for job in library_order(jobs)] == [4, 3, 6, 5, 2, 1]


def test_a_played_video_and_its_next_episode_go_before_a_cohort_on_its_way():
    waiting = [Job(number, "extract", f"/lib/Show/S01E{number:02}.mkv", mtime_ns=number) for number in range(1, 11)]
    on_its_way = [Job(20, "translate", "/lib/Other/a.mkv")]
    asked = [replace(waiting[4], priority=5.0), replace(waiting[5], priority=5.0)]
    ready = [*waiting[:4], *asked, *waiting[6:], *on_its_way]
    assert [job.id for job in next_cohort(ready, STAGES, 8)] == [5, 6]
    assert next_cohort([*waiting, *on_its_way], STAGES, 8) == on_its_way  # without it, the cohort finishes first
    assert following("S01E05.mkv", [job.path.rsplit("/", 1)[1] for job in waiting]) == "S01E06.mkv"
    assert following("S01E10.mkv", ["S01E09.mkv", "S01E10.mkv", "Extras.mkv"]) is None
    assert following("Movie.mkv", ["Movie.mkv", "Other.mkv"]) is None


# --- webhooks ----------------------------------------------------------------------------------


def test_each_service_s_documented_payload_is_read():
    jellyfin = json.dumps({"NotificationType": "PlaybackStart", "ItemId": "a1b2", "ItemType": "Episode"}).encode()
    assert hooks.read_event("jellyfin", jellyfin, "application/json") == hooks.Event("play", item="a1b2",
                                                                                    name="PlaybackStart")  # fmt: skip
    added = json.dumps({"NotificationType": "ItemAdded", "ItemId": "c3"}).encode()
    assert hooks.read_event("jellyfin", added, "application/json").kind == "import"
    paused = json.dumps({"NotificationType": "PlaybackStop", "ItemId": "c3"}).encode()
    assert hooks.read_event("jellyfin", paused, "application/json").kind is None
    boundary = "------------------------d74496d66958873e"
    plex = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="payload"\r\nContent-Type: application/json\r\n\r\n'
        + json.dumps({"event": "media.play", "Metadata": {"ratingKey": "1234", "type": "episode"}})
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="thumb"; filename="t.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff\r\n"
        f"--{boundary}--\r\n"
    ).encode("latin-1")
    event = hooks.read_event("plex", plex, f"multipart/form-data; boundary={boundary}")
    assert (event.kind, event.item) == ("play", "1234")
    episode = "/tv/Show/Season 1/Show - S01E01.mkv"
    sonarr = {
        "eventType": "Download", "isUpgrade": False, "series": {"path": "/tv/Show"},
        "episodeFile": {"relativePath": "Season 1/Show - S01E01.mkv", "path": episode},
    }  # fmt: skip
    assert hooks.read_event("sonarr", json.dumps(sonarr).encode(), "application/json") == hooks.Event(
        "import", path=episode, name="Download"
    )
    radarr = {"eventType": "Download", "movie": {"folderPath": "/movies/Film (2020)"},
              "movieFile": {"relativePath": "Film (2020).mkv"}}  # fmt: skip
    assert hooks.read_event("radarr", json.dumps(radarr).encode(), "").path == "/movies/Film (2020)/Film (2020).mkv"
    assert hooks.read_event("radarr", b'{"eventType": "Test"}', "").kind is None
    for service, body in (("sonarr", b"[1]"), ("jellyfin", b"not json"), ("plex", b"{}")):
        with pytest.raises(hooks.HookRefused):
            hooks.read_event(service, body, "application/json")


def test_a_webhook_s_path_is_mapped_back_and_acted_on_only_inside_an_inbox(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "Show").mkdir(parents=True)
    (tmp_path / "private").mkdir()
    (inbox / "Linked").symlink_to(tmp_path / "private")
    assert hooks.unmap_path("/tv/Show/a.mkv", (("/srv/media", "/tv"),)) == "/srv/media/Show/a.mkv"
    assert hooks.unmap_path("/elsewhere/a.mkv", (("/srv/media", "/tv"),)) == "/elsewhere/a.mkv"
    extensions = (".mkv",)
    inside = hooks.within_inboxes(str(inbox / "Show" / "a.mkv"), (inbox,), extensions, False)
    assert inside == inbox / "Show" / "a.mkv"
    for refused in (
        str(inbox / ".." / "private" / "a.mkv"),  # out by ..
        str(tmp_path / "private" / "a.mkv"),  # not in an inbox
        str(inbox / "Linked" / "a.mkv"),  # a link out of the inbox
        str(inbox / "Show" / "notes.txt"),  # not a video
        "relative/a.mkv",
        str(inbox / "Show" / "a.mkv") + "\x00.txt",
    ):
        assert hooks.within_inboxes(refused, (inbox,), extensions, False) is None, refused
    assert hooks.within_inboxes(str(inbox / "Linked" / "a.mkv"), (inbox,), extensions, True) is not None
    assert os.path.isdir(inbox / "Linked")
