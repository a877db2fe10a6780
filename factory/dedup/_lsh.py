"""datasketch without its 50 MB scipy import: LSH bands computed here, scipy.integrate loaded on use.

datasketch imports `scipy.integrate.quad` at module top (lsh.py, lsh_bloom.py) for one job: choosing
the bands and rows of a `MinHashLSH` built with `params=None`. That import is about 50 MB of resident
memory in every `factory generate`, a third of its peak. `NearDupIndex` passes explicit `params`
from `lsh_params()` (the same optimisation, integrated exactly), so quad is never called,
and `defer_scipy_integrate()` keeps the import itself until something really uses scipy.integrate.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

import numpy as np

_NAME = "scipy.integrate"


def _real_integrate() -> types.ModuleType:
    """Import the real scipy.integrate, replacing the placeholder in sys.modules."""
    module = sys.modules.get(_NAME)
    if module is not None and not getattr(module, "_factory_placeholder", False):
        return module
    sys.modules.pop(_NAME, None)
    return importlib.import_module(_NAME)


def _quad(*args: Any, **kwargs: Any) -> Any:
    return _real_integrate().quad(*args, **kwargs)


def _getattr(name: str) -> Any:
    if name.startswith("__"):  # the import system probes __path__ etc.; that is no use of the module
        raise AttributeError(name)
    return getattr(_real_integrate(), name)


def defer_scipy_integrate() -> None:
    """Put a stand-in for scipy.integrate in sys.modules (unless it is loaded) that imports it on use.

    `from scipy.integrate import quad` then binds a function that imports the real module on its
    first call and delegates; any other attribute does the same. Call before importing datasketch.
    """
    if _NAME in sys.modules:
        return
    spec = importlib.util.find_spec(_NAME)  # imports the light `scipy` package only, not scipy.integrate
    if spec is None:
        return
    placeholder = types.ModuleType(_NAME, "Stand-in: the real scipy.integrate is imported on first use.")
    placeholder._factory_placeholder = True  # type: ignore[attr-defined]
    # A package path, so `import scipy.integrate._quadrature` (scipy.stats does it) still finds the
    # submodule; `from scipy.integrate import name` then reaches `_getattr` and the real module.
    placeholder.__path__ = list(spec.submodule_search_locations or [])  # type: ignore[attr-defined]
    placeholder.quad = _quad  # type: ignore[attr-defined]
    placeholder.__getattr__ = _getattr  # type: ignore[attr-defined]
    sys.modules[_NAME] = placeholder


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of n-point Gauss-Legendre quadrature on [-1, 1] (Golub-Welsch).

    numpy.polynomial.legendre.leggauss gives the same, but importing numpy.polynomial costs 2 MB.
    """
    k = np.arange(1, n)
    beta = k / np.sqrt(4.0 * k * k - 1)  # the Legendre recurrence as a symmetric tridiagonal matrix
    nodes, vectors = np.linalg.eigh(np.diag(beta, 1) + np.diag(beta, -1))
    return nodes, 2 * vectors[0] ** 2


def _integral(f: Any, lo: float, hi: float, nodes: np.ndarray, weights: np.ndarray) -> float:
    """Gauss-Legendre quadrature of f over [lo, hi]."""
    half = (hi - lo) / 2
    return float(half * np.dot(weights, f(half * nodes + (hi + lo) / 2)))


def lsh_params(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """(bands, rows) minimising weighted false positive + false negative area: datasketch's optimiser.

    The integrands 1 - (1 - s^r)^b are polynomials of degree r*b <= num_perm, so Gauss-Legendre with
    num_perm // 2 + 1 nodes integrates them exactly: the same grid search as datasketch's
    `_optimal_param`, without scipy's adaptive quad.
    """
    nodes, node_weights = _gauss_legendre(num_perm // 2 + 1)
    best, best_error = (0, 0), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            collide = lambda s, b=b, r=r: 1 - (1 - s**r) ** b  # noqa: E731 - P(candidate) at similarity s
            fp = _integral(collide, 0.0, threshold, nodes, node_weights)
            fn = _integral(lambda s, c=collide: 1 - c(s), threshold, 1.0, nodes, node_weights)
            error = fp * weights[0] + fn * weights[1]
            if error < best_error:
                best, best_error = (b, r), error
    return best
