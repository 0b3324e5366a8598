"""A trained model as saved in a run directory: architecture (model.json), normaliser, parameters.

Used to fine-tune or continue from a previous run and by ``hamflow infer``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hamflow.atomic import atomic_write_text
from hamflow.config.train_config import neighbour_cutoff, radial_cutoff
from hamflow.errors import DataError
from hamflow.train.checkpoint import CheckpointInfo, RunLayout, list_epochs, read_meta, read_payload
from hamflow.train.normaliser import Normaliser

if TYPE_CHECKING:
    import flax.linen as nn

    from hamflow.config.train_config import TrainConfig
    from hamflow.graph.basis import CommonBasis
    from hamflow.graph.store import StoreMeta


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild the network: the arguments of ``hamflow.nn.model.build_model`` plus
    the data conventions it was trained on."""

    net_type: str
    shell_ls: tuple[int, ...]
    net_irreps: str
    num_blocks: int
    gaussian_basis_rmax: float
    consider_parity: bool
    spinful: bool
    target_type: str
    elements_orbital_map: dict[str, tuple[int, ...]]
    float_type: str
    # model.json files written before the spin-orbit readout existed lack the field: spin invariant
    spin_orbit: bool = False

    @property
    def radial_cutoff(self) -> float:
        """The network's radial cutoff (Angstrom), resolved from the stored TOML value (the field keeps
        the key's name: it is the on-disk format of model.json)."""
        return radial_cutoff(self.gaussian_basis_rmax)

    @property
    def neighbour_cutoff(self) -> float:
        """The pair cutoff (Angstrom) of the neighbour search for structures without overlap.h5."""
        return neighbour_cutoff(self.gaussian_basis_rmax)

    def to_json(self) -> str:
        data = asdict(self)
        data["shell_ls"] = list(self.shell_ls)
        data["elements_orbital_map"] = {k: list(v) for k, v in self.elements_orbital_map.items()}
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        data = json.loads(text)
        data["shell_ls"] = tuple(data["shell_ls"])
        data["elements_orbital_map"] = {k: tuple(v) for k, v in data["elements_orbital_map"].items()}
        return cls(**data)

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> ModelSpec:
        try:
            return cls.from_json(Path(path).read_text())
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(f"cannot read the model description: {error}", file=path) from None


def resolve_model_dir(path: str | Path) -> RunLayout:
    """Accept a run directory or its ``model/`` folder; return the run layout."""
    path = Path(path)
    if (path / "model.json").is_file() and path.name == "model":
        return RunLayout(path.parent)
    if (path / "model" / "model.json").is_file():
        return RunLayout(path)
    raise DataError("not a hamflow run directory (no model/model.json)", file=path)


def find_params(layout: RunLayout, load_model_type: str, load_model_epoch: int = -1) -> CheckpointInfo:
    """The parameter folder to load: ``best``, or ``latest`` at an epoch (-1: the newest)."""
    if load_model_type == "best":
        meta = read_meta(layout.best)
        if meta is None:
            raise DataError("no valid best model saved", file=layout.best)
        return CheckpointInfo(layout.best, int(meta.get("epoch", -1)), meta)
    infos = list_epochs(layout.latest)
    if load_model_epoch >= 0:
        infos = [info for info in infos if info.epoch == load_model_epoch]
        if not infos:
            available = [info.epoch for info in list_epochs(layout.latest)]
            raise DataError(
                f"no valid latest model for epoch {load_model_epoch} (saved epochs: {available})",
                file=layout.latest,
            )
    if not infos:
        raise DataError("no valid latest model saved", file=layout.latest)
    return infos[-1]


def load_params(info: CheckpointInfo, template: Any) -> Any:
    """Parameters of a checkpoint folder, in the structure of ``template``."""
    return read_payload(info.path, template)


def load_normaliser(layout: RunLayout) -> Normaliser:
    try:
        return Normaliser.load(layout.normaliser)
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"cannot read the target normaliser: {error}", file=layout.normaliser) from None


def model_spec(cfg: TrainConfig, basis: CommonBasis, store_meta: StoreMeta) -> ModelSpec:
    """The ModelSpec of a training run: ``cfg``'s network over the graph store's basis and metadata.

    ``net_irreps = ""`` takes :func:`hamflow.graph.irreps.default_net_irreps`; the irreps are checked
    against the basis (ConfigError naming the key). ``store_meta`` gives spinful and the orbital map.
    """
    from hamflow.graph.irreps import check_net_irreps, default_net_irreps

    adv = cfg.model.advanced
    spin_orbit = bool(store_meta.spinful) and bool(adv.spin_orbit)
    irreps = adv.net_irreps or default_net_irreps(
        basis, consider_parity=adv.consider_parity, net_type=cfg.model.net_type, spin_orbit=spin_orbit
    )
    check_net_irreps(
        irreps, basis, consider_parity=adv.consider_parity, net_type=cfg.model.net_type, spin_orbit=spin_orbit
    )
    return ModelSpec(
        net_type=cfg.model.net_type,
        shell_ls=tuple(int(l) for l in basis.shell_ls),
        net_irreps=str(irreps),
        num_blocks=int(adv.num_blocks),
        gaussian_basis_rmax=float(adv.gaussian_basis_rmax),
        consider_parity=bool(adv.consider_parity),
        spinful=bool(store_meta.spinful),
        target_type=cfg.model.target_type,
        elements_orbital_map={k: tuple(v) for k, v in store_meta.elements_orbital_map.items()},
        float_type=cfg.system.float_type,
        spin_orbit=spin_orbit,
    )


def build_network(spec: ModelSpec, compute_dtype: Any, dropout_rate: float = 0.0) -> nn.Module:
    """The flax module described by ``spec`` (training, fine-tuning and inference build it alike).

    dropout_rate: ``[process.train.drop]``, applied by the training step only (see
    :func:`hamflow.train.step.dropout_steps`); evaluation and inference never drop.
    """
    from hamflow.nn.model import build_model

    return build_model(
        spec.net_type,
        spec.shell_ls,
        net_irreps=spec.net_irreps,
        num_blocks=spec.num_blocks,
        rmax=spec.radial_cutoff,
        consider_parity=spec.consider_parity,
        spinful=spec.spinful,
        spin_orbit=spec.spin_orbit,
        dtype=compute_dtype,
        dropout_rate=dropout_rate,
    )
