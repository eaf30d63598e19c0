"""`genie-robot play`'s keys: 1-8 pick a latent action, [ and ] step through banks of 8 on models
with more (the window itself is tested in test_play.py, under Xvfb)."""

from __future__ import annotations


def test_keys_pick_actions_in_banks_of_8():
    from genie_robot.play import key_action

    assert key_action(ord("3"), 0, 8)[:2] == (2, 0)
    assert key_action(ord("8"), 0, 4) == (None, 0, "action 8 unused: this model has 4")
    assert key_action(ord("]"), 0, 8)[:2] == (None, 0)  # one bank: nothing to switch
    action, bank, said = key_action(ord("]"), 0, 64)
    assert (action, bank, said) == (None, 1, "bank 2 of 8: actions 9-16")
    assert key_action(ord("1"), bank, 64)[:2] == (8, 1)
    assert key_action(ord("["), 0, 64)[1] == 7  # wraps to the last bank
    assert key_action(ord("8"), 7, 60)[0] is None and key_action(ord("4"), 7, 60)[0] == 59
    assert key_action(ord("x"), 3, 64) == (None, 3, "")
