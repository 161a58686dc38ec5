"""Progress bars: one per long loop with rate and ETA, off per call or for a whole build."""
import re

from diffprune_core.progress import bar


def test_a_bar_shows_count_elapsed_and_eta(capsys):
    assert list(bar(range(3), desc="loop")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "loop: 100%" in err and re.search(r"3/3 \[\d\d:\d\d<\d\d:\d\d", err)


def test_progress_false_or_the_build_variable_silence_every_bar(capsys, monkeypatch):
    list(bar(range(3), desc="loop", progress=False))
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("DIFFPRUNE_PROGRESS", "0")  # tools/build_book.sh and the smoke build
    list(bar(range(3), desc="loop"))
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("DIFFPRUNE_PROGRESS", "1")
    list(bar(range(3), desc="loop"))
    assert "loop: 100%" in capsys.readouterr().err
