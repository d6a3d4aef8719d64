"""pid, state and log files are never written through a symbolic link, and ``multi``
signals only its own nodes (issue 15, finding 7)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from caraway.cli.pidfile import Pidfile
from caraway.cli.worker import _log_handler
from caraway.utils.files import SymlinkRefused, read_file, write_file


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file someone else owns in spirit: a link planted beside ours points at it."""
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


def test_a_pidfile_is_not_written_through_a_link_planted_at_its_temporary_name(
    tmp_path: Path, victim: Path
) -> None:
    """The temporary name was predictable (``<pidfile>.<pid>.tmp``) and opened by name."""
    pidfile = tmp_path / "w1.pid"
    (tmp_path / f"w1.pid.{os.getpid()}.tmp").symlink_to(victim)
    Pidfile(str(pidfile)).write()
    assert victim.read_text() == "precious\n"
    assert pidfile.read_text().strip() == str(os.getpid())
    assert oct(pidfile.stat().st_mode & 0o777) == oct(0o644)


def test_a_link_in_place_of_the_pidfile_is_replaced_not_followed(
    tmp_path: Path, victim: Path
) -> None:
    pidfile = tmp_path / "w1.pid"
    pidfile.symlink_to(victim)
    assert Pidfile(str(pidfile)).read() is None  # a link is not a pidfile a node wrote
    Pidfile(str(pidfile)).write()
    assert victim.read_text() == "precious\n"
    assert not pidfile.is_symlink()


def test_the_log_file_is_not_opened_through_a_link(tmp_path: Path, victim: Path) -> None:
    logfile = tmp_path / "w1.log"
    logfile.symlink_to(victim)
    with pytest.raises(click.UsageError, match="symbolic link"):
        _log_handler(str(logfile), "w1@h")
    assert victim.read_text() == "precious\n"


def test_a_log_file_is_created_readable_by_its_owner_and_group_only(tmp_path: Path) -> None:
    handler = _log_handler(str(tmp_path / "w1.log"), "w1@h")
    handler.close()
    assert (tmp_path / "w1.log").stat().st_mode & 0o777 == 0o640


def test_state_files_are_read_and_written_without_following_links(
    tmp_path: Path, victim: Path
) -> None:
    state = tmp_path / "w1.state"
    state.symlink_to(victim)
    with pytest.raises(SymlinkRefused):
        read_file(str(state))
    write_file(str(state), b"{}", mode=0o600)
    assert victim.read_text() == "precious\n"
    assert state.read_bytes() == b"{}" and state.stat().st_mode & 0o777 == 0o600


def test_multi_stop_does_not_signal_a_process_that_is_not_its_node(tmp_path: Path) -> None:
    """A stale pidfile whose pid now belongs to another program: ``multi stop`` sent it
    SIGTERM."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "w1.pid").write_text(f"{bystander.pid}\n")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "caraway",
                "multi",
                "stop",
                "w1",
                f"--pidfile={tmp_path}/%n.pid",
                f"--logfile={tmp_path}/%n.log",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert bystander.poll() is None, done.stdout + done.stderr
        assert "not signalled" in done.stdout + done.stderr
    finally:
        bystander.kill()
        bystander.wait(timeout=10)
