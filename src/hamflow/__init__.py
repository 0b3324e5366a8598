"""hamflow: from DFT calculations to a trained E(3)-equivariant Hamiltonian network (DeepH method)."""

__version__ = "0.1.0"
