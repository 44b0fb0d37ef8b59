"""Country codes as users type them: alpha-3 in any case, unambiguous names, and one-line errors with a suggestion."""

from __future__ import annotations

import pytest

from tradewatch.flows.core import countries
from tradewatch.flows.core.errors import InputError


@pytest.mark.parametrize("text, iso3", [("KAZ", "KAZ"), ("kaz", "KAZ"), (" Germany ", "DEU"), ("Kazakhstan", "KAZ"),
                                        ("XKX", "XKX")])
def test_resolve_accepts_codes_and_names(text, iso3):
    assert countries.resolve(text, "--transit") == iso3


@pytest.mark.parametrize("text, hint", [("KAZZ", "did you mean KAZ?"), ("Germny", "did you mean DEU?"),
                                        ("KAZ' OR 1=1 --", "not an ISO 3166 alpha-3 code")])
def test_resolve_refuses_the_rest_naming_the_option(text, hint):
    with pytest.raises(InputError) as caught:
        countries.resolve(text, "--origin")
    assert str(caught.value).startswith(f"--origin {text}") and hint in str(caught.value)


@pytest.mark.parametrize("alpha2, iso3", [("QA", "QAT"), ("QP", "QPQ"), ("QU", "QUQ"), ("QZ", "QZQ"), ("QM", "QMQ")])
def test_qatar_is_a_country_and_qm_to_qz_are_confidential(alpha2, iso3):
    # Eurostat's confidential and unallocated partners are QP-QZ (ISO's user-assigned range QM-QZ); QA is Qatar.
    assert countries.is_confidential_alpha2(alpha2) == (iso3 != "QAT")
    assert countries.alpha2_to_iso3(alpha2) == iso3
