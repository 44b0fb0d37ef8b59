"""Product reference data: the CHPL copy against the published list, HS 2017→2022 matching, user lists, names."""

from __future__ import annotations

import csv

import pytest

from tradewatch.flows.core import products
from tradewatch.flows.core.errors import InputError


def test_chpl_copy_matches_the_reference_publication(shared_data):
    reference = shared_data / "reference" / "chpl_2024-02-23.csv"
    if not reference.is_file():
        pytest.skip(f"{reference} not found")
    lines = [line for line in reference.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    published = {}
    for row in csv.DictReader(lines):
        code = next(v for k, v in row.items() if k and k.lower() in ("hs6", "hs_code", "code", "hs"))
        tier = next(v for k, v in row.items() if k and k.lower() == "tier")
        published[code.strip()] = tier.replace("Tier", "").strip()
    ours = {code: tier for code, (tier, _label) in products.chpl().items()}
    assert len(ours) == 50
    assert ours == published


def test_chpl_tiers():
    assert products.chpl_tier("854231") == "1"
    assert products.chpl_tier("85423190") == "1"  # CN8 under a listed HS-6
    assert products.chpl_tier("8542") == "1"  # heading: its most urgent listed code
    assert products.chpl_tier("8482") == "3.B"
    assert products.chpl_tier("010121") is None
    weight, label = products.product_risk("854231")
    assert weight == 1.0 and label == "CHPL tier 1"
    assert products.product_risk("854231", use_chpl=False) == (0.0, None)


def test_hs2017_codes_map_to_their_hs2022_successors():
    assert products.to_hs2022("854150") == ("854151", "854159")
    assert products.to_hs2022("880330") == ("880730",)
    assert products.to_hs2022("85414010") == ("854141", "854142", "854143", "854149")
    assert products.to_hs2022("854231") == ("854231",)


def test_user_list_reads_hs_and_cn_codes(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("# my watch list\ncode,comment\n8542.31,chips\n90138000,optics\n8803,parts (HS 2017 heading)\n"
                    "854150,LEDs (HS 2017)\n")
    codes = products.read_user_list(path)
    assert codes == {"854231", "901380", "8803", "854151", "854159"}
    assert products.on_user_lists("854231", [codes])
    assert products.on_user_lists("880330", [codes])  # under a listed heading
    assert products.on_user_lists("9013", [codes])  # a heading holding a listed code
    assert not products.on_user_lists("010121", [codes])
    assert products.product_risk("010121", user_lists=[frozenset({"0101"})]) == (0.7, "on a user product list")


def test_user_list_bad_code_names_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("854231\n8542x1\n")
    with pytest.raises(InputError, match=r"bad.csv line 2: '8542x1' is not an HS or CN code"):
        products.read_user_list(path)
    with pytest.raises(InputError, match="no such file"):
        products.read_user_list(tmp_path / "missing.csv")


def test_product_names_from_the_hs_nomenclature():
    assert products.product_name("854231").startswith("Electronic integrated circuits; processors")
    assert products.product_name("8542") == "Electronic integrated circuits"
    # An HS 2017 code that was renamed gets the name of what it became.
    assert products.product_name("880330") == products.product_name("880730")
    assert products.product_name("abc") is None


def test_restricted_goods_copy_matches_the_reference_list(shared_data):
    from importlib import resources

    reference = shared_data / "reference" / "eu_833_2014_cn8_2022-10-07.csv"
    if not reference.is_file():
        pytest.skip(f"{reference} not found")
    shipped = resources.files("tradewatch.data").joinpath("eu_833_2014_cn8_2022-10-07.csv").read_text(encoding="utf-8")
    assert shipped == reference.read_text(encoding="utf-8")


def test_restricted_goods_are_the_annexes_the_chpl_and_user_lists(tmp_path):
    from tradewatch.flows.core import products

    annex = products.eu_restricted_hs6()
    assert len(annex) > 1000 and all(len(code) == 6 and code.isdigit() for code in annex)
    assert "870323" in annex  # cars of 1,500-3,000 cc (Annex XVIII luxury goods)
    assert "090111" not in annex  # coffee is not restricted
    listed = tmp_path / "mine.csv"
    listed.write_text("code\n090111\n")
    restricted = products.restricted_hs6([products.read_user_list(listed)])
    assert set(products.chpl()) <= restricted and "090111" in restricted
    assert products.is_restricted("8542", restricted) and not products.is_restricted("0901", products.restricted_hs6())
