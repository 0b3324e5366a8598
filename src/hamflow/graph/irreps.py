"""Irreps the network needs for a common orbital basis, the default ``net_irreps``, and its check.

A block between a shell of angular momentum l1 (atom i) and one of l2 (atom j) transforms as
D^{l1} x D^{l2} = sum over L = |l1-l2|..l1+l2 of D^L, each with parity (-1)^(l1+l2). The output head
reads one copy of every such L per ordered shell pair, so the network's features must carry each
(L, parity) at least once; the highest L is 2 x the highest l of the basis. Without parity
(``consider_parity = false``) every irrep is even.
"""

from __future__ import annotations

import math
from collections import Counter

import e3nn_jax as e3nn

from hamflow.errors import ConfigError
from hamflow.graph.basis import CommonBasis

NET_IRREPS_KEY = "model.advanced.net_irreps"

#: Smallest default multiplicity per L (the last entry applies to every higher L), per network type.
BASE_MULTIPLICITY: dict[str, tuple[int, ...]] = {
    "sparrow": (64, 32, 16, 8),
    "eagle": (128, 64, 32, 16),
}
_NET_TYPE_ALIASES = {"normal": "sparrow", "accurate": "eagle"}

#: Default multiplicities are rounded up to a multiple of this (friendly to accelerators).
MULTIPLICITY_STEP = 8


def _block_irrep_counts(basis: CommonBasis, *, consider_parity: bool) -> Counter[tuple[int, int]]:
    """{(L, parity): number of ordered shell pairs whose block contains that irrep}."""
    counts: Counter[tuple[int, int]] = Counter()
    for l1 in basis.shell_ls:
        for l2 in basis.shell_ls:
            parity = (-1) ** (l1 + l2) if consider_parity else 1
            for big_l in range(abs(l1 - l2), l1 + l2 + 1):
                counts[(big_l, parity)] += 1
    return counts


def required_block_irreps(basis: CommonBasis, *, consider_parity: bool) -> e3nn.Irreps:
    """Irreps of all blocks of the basis: one (L, parity) per ordered shell pair, sorted and merged.

    E.g. s1p1 with parity: 2x0e+1x1o(s-p)+1x1o(p-s)+1x0e+1x1e+1x2e(p-p) -> 2x0e+2x1o+1x1e+1x2e.
    """
    counts = _block_irrep_counts(basis, consider_parity=consider_parity)
    return e3nn.Irreps([(n, (big_l, p)) for (big_l, p), n in counts.items()]).sort().irreps.simplify()


def _canonical_net_type(net_type: str) -> str:
    name = _NET_TYPE_ALIASES.get(net_type, net_type)
    if name not in BASE_MULTIPLICITY:
        raise ConfigError("model.net_type", f"= {net_type!r} is not one of sparrow, normal, eagle, accurate")
    return name


def default_net_irreps(basis: CommonBasis, *, consider_parity: bool, net_type: str) -> str:
    """The ``net_irreps`` used when the TOML leaves it empty, derived from the common basis.

    L runs over 0..2 x max l. With parity (sparrow only; eagle is always even) each L carries the
    parities the blocks need plus the natural parity (-1)^L of the edge's spherical harmonics.
    Multiplicity of each (L, parity): the larger of the network type's base value for L (sparrow
    64/32/16/8, eagle 128/64/32/16 for L = 0/1/2/>=3) and the number of shell pairs needing it,
    rounded up to a multiple of 8.
    """
    name = _canonical_net_type(net_type)
    with_parity = consider_parity and name == "sparrow"
    needed = _block_irrep_counts(basis, consider_parity=with_parity)
    base = BASE_MULTIPLICITY[name]
    parts: list[tuple[int, tuple[int, int]]] = []
    for big_l in range(2 * max(basis.max_l, 0) + 1):
        parities = {p for (l, p) in needed if l == big_l}
        parities.add((-1) ** big_l if with_parity else 1)
        for parity in sorted(parities, reverse=True):
            floor = base[min(big_l, len(base) - 1)]
            count = needed.get((big_l, parity), 0)
            multiplicity = max(floor, MULTIPLICITY_STEP * math.ceil(count / MULTIPLICITY_STEP))
            parts.append((multiplicity, (big_l, parity)))
    return str(e3nn.Irreps(parts))


def parse_net_irreps(net_irreps: str) -> e3nn.Irreps:
    """Parse an irreps string; :class:`ConfigError` (key model.advanced.net_irreps) if it is not one."""
    try:
        irreps = e3nn.Irreps(net_irreps)
    except (ValueError, TypeError, AssertionError) as error:
        raise ConfigError(
            NET_IRREPS_KEY, f"= {net_irreps!r} is not an irreps string such as '64x0e+32x1o+16x2e' ({error})"
        ) from None
    if irreps.dim == 0:
        raise ConfigError(NET_IRREPS_KEY, f"= {net_irreps!r} has no channels")
    return irreps


def check_net_irreps(net_irreps: str, basis: CommonBasis, *, consider_parity: bool) -> None:
    """Check a user-given ``net_irreps`` carries every (L, parity) the blocks of ``basis`` need.

    Without parity odd irreps are not allowed. Raises :class:`ConfigError` naming what is missing.
    """
    irreps = parse_net_irreps(net_irreps)
    present = {(mul_ir.ir.l, mul_ir.ir.p) for mul_ir in irreps if mul_ir.mul > 0}
    if not consider_parity:
        odd = sorted({f"{l}o" for l, p in present if p == -1})
        if odd:
            raise ConfigError(
                NET_IRREPS_KEY,
                f"= {net_irreps!r} has odd irreps ({', '.join(odd)}) but model.advanced.consider_parity "
                "is false: use even irreps only (e.g. 1e instead of 1o)",
            )
    needed = required_block_irreps(basis, consider_parity=consider_parity)
    missing = [str(mul_ir.ir) for mul_ir in needed if (mul_ir.ir.l, mul_ir.ir.p) not in present]
    if missing:
        default = default_net_irreps(basis, consider_parity=consider_parity, net_type="sparrow")
        raise ConfigError(
            NET_IRREPS_KEY,
            f"= {net_irreps!r} lacks {', '.join(missing)}, needed by the orbital basis "
            f"{basis.to_string()} (blocks up to L = {2 * basis.max_l}); "
            f"the default would be {default!r}",
        )
