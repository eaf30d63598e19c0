"""experiments/code_motion.py: the report's motion measurement on every code of a model."""

from __future__ import annotations

import json

import numpy as np

from experiments.code_motion import main, summarise


def test_summary_counts_the_codes_that_move_one_way():
    m = {"consistency": [0.95, 0.5, 0.9, None, 0.3], "agreement": [1.0, 0.9, 0.8, None, None],
         "real_transitions": [10, 30, 0, 0, 60], "still": [4]}
    s = summarise(m)
    assert (s["codes"], s["used"], s["codes_one_way"], s["moving_used"], s["moving_used_one_way"]) == (5, 3, 2, 2, 1)
    assert s["moving_used_consistency_weighted"] == np.float64(0.25 * 0.95 + 0.75 * 0.5)
    assert s["exceptions"] == [{"code": 1, "consistency": 0.5, "real_transitions": 30}]
    assert s["agreement_median"] == 0.95


def test_every_code_of_a_bundle_is_measured(tiny_bundle, tiny_store, tmp_path, capsys):
    store = tiny_store(12, length=24, resolution=(16, 16))
    out = tmp_path / "m.json"
    assert main(["--model", tiny_bundle, "--store", store, "--episodes", "2", "--depth", "2", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    A = len(got["motion"]["consistency"])
    assert got["summary"]["codes"] == A and got["motion"]["starts"] >= 1 and got["motion"]["steps"] == 2
    assert sum(got["motion"]["real_transitions"]) > 0 and f"{A} codes" in capsys.readouterr().out
