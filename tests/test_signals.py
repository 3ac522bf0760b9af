"""The signal rules every long command shares: stop at once outside safe points, only
record the signal inside them, exit at once on a second signal, put the handlers back."""
import os
import signal

import pytest

from leukemia_tf import signals


def test_outside_a_deferred_block_a_signal_stops_at_once():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(signals.Stopped) as stopped:
        with signals.handled():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10 ** 6):  # the handler runs before this loop ends
                pass
            pytest.fail("the signal did not stop the block")
    assert stopped.value.code == 143
    assert str(stopped.value) == "stopped by SIGTERM; the same command resumes from there"
    assert signal.getsignal(signal.SIGTERM) is before  # the handler found is put back


def test_inside_a_deferred_block_the_code_stops_itself():
    # Python's default_int_handler, or SIG_IGN when the suite runs in the background
    before = signal.getsignal(signal.SIGINT)
    reached = []
    with pytest.raises(signals.Stopped) as stopped:
        with signals.handled(), signals.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10 ** 5):
                pass
            reached.append(signals.requested())
    assert reached == [signal.SIGINT]  # recorded, not raised, inside the block
    assert stopped.value.code == 130  # raised on the way out: no safe point honoured it
    assert signal.getsignal(signal.SIGINT) is before


def test_a_second_signal_exits_at_once(monkeypatch, capsys):
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)
    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(SystemExit):
        with signals.handled(), signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10 ** 5):
                pass
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10 ** 5):
                pass
    assert exits == [143]
    assert "second SIGTERM: exiting at once" in capsys.readouterr().err
