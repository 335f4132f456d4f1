"""The build pipeline, under the name it had first: see :mod:`dreamgym.pipeline`.

The pipeline drives every layer (collection, training, agents, pictures), so it sits at the
top of the package, not inside :mod:`dreamgym.training`; this module keeps
``from dreamgym.training.build import build`` working.
"""

from dreamgym.pipeline import (
    PREVIEW_IMAGES,
    RESULT_RECORDS,
    ROUND_SECTIONS,
    SECTIONS,
    build,
    load_build_config,
    package_world_model,
    round_folder,
)

__all__ = [
    "PREVIEW_IMAGES",
    "RESULT_RECORDS",
    "ROUND_SECTIONS",
    "SECTIONS",
    "build",
    "load_build_config",
    "package_world_model",
    "round_folder",
]
