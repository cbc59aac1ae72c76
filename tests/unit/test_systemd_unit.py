"""The shipped unit, ``autokr systemd-unit`` and ``systemd-analyze verify``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from daemon import unit
from testkit.require import REPOSITORY, skip_or_fail

SHIPPED = REPOSITORY / "systemd" / "autokr.service"


def autokr(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *arguments], capture_output=True, text=True, timeout=60)


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        skip_or_fail("systemd-analyze is not installed (apt-get install systemd)")
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)


def test_the_shipped_unit_is_the_rendered_default():
    assert SHIPPED.read_text(encoding="utf-8") == unit.render_unit(), (
        "systemd/autokr.service is out of date: regenerate it from daemon/unit.py"
    )


def test_the_shipped_unit_passes_systemd_analyze_verify():
    # verify checks that ExecStart= exists: give it /opt/autokr/.venv/bin/autokr in a private
    # mount namespace (root) so that the host's /opt is not touched.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        skip_or_fail("verifying the shipped unit needs root and unshare (for a private /opt)")
    verify(SHIPPED)  # skips or fails early when systemd-analyze is missing
    script = (
        "mount -t tmpfs tmpfs /opt && mkdir -p /opt/autokr/.venv/bin && "
        f"ln -s {Path(sys.executable).parent / 'autokr'} /opt/autokr/.venv/bin/autokr && "
        f"systemd-analyze verify {SHIPPED}"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warnings either


def test_autokr_systemd_unit_renders_a_unit_that_verifies(tmp_path):
    library = tmp_path / "srv" / "anime"
    library.mkdir(parents=True)
    config = tmp_path / "autokr.toml"
    config.write_text(
        f'[daemon]\ninbox = ["{library}"]\nstate_dir = "/var/lib/autokr"\nworker_stop_seconds = 40\n', encoding="utf-8"
    )
    result = autokr("--config", str(config), "systemd-unit")
    assert result.returncode == 0, result.stderr
    rendered = result.stdout
    lines = rendered.splitlines()
    autokr_script = Path(sys.executable).parent / "autokr"
    assert f"ExecStart={autokr_script} --config {config} run" in lines
    assert f"ReadWritePaths={library}" in lines
    assert "TimeoutStopSec=60" in lines  # worker_stop_seconds + 20
    assert "Type=notify" in lines and "KillMode=mixed" in lines and "User=autokr" in lines
    assert "PrivateDevices=yes" not in lines  # the GPU stays reachable
    assert result.stderr == ""  # state_dir is the service's: no advice needed
    path = tmp_path / "autokr.service"
    path.write_text(rendered, encoding="utf-8")
    checked = verify(path)
    assert checked.returncode == 0, checked.stderr


def test_folders_under_home_or_tmp_are_bound_in_and_writable():
    install = unit.Install(
        command=("/home/ann/autokr/.venv/bin/autokr",),
        config=Path("/etc/autokr/autokr.toml"),
        write=(Path("/home/ann/Videos/Anime"), Path("/srv/media")),
        read=(Path("/home/ann/autokr/.venv"), Path("/home/ann/.pyenv/versions/3.11.7")),
    )
    lines = unit.install_lines(install)
    assert "ProtectHome=tmpfs" in lines
    assert "BindReadOnlyPaths=/home/ann/autokr/.venv" in lines
    assert "BindPaths=/home/ann/Videos/Anime" in lines
    # a bound folder is still read-only under ProtectSystem=strict until it is listed here:
    assert "ReadWritePaths=/home/ann/Videos/Anime" in lines and "ReadWritePaths=/srv/media" in lines
    plain = unit.install_lines(unit.DEFAULT_INSTALL)
    assert "ProtectHome=yes" in plain and not any(line.startswith("Bind") for line in plain)


def test_paths_with_spaces_are_quoted_for_systemd():
    install = unit.Install(command=("/opt/autokr/.venv/bin/autokr",), config=Path("/etc/a k/autokr.toml"), write=())
    assert 'ExecStart=/opt/autokr/.venv/bin/autokr --config "/etc/a k/autokr.toml" run' in unit.install_lines(install)


def test_a_config_without_state_dir_gets_advice(tmp_path):
    library = tmp_path / "lib"
    library.mkdir()
    config = tmp_path / "autokr.toml"
    config.write_text(f'[daemon]\ninbox = ["{library}"]\n', encoding="utf-8")
    result = autokr("--config", str(config), "systemd-unit", "--drop-in")
    assert result.returncode == 0
    assert result.stdout.startswith("[Service]\nExecStart=\n")
    assert 'set state_dir = "/var/lib/autokr"' in result.stderr


def _library_and_local_models(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A library folder, and both models as local paths (nothing to download)."""
    library = tmp_path / "srv" / "anime"
    library.mkdir(parents=True)
    whisper, nllb = tmp_path / "whisper-base", tmp_path / "nllb"
    whisper.mkdir()
    nllb.mkdir()
    return library, whisper, nllb


def test_media_servers_get_their_credentials_and_are_the_only_network_when_models_are_local(tmp_path):
    library, whisper, nllb = _library_and_local_models(tmp_path)
    settings = (
        f'[daemon]\ninbox = ["{library}"]\nstate_dir = "/var/lib/autokr"\n'
        '[jellyfin]\nurl = "http://127.0.0.1:8096"\napi_key_file = "credential:jellyfin"\n'
        '[plex]\nurl = "http://localhost:32400"\ntoken_file = "credential:plex"\n'
    )
    config = tmp_path / "autokr.toml"
    config.write_text(settings + f'[models]\nwhisper = "{whisper}"\ntranslator = "{nllb}"\n', encoding="utf-8")
    result = autokr("--config", str(config), "systemd-unit")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "LoadCredential=jellyfin:/etc/credstore/jellyfin" in lines
    assert "LoadCredential=plex:/etc/credstore/plex" in lines
    assert "IPAddressDeny=any" in lines
    (allowed,) = [line for line in lines if line.startswith("IPAddressAllow=")]
    assert set(allowed.removeprefix("IPAddressAllow=").split()) <= {"localhost", "127.0.0.1", "::1"}
    path = tmp_path / "autokr.service"
    path.write_text(result.stdout, encoding="utf-8")
    checked = verify(path)
    assert checked.returncode == 0, checked.stderr

    config.write_text(settings, encoding="utf-8")  # named models: downloaded on first use
    lines = autokr("--config", str(config), "systemd-unit").stdout.splitlines()
    assert "IPAddressDeny=any" not in lines and "LoadCredential=plex:/etc/credstore/plex" in lines
    assert "# The network stays open: a named model is downloaded on first use, or a notification service" in lines


def test_the_ray_backend_keeps_the_network_open_and_warns_of_a_driver_that_needs_tmp_ray(tmp_path):
    library, whisper, nllb = _library_and_local_models(tmp_path)
    config = tmp_path / "autokr.toml"
    settings = f'[daemon]\ninbox = ["{library}"]\n[models]\nwhisper = "{whisper}"\ntranslator = "{nllb}"\n'
    for address, warned in (("auto", True), ("head.lan:6379", True), ("ray://head.lan:10001", False)):
        config.write_text(settings + f'[cluster]\nbackend = "ray"\naddress = "{address}"\n', encoding="utf-8")
        lines = autokr("--config", str(config), "systemd-unit").stdout.splitlines()
        assert "IPAddressDeny=any" not in lines  # the local models alone would have closed it
        assert any("PrivateTmp=yes hides from the service" in line for line in lines) == warned, address


def test_a_checkout_in_a_home_folder_is_bound_into_the_service_with_its_venv(tmp_path, monkeypatch):
    # ./setup.sh installs AutoKR editable: its code is the checkout, outside the venv. Cloned
    # into ~/autokr (hidden by ProtectHome=), the service could not import AutoKR without it.
    from daemon.config import load_config

    (tmp_path / "inbox").mkdir()
    config_file = tmp_path / "autokr.toml"
    config_file.write_text('[daemon]\ninbox = ["inbox"]\nstate_dir = "state"\n', encoding="utf-8")
    monkeypatch.setattr(unit, "code_root", lambda: Path("/home/someone/autokr"))
    install = unit.install_for(load_config(config_file), state_dir_set=True)
    assert Path("/home/someone/autokr") in install.read
    assert "BindReadOnlyPaths=/home/someone/autokr" in unit.render_drop_in(install).splitlines()
    monkeypatch.setattr(unit, "code_root", lambda: Path("/opt/autokr"))  # visible to the service: no bind
    assert Path("/opt/autokr") not in unit.install_for(load_config(config_file), state_dir_set=True).read
