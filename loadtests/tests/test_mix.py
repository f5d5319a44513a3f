"""The load mix: what the driver's options mean and how they reach the Locust process."""

from __future__ import annotations

import argparse

import pytest

from loadtests.compare import duration_seconds
from loadtests.mix import DEFAULT_TOKEN_SHARES, LoadMix, parse_mix


def test_mix_option_gives_tok_ok_the_rest() -> None:
    shares, undeliverable = parse_mix("tok_decline=0.2,tok_timeout=0.05,undeliverable=0.1")
    assert shares == {"tok_ok": 0.75, "tok_decline": 0.2, "tok_timeout": 0.05, "tok_flaky": 0.0}
    assert undeliverable == 0.1
    assert parse_mix("undeliverable=0.5") == (DEFAULT_TOKEN_SHARES, 0.5)


@pytest.mark.parametrize("text", ["tok_decline=0.7,tok_timeout=0.7", "tok_nope=0.1", "tok_decline"])
def test_bad_mixes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        LoadMix(token_shares=parse_mix(text)[0])


def test_mix_travels_through_the_environment() -> None:
    mix = LoadMix(customers=7, products=3, hot_sku_share=0.5, token_shares=parse_mix("tok_flaky=0.25")[0],
                  undeliverable_share=0.1, replay_share=0.2, password="secret")
    assert LoadMix.from_env(mix.to_env()) == mix


def test_duration_is_read_like_locust_reads_it() -> None:
    assert duration_seconds("45") == 45
    assert duration_seconds("45s") == 45
    assert duration_seconds("1m30s") == 90
    with pytest.raises(argparse.ArgumentTypeError):
        duration_seconds("soon")
