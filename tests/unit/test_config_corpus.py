"""Every bad config gets one line naming the field and exit 2, never a traceback: the real
``event-router`` CLI on each file of ``tests/data/bad-configs/`` (each file says why it is
bad and which field the error must name: ``# expect: <text>`` on its second line), a file
beyond the size limit, and Ctrl-C while ``-validate`` reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from event_router.config.loader import MAX_FILE_BYTES, MAX_LINE_CHARS

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad-configs"
FILES = sorted(CORPUS.glob("*.yaml"))
EXE = str(Path(sys.executable).parent / "event-router")


def expectation(path: Path) -> str:
    line = path.read_text(encoding="utf-8").splitlines()[1]
    assert line.startswith("# expect: "), path
    return line.removeprefix("# expect: ")


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@pytest.fixture(scope="module")
def results() -> dict[Path, subprocess.CompletedProcess[str]]:
    """``-validate`` on every corpus file, two at a time (two cores)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = pool.map(lambda p: run("-validate", "-config", str(p)), FILES)
        return dict(zip(FILES, done, strict=True))


def test_the_corpus_is_large_enough() -> None:
    assert len(FILES) >= 60


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_bad_config_is_one_line_naming_the_field_and_exit_2(
    path: Path, results: dict[Path, subprocess.CompletedProcess[str]]
) -> None:
    got = results[path]
    lines = got.stderr.splitlines()
    assert got.returncode == 2, got
    assert "Traceback" not in got.stderr
    assert got.stdout == ""
    assert len(lines) == 1, lines
    assert expectation(path) in lines[0], lines[0]
    assert len(lines[0]) <= MAX_LINE_CHARS
    assert "ReplaceMe" not in lines[0] and "p" * 100 not in lines[0]  # no secret, no echo


@pytest.mark.parametrize(
    "name", ["001-depth-flow-500", "005-pagesize-5000-digits", "016-maxage-inf"]
)
def test_a_normal_start_refuses_the_same_configs_with_exit_2(name: str) -> None:
    got = run("-config", str(CORPUS / f"{name}.yaml"))
    assert got.returncode == 2, got
    assert "Traceback" not in got.stderr
    assert expectation(CORPUS / f"{name}.yaml") in got.stderr


def test_a_file_beyond_the_size_limit_is_refused_at_once(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as f:  # 50 MB: validated after 108 s at 1.7 GB RSS before
        f.write("apiVersion: event-router.vmware.com/v1alpha1\nmetadata:\n  name: ")
        f.write("n" * 50_000_000 + "\n")
    start = time.monotonic()
    got = run("-validate", "-config", str(big))
    assert time.monotonic() - start < 10
    assert got.returncode == 2
    (line,) = got.stderr.splitlines()
    assert line == (
        f"{big}: the config file is too large (more than {MAX_FILE_BYTES} bytes; "
        f"allowed: at most {MAX_FILE_BYTES} bytes, 1 MiB)"
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_during_validate_is_one_line_and_exit_130(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # -validate blocks reading it: a deterministic moment for Ctrl-C
    proc = subprocess.Popen(
        [EXE, "-validate", "-config", str(fifo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell without job control starts background jobs with SIGINT ignored, and
        # Python keeps an ignored SIGINT ignored: give the router a terminal's Ctrl-C
        preexec_fn=_default_sigint,
    )
    try:
        # opening the writing end waits for the router to open the reading end; then it
        # blocks in read() until Ctrl-C
        writer = fifo.open("w")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    writer.close()
    assert proc.returncode == 130, err
    assert err.splitlines() == [f"{fifo}: interrupted (Ctrl-C) during -validate"]
    assert out == ""
