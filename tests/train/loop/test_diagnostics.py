from blendsync.train.loop.diagnostics import warn_on


def _report(**norms):
    return {"norms": norms, "stream_balance": None, "smoothing_alpha_grad": 0.0, "total_norm": 1.0}


def test_warnings_for_missing_zero_exploding_and_imbalance():
    msgs = warn_on({**_report(a=None, b=0.0, c=11.0, d=0.5), "stream_balance": 20.0}, 3)
    text = "\n".join(msgs)
    assert "no gradient for a" in text and "zero gradient for b" in text and "exploding gradient for c" in text
    assert "stream imbalance" in text and "for d" not in text


def test_zero_alpha_gradient_expected_when_no_stream_has_a_previous_window():
    assert warn_on(_report(smoothing_alpha=0.0), 0, alpha_in_use=False) == []
    assert warn_on(_report(smoothing_alpha=0.0), 5, alpha_in_use=True)


def test_exploding_is_relative_to_the_parameters_own_history():
    """Norms are large in scaled-loss units from the start: only a jump over EXPLODING_RATIO
    times the median of earlier reports is a warning."""
    history: dict = {}
    assert warn_on(_report(a=150.0), 0, history=history) == []
    assert warn_on(_report(a=120.0), 50, history=history) == []
    assert warn_on(_report(a=900.0), 100, history=history) == []  # 7.5x the median: no warning
    msgs = warn_on(_report(a=5000.0), 150, history=history)
    assert len(msgs) == 1 and "exploding gradient for a" in msgs[0]
    assert "non-finite" in warn_on(_report(a=float("inf")), 200, history=history)[0]
