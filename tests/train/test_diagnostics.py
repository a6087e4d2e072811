from blendsync.train.diagnostics import warn_on


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
