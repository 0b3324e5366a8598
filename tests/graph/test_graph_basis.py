"""Common orbital basis: union rule, orbital-type strings, coverage, slots; irreps from the basis."""

from __future__ import annotations

import e3nn_jax as e3nn
import numpy as np
import pytest

from hamflow.errors import ConfigError
from hamflow.graph.basis import CommonBasis, common_basis, element_slots, parse_orbital_types
from hamflow.graph.irreps import check_net_irreps, default_net_irreps, reachable_irreps, required_block_irreps


def test_union_rule_takes_the_largest_shell_count_per_l():
    basis = common_basis({"Mo": [0, 0, 0, 1, 1, 2, 2], "S": [0, 0, 1, 1, 2]})
    assert basis.shell_ls == (0, 0, 0, 1, 1, 2, 2)
    assert basis.to_string() == "s3p2d2"
    assert basis.size == 3 + 2 * 3 + 2 * 5
    assert common_basis({"C": [0, 0, 1, 1, 2], "H": [0, 0, 1], "F": [0, 1, 2, 3]}).to_string() == "s2p2d1f1"


def test_shell_slices_cover_the_basis_in_order():
    basis = parse_orbital_types("s2p1d1")
    assert basis.shell_slices == (slice(0, 1), slice(1, 2), slice(2, 5), slice(5, 10))
    assert basis.shell_offsets.tolist() == [0, 1, 2, 5, 10]


@pytest.mark.parametrize(
    ("text", "shells"),
    [("s2p2d1", (0, 0, 1, 1, 2)), ("sp", (0, 1)), ("d1s3", (0, 0, 0, 2)), (" S1P1 ", (0, 1)), ("f2", (3, 3))],
)
def test_parse_orbital_types(text, shells):
    basis = parse_orbital_types(text)
    assert basis.shell_ls == shells
    assert parse_orbital_types(basis.to_string()) == basis


@pytest.mark.parametrize("text", ["", "x2", "s2s1", "s0p1", "s2-p1", "2s"])
def test_bad_orbital_types_name_the_key(text):
    with pytest.raises(ConfigError, match=r"data\.graph\.common_orbital_types"):
        parse_orbital_types(text)


def test_requested_basis_must_cover_every_element():
    orbital_map = {"O": [0, 0, 1, 1, 2], "H": [0, 0, 1]}
    assert common_basis(orbital_map, "s3p2d2").to_string() == "s3p2d2"
    with pytest.raises(ConfigError, match=r"does not cover element O .*s2p2d1"):
        common_basis(orbital_map, "s2p2")


def test_element_slots_follow_shell_order_within_each_l():
    basis = parse_orbital_types("s2p2d1")  # s: 0, 1; p: 2-4, 5-7; d: 8-12
    assert element_slots(basis, [0, 0, 1]).tolist() == [0, 1, 2, 3, 4]
    assert element_slots(basis, [0, 1, 0, 1]).tolist() == [0, 2, 3, 4, 1, 5, 6, 7]
    assert element_slots(basis, [2]).tolist() == list(range(8, 13))
    with pytest.raises(ValueError, match="does not cover"):
        element_slots(basis, [2, 2])


def test_required_irreps_of_an_sp_basis():
    basis = CommonBasis((0, 1))
    # s-s: 0e; s-p and p-s: 1o each; p-p: 0e + 1e + 2e
    assert required_block_irreps(basis, consider_parity=True) == e3nn.Irreps("2x0e+2x1o+1x1e+1x2e")
    assert required_block_irreps(basis, consider_parity=False) == e3nn.Irreps("2x0e+3x1e+1x2e")


@pytest.mark.parametrize("text", ["s1", "s2p2d1", "s3p2d2", "s2p2d2f1"])
@pytest.mark.parametrize("parity", [True, False])
def test_default_net_irreps_cover_the_basis_up_to_twice_its_l(text, parity):
    basis = parse_orbital_types(text)
    for net_type in ("sparrow", "eagle"):
        consider = parity and net_type == "sparrow"
        irreps = e3nn.Irreps(default_net_irreps(basis, consider_parity=consider, net_type=net_type))
        check_net_irreps(str(irreps), basis, consider_parity=consider)
        assert max(ir.l for _, ir in irreps) == 2 * basis.max_l
        assert all(mul % 8 == 0 for mul, _ in irreps)
        if not consider:
            assert all(ir.p == 1 for _, ir in irreps)


def test_default_multiplicity_grows_with_the_shell_pairs_needing_an_irrep():
    basis = parse_orbital_types("s5")  # 25 s-s pairs need 0e
    irreps = e3nn.Irreps(default_net_irreps(basis, consider_parity=True, net_type="sparrow"))
    assert irreps == e3nn.Irreps("64x0e")
    many = CommonBasis((0,) * 9)  # 81 pairs
    assert e3nn.Irreps(default_net_irreps(many, consider_parity=True, net_type="normal")) == e3nn.Irreps(
        "88x0e"
    )


def test_check_net_irreps_names_what_is_missing_and_a_working_value():
    basis = parse_orbital_types("s2p2d1")
    # lmax 2: the readout's products with 1o reach L = 3 at most, d-d needs 4e.
    with pytest.raises(
        ConfigError, match=r"model\.advanced\.net_irreps.*cannot build 4e, .*s2p2d1.*working value"
    ):
        check_net_irreps("64x0e+32x1o+32x1e+16x2e+16x2o", basis, consider_parity=True)
    with pytest.raises(ConfigError, match=r"odd-parity irreps \(1o\)"):
        check_net_irreps("64x0e+32x1o+16x2e+8x3e+8x4e", basis, consider_parity=False)
    with pytest.raises(ConfigError, match="not an irreps string"):
        check_net_irreps("64 scalars", basis, consider_parity=True)
    with pytest.raises(ConfigError, match="no even scalar"):
        check_net_irreps("8x1o+8x2e", basis, consider_parity=True)
    with pytest.raises(ConfigError, match=r"cannot build 1o\+2o\+3o"):  # no channel of odd l at all
        check_net_irreps("8x0e+8x2e+8x4e", basis, consider_parity=True)
    check_net_irreps("8x0e+8x1e+8x2e+8x3e+8x4e", basis, consider_parity=False)


@pytest.mark.parametrize(
    ("irreps", "parity"),
    [
        ("64x0e+32x1o+16x2e+8x3o+8x4e", True),  # DeepH-pack's documented sparrow irreps
        ("16x0e+8x1o+8x2e+4x3o+4x4e", True),
        ("16x0e+8x1e+8x2e+4x3e+4x4e", False),  # the newer template: all even, no parity
        ("16x0e+8x1o+8x1e+8x2e+4x2o+4x3o+4x3e+4x4e", True),  # both parities (config/train.toml)
    ],
)
def test_natural_even_and_both_parity_irreps_are_accepted(irreps, parity):
    for text in ("s3p2d1", "s2p2d2", "s1p1"):
        result = check_net_irreps(irreps, parse_orbital_types(text), consider_parity=parity)
        assert result == e3nn.Irreps(irreps).regroup()
    assert check_net_irreps(irreps, (2, 0, 1, 0), consider_parity=parity)  # shell order does not matter


def test_natural_parity_irreps_reach_the_unnatural_block_irreps():
    reached = reachable_irreps(e3nn.Irreps("16x0e+8x1o+8x2e+4x3o+4x4e"))
    for needed in ("1e", "2o", "3e"):  # p-p, p-d and d-d blocks
        assert e3nn.Irrep(needed) in reached


def test_slots_place_every_orbital_once():
    basis = common_basis({"Mo": [0, 0, 0, 1, 1, 2, 2], "S": [0, 0, 1, 1, 2]})
    for shells in ([0, 0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2]):
        slots = element_slots(basis, shells)
        assert len(np.unique(slots)) == sum(2 * l + 1 for l in shells)
        assert slots.max() < basis.size
