import io
import sys

import pytest

from regstudy import progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)


def test_plain_lines_off_a_terminal_are_few_and_carry_the_postfix(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)      # only the tenth-of-the-loop rule is left
    steps = progress.bar(range(10_000), desc="train r0-s0 epoch 1/2", unit="steps")
    for i in steps:
        steps.set_postfix(f"loss {i}")
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and "\r" not in err
    assert 2 <= len(lines) <= 11, lines
    assert all(line.startswith("train r0-s0 epoch 1/2: ") for line in lines)
    assert "10% (1,000/10,000 steps" in lines[0] and lines[0].endswith("loss 999")
    assert "100% (10,000/10,000 steps" in lines[-1] and lines[-1].endswith("loss 9999")


def test_a_fast_loop_prints_only_its_last_line(capsys):
    for _ in progress.bar(iter(range(500)), desc="features", unit="batches"):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: 500 batches (")


@pytest.mark.parametrize("setting", ["0", "1", None])
def test_the_items_are_the_same(monkeypatch, setting):
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    if setting is not None:
        monkeypatch.setenv(progress.ENV, setting)
    items = [object() for _ in range(37)]
    assert list(progress.bar(items)) == items
    assert list(progress.bar(x for x in items)) == items
    assert list(progress.bar(range(3, 90, 7))) == list(range(3, 90, 7))


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert progress.mode() == "bar"
    steps = progress.bar(range(20), desc="train", unit="steps")
    for _ in steps:
        steps.set_postfix("acc 0.5")
    assert "\r" in term.getvalue() and "20/20" in term.getvalue() and "acc 0.5" in term.getvalue()
    monkeypatch.setenv(progress.ENV, "1")
    assert progress.mode() == "plain"


def test_zero_silences_it(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "0")
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    steps = progress.bar(range(1000), desc="train")
    for _ in steps:
        steps.set_postfix("loss 1")
    assert capsys.readouterr() == ("", "")


def test_a_loop_inside_a_shown_one_is_silent(capsys):
    for _ in progress.bar(range(3), desc="global probes"):
        for _ in progress.bar(range(100), desc="linear probe"):
            pass
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("global probes: 100%")
    for _ in progress.bar(range(2), desc="after"):      # the count is back to zero afterwards
        pass
    assert capsys.readouterr().err.startswith("after: 100%")
