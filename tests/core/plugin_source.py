"""An out-of-tree data source (loaded through a config's `imports:`): four classes of 1x4x4 blobs.

The declaration is torch-free, as the built-in ones are: torch is imported only when the loader runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clsweep import registry
from clsweep.registry import SourceInfo
from clsweep.spec.components import SourceParams

if TYPE_CHECKING:
    from clsweep.benchmarks.sources import SourceData

PER_CLASS = 40


def load_blobs(*, params: SourceParams) -> SourceData:
    """Class c lights up the c-th quadrant of the image; Gaussian noise; a stratified test hold-out."""
    import numpy as np

    from clsweep.benchmarks.sources import hold_out_test
    from clsweep.benchmarks.splits import rng_for

    rng = rng_for(params.seed, 7)
    y = rng.permutation(np.repeat(np.arange(4), PER_CLASS))
    x = rng.normal(0.2, 0.05, size=(y.size, 1, 4, 4))
    for c in range(4):
        rows, cols = divmod(c, 2)
        x[y == c, 0, 2 * rows : 2 * rows + 2, 2 * cols : 2 * cols + 2] += 0.6
    return hold_out_test("blobs", np.clip(x, 0.0, 1.0), y, params.seed, params.test_fraction, 4)


if "blobs" not in registry.list_names("source"):
    registry.register(
        "source",
        "blobs",
        f"{__name__}:load_blobs",
        params=SourceParams,
        source=SourceInfo((1, 4, 4), 4),
        summary="test only: four quadrant blobs",
    )
