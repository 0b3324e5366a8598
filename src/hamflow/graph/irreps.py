"""The one ``net_irreps`` rule: irreps the blocks of a common orbital basis need, the default, the check.

A block between a shell of angular momentum l1 (atom i) and one of l2 (atom j) transforms as
D^{l1} x D^{l2} = sum over L = |l1-l2|..l1+l2 of D^L, each with parity (-1)^(l1+l2); without parity
(``consider_parity = false``) every irrep is even. The readout (hamflow.nn.block_head.BlockReadout)
builds each block irrep from the features' irreps and from their products with the features' lowest
non-scalar irreps (:func:`reachable_irreps`), so the features need not carry every (L, parity)
themselves: DeepH-pack's natural-parity irreps (parity (-1)^L only) are enough.

:func:`check_net_irreps` is used by ``hamflow check-config`` (when ``common_orbital_types`` is
given), by training once the dataset's basis is known, and by ``hamflow.nn.model.build_model``; the
network types and their aliases (:data:`NET_TYPE_ALIASES`) and the eagle parity rule
(:func:`check_parity_rule`) are defined here once for the config schema and the model alike.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hamflow.errors import ConfigError, toml_repr
from hamflow.graph.basis import CommonBasis

if TYPE_CHECKING:
    import e3nn_jax as e3nn
else:

    class _LazyE3nn:
        """e3nn_jax imported on first use: the config check imports this module without starting JAX."""

        def __getattr__(self, name: str) -> Any:
            import e3nn_jax

            return getattr(e3nn_jax, name)

    e3nn = _LazyE3nn()

NET_IRREPS_KEY = "model.advanced.net_irreps"

#: Smallest default multiplicity per L (the last entry applies to every higher L), per network type.
BASE_MULTIPLICITY: dict[str, tuple[int, ...]] = {
    "sparrow": (64, 32, 16, 8),
    "eagle": (128, 64, 32, 16),
}
#: The network types and their DeepH-pack aliases: the one definition (config schema and model use it).
NET_TYPES = ("sparrow", "eagle")
NET_TYPE_ALIASES = {"normal": "sparrow", "accurate": "eagle"}

#: Default multiplicities are rounded up to a multiple of this (friendly to accelerators).
MULTIPLICITY_STEP = 8


def spin_vector_ls(big_l: int) -> range:
    """The L' of L (x) 1: the irreps that the spin-vector part of a block component L couples to."""
    return range(abs(big_l - 1), big_l + 2)


def _block_irrep_counts(
    basis: CommonBasis, *, consider_parity: bool, spin_orbit: bool = False
) -> Counter[tuple[int, int]]:
    """{(L, parity): number of ordered shell pairs whose block contains that irrep}.

    ``spin_orbit``: spinful blocks with the spin-orbit readout (hamflow.nn.block_head) also need, for
    each block irrep L, the irreps L' of L (x) 1 of their spin-vector part (same parity: spin is axial).
    """
    counts: Counter[tuple[int, int]] = Counter()
    for l1 in basis.shell_ls:
        for l2 in basis.shell_ls:
            parity = (-1) ** (l1 + l2) if consider_parity else 1
            for big_l in range(abs(l1 - l2), l1 + l2 + 1):
                counts[(big_l, parity)] += 1
                for coupled in spin_vector_ls(big_l) if spin_orbit else ():
                    counts[(coupled, parity)] += 1
    return counts


def required_block_irreps(basis: CommonBasis, *, consider_parity: bool) -> e3nn.Irreps:
    """Irreps of all blocks of the basis: one (L, parity) per ordered shell pair, sorted and merged.

    E.g. s1p1 with parity: 2x0e+1x1o(s-p)+1x1o(p-s)+1x0e+1x1e+1x2e(p-p) -> 2x0e+2x1o+1x1e+1x2e.
    """
    counts = _block_irrep_counts(basis, consider_parity=consider_parity)
    return e3nn.Irreps([(n, (big_l, p)) for (big_l, p), n in counts.items()]).sort().irreps.simplify()


def canonical_net_type(net_type: str) -> str:
    """``"sparrow"`` or ``"eagle"`` for a network type or its alias (normal, accurate); else ConfigError."""
    name = NET_TYPE_ALIASES.get(net_type, net_type)
    if name not in NET_TYPES:
        raise ConfigError("model.net_type", f"= {net_type!r} is not one of sparrow, normal, eagle, accurate")
    return name


def check_parity_rule(net_type: str, consider_parity: bool) -> None:
    """The eagle network is even-parity only: ConfigError for eagle (or accurate) with consider_parity."""
    if consider_parity and canonical_net_type(net_type) == "eagle":
        raise ConfigError(
            "model.advanced.consider_parity",
            '= true is not allowed with model.net_type = "eagle" (even-parity network); allowed: false',
        )


def default_net_irreps(
    basis: CommonBasis, *, consider_parity: bool, net_type: str, spin_orbit: bool = False
) -> str:
    """The ``net_irreps`` used when the TOML leaves it empty, derived from the common basis.

    L runs over 0..2 x max l (0..2 x max l + 1 with ``spin_orbit``: the spin-vector part of the blocks).
    With parity (sparrow only; eagle is always even) each L carries the
    parities the blocks need plus the natural parity (-1)^L of the edge's spherical harmonics.
    Multiplicity of each (L, parity): the larger of the network type's base value for L (sparrow
    64/32/16/8, eagle 128/64/32/16 for L = 0/1/2/>=3) and the number of shell pairs needing it,
    rounded up to a multiple of 8.
    """
    name = canonical_net_type(net_type)
    with_parity = consider_parity and name == "sparrow"
    needed = _block_irrep_counts(basis, consider_parity=with_parity, spin_orbit=spin_orbit)
    base = BASE_MULTIPLICITY[name]
    parts: list[tuple[int, tuple[int, int]]] = []
    for big_l in range(2 * max(basis.max_l, 0) + 1 + int(spin_orbit)):
        parities = {p for (l, p) in needed if l == big_l}
        parities.add((-1) ** big_l if with_parity else 1)
        for parity in sorted(parities, reverse=True):
            floor = base[min(big_l, len(base) - 1)]
            count = needed.get((big_l, parity), 0)
            multiplicity = max(floor, MULTIPLICITY_STEP * math.ceil(count / MULTIPLICITY_STEP))
            parts.append((multiplicity, (big_l, parity)))
    return str(e3nn.Irreps(parts))


def parse_net_irreps(net_irreps: str, *, consider_parity: bool, net_type: str = "sparrow") -> e3nn.Irreps:
    """The regrouped (sorted, merged) irreps of a ``net_irreps`` string, checked without the basis.

    Raises :class:`ConfigError` (key model.advanced.net_irreps) when the text is not an e3nn irreps
    string, has no even scalar (0e, the gates and radial weights need one), or has odd irreps although
    ``consider_parity`` is false or the network is eagle (even-parity only).
    """
    try:
        irreps = e3nn.Irreps(net_irreps).regroup()
    except (ValueError, TypeError, AssertionError) as error:
        detail = " ".join(str(error).split())
        raise ConfigError(
            NET_IRREPS_KEY,
            f"= {toml_repr(net_irreps)} is not an irreps string ({detail}); "
            'allowed: e.g. "64x0e+32x1o+16x2e+8x3o+8x4e"',
        ) from None
    if irreps.filter(keep=["0e"]).dim == 0:
        raise ConfigError(
            NET_IRREPS_KEY,
            f"= {toml_repr(net_irreps)} has no even scalar channel; allowed: irreps with at least one 0e "
            '(e.g. "64x0e+32x1o+16x2e")',
        )
    odd = list(dict.fromkeys(str(ir) for _, ir in irreps if ir.p == -1))
    name = NET_TYPE_ALIASES.get(net_type, net_type)
    if odd and (name == "eagle" or not consider_parity):
        reason = (
            'model.net_type = "eagle" takes even-parity irreps only'
            if name == "eagle"
            else "model.advanced.consider_parity = false allows even-parity irreps only"
        )
        raise ConfigError(
            NET_IRREPS_KEY,
            f"= {toml_repr(net_irreps)} has odd-parity irreps ({', '.join(odd)}) but {reason}; "
            'allowed: irreps ending in "e" (e.g. "64x0e+32x1e+16x2e+8x3e+8x4e")',
        )
    return irreps


def readout_vector_irreps(features: e3nn.Irreps) -> list[e3nn.Irrep]:
    """The irreps of lowest l > 0 among ``features`` (usually 1o and/or 1e); [] when all are scalars.

    The block readout (:class:`hamflow.nn.block_head.BlockReadout`) multiplies a projection of the
    features with a projection onto these irreps, channel by channel.
    """
    nonscalar = [ir for _, ir in e3nn.Irreps(features) if ir.l > 0]
    if not nonscalar:
        return []
    lowest = min(ir.l for ir in nonscalar)
    return sorted({ir for ir in nonscalar if ir.l == lowest})


def reachable_irreps(features: e3nn.Irreps) -> set[e3nn.Irrep]:
    """Every irrep the block readout can produce from features with irreps ``features``.

    The readout is y = Linear([f, a (x) v]): the features' own irreps, plus every irrep of the product
    of each feature irrep with the lowest non-scalar irreps v (e.g. with natural parity
    0e+1o+2e+3o+4e and v = 1o: 1e = 1o x 1o, 2o = 2e x 1o, 3e = 3o x 1o, ...).
    """
    distinct = sorted({ir for _, ir in e3nn.Irreps(features)})
    vectors = readout_vector_irreps(e3nn.Irreps(features))
    return set(distinct) | {out for ir in distinct for v in vectors for out in ir * v}


def _block_irreps_needed(
    shell_ls: Sequence[int], *, consider_parity: bool, spin_orbit: bool = False
) -> list[e3nn.Irrep]:
    """Distinct irreps (sorted) the blocks of the shells ``shell_ls`` need."""
    counts = _block_irrep_counts(
        CommonBasis(tuple(sorted(shell_ls))), consider_parity=consider_parity, spin_orbit=spin_orbit
    )
    return sorted(e3nn.Irrep(big_l, p) for big_l, p in counts)


def check_net_irreps(
    net_irreps: str | e3nn.Irreps,
    basis: CommonBasis | Sequence[int],
    *,
    consider_parity: bool,
    net_type: str = "sparrow",
    spin_orbit: bool = False,
) -> e3nn.Irreps:
    """The one rule for ``net_irreps``: parse it, then check the readout can build every block of ``basis``.

    ``spin_orbit``: the blocks are spinful with the spin-orbit readout, whose spin-vector part needs
    the irreps L' of L (x) 1 too (e.g. 5e for d-d blocks).

    ``basis`` is the common orbital basis (or its shell l values in any order). Accepted: any irreps
    from which :func:`reachable_irreps` covers every (L, parity) of the blocks, e.g. DeepH-pack's
    natural-parity ``64x0e+32x1o+16x2e+8x3o+8x4e`` with ``consider_parity = true``, all-even irreps
    with ``false``, and the defaults of :func:`default_net_irreps`. Returns the regrouped irreps;
    raises :class:`ConfigError` naming the missing irreps and a working value.
    """
    text = str(net_irreps)
    irreps = parse_net_irreps(text, consider_parity=consider_parity, net_type=net_type)
    shells = tuple(int(l) for l in (basis.shell_ls if isinstance(basis, CommonBasis) else basis))
    missing = [
        ir
        for ir in _block_irreps_needed(shells, consider_parity=consider_parity, spin_orbit=spin_orbit)
        if ir not in reachable_irreps(irreps)
    ]
    if missing:
        common = CommonBasis(tuple(sorted(shells)))
        vectors = readout_vector_irreps(irreps)
        via = f" and their products with {'+'.join(map(str, vectors))}" if vectors else ""
        working = default_net_irreps(
            common, consider_parity=consider_parity, net_type=net_type, spin_orbit=spin_orbit
        )
        spin = " with the spin-orbit readout (model.advanced.spin_orbit)" if spin_orbit else ""
        raise ConfigError(
            NET_IRREPS_KEY,
            f"= {toml_repr(text)} cannot build {'+'.join(map(str, missing))}, needed by the blocks of the "
            f"orbital basis {common.to_string()}{spin} (the readout reaches the irreps of net_irreps{via}); "
            f"a working value: {toml_repr(working)}",
        )
    return irreps
