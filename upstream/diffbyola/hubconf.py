"""s3prl hub entries for DiffBYOL-A.

s3prl calls entries by keyword: ``S3PRLUpstream(name, path_or_url)`` passes ``ckpt=`` and
``refresh=``, the downstream runner ``ckpt=``, ``model_config=`` and ``refresh=``. So every
argument here has a name and a default, and nothing is passed on positionally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hear_diffbyola.weights import WeightsError as _WeightsError

from .expert import UpstreamExpert as _UpstreamExpert

__all__ = ["diffbyola", "diffbyola_local"]


def diffbyola(
    ckpt: str | Path | None = None, model_config: str | Path | dict | None = None, refresh: bool = False, **kwargs: Any
) -> _UpstreamExpert:
    """The shipped DiffBYOL-A weights (lambda = 0.5), or the weights file ``ckpt`` when one is given.

    ``refresh`` is accepted for s3prl's interface and ignored: nothing is downloaded.
    """
    return _UpstreamExpert(ckpt=ckpt, model_config=model_config, **kwargs)


def diffbyola_local(
    ckpt: str | Path | None = None, model_config: str | Path | dict | None = None, refresh: bool = False, **kwargs: Any
) -> _UpstreamExpert:
    """A local weights file: our ``.safetensors`` export or an official BYOL-A ``AudioNTT2020-*.pth``."""
    if not ckpt:
        raise _WeightsError(
            "diffbyola_local needs a weights file: pass ckpt=PATH (s3prl runner: -k PATH; "
            "S3PRLUpstream('diffbyola_local', path_or_url=PATH)); for the shipped weights use 'diffbyola'"
        )
    return _UpstreamExpert(ckpt=ckpt, model_config=model_config, **kwargs)
