"""Final drizzle products with AstroDrizzle, run in a child process inside a candidate's folder."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from astropy.io import fits

from autodriz.childproc import ChildError, reference_env, run_child
from autodriz.errors import DrizzleError
from autodriz.reffiles import resolve_reference

logger = logging.getLogger(__name__)

#: Parameters we always set, whatever the MDRIZTAB or config says: reset and flag cosmic rays
#: with DQ bit 4096 (as the pipeline does), one self-contained product file, no backups of the
#: (already copied) inputs, intermediate files removed.
FORCED_PARAMETERS: Mapping[str, Any] = MappingProxyType({
    "build": True,
    "preserve": False,
    "clean": True,
    "in_memory": True,
    "resetbits": 4096,
    "crbit": 4096,
    "context": True,
})


@dataclass(frozen=True)
class DrizzleRun:
    """One AstroDrizzle run and what it made."""

    product: Path
    inputs: tuple[Path, ...]
    parameter_source: str
    seconds: float


def choose_parameters(
    first_exposure: Path,
    folders: Mapping[str, Path | None],
    defaults: Mapping[str, Any],
) -> tuple[dict[str, Any], str]:
    """Pick AstroDrizzle parameters: the MDRIZTAB named in the header if found, else ``defaults``.

    Returns the parameters and a sentence saying where they came from.
    """
    value = fits.getval(first_exposure, "MDRIZTAB", 0, default=None)
    path = resolve_reference(value, folders)
    if path is not None and path.is_file():
        params = {"mdriztab": True, **FORCED_PARAMETERS}
        return params, f"MDRIZTAB {value} ({path})"
    why = "not set" if value is None else f"{value} not found"
    logger.warning(
        "MDRIZTAB %s: using autodriz's built-in AstroDrizzle defaults (config/astrodrizzle.toml), "
        "which mirror the instrument's MDRIZTAB", why
    )
    params = {**dict(defaults), **FORCED_PARAMETERS, "mdriztab": False}
    return params, f"config/astrodrizzle.toml defaults (MDRIZTAB {why})"


def run_astrodrizzle(
    inputs: list[Path],
    output_root: str,
    workdir: Path,
    folders: Mapping[str, Path | None],
    defaults: Mapping[str, Any],
    *,
    num_cores: int = 1,
    timeout: float = 3600.0,
) -> DrizzleRun:
    """Drizzle ``inputs`` (files inside ``workdir``) into ``workdir/<output_root>_drz|drc.fits``.

    Raises
    ------
    DrizzleError
        AstroDrizzle failed, timed out, or wrote no product.
    """
    params, source = choose_parameters(inputs[0], folders, defaults)
    params["num_cores"] = num_cores
    kind = "drc" if inputs[0].name.endswith("_flc.fits") else "drz"
    logger.info(
        "AstroDrizzle: %d exposures → %s_%s.fits; parameters from %s",
        len(inputs), output_root, kind, source,
    )
    try:
        result = run_child(
            {
                "task": "astrodrizzle",
                "input": [p.name for p in inputs],
                "output": output_root,
                "params": params,
                "runfile": f"astrodrizzle_{kind}.log",
            },
            cwd=workdir,
            env=reference_env(folders),
            timeout=timeout,
            label=f"astrodrizzle_{kind}",
        )
    except ChildError as exc:
        # AstroDrizzle does not say which input broke it: name all of this run's inputs.
        raise DrizzleError(
            f"AstroDrizzle failed for {output_root}_{kind} from {', '.join(p.name for p in inputs)}: {exc.error_line}",
            child_log=exc.log_path,
        ) from exc
    product = workdir / f"{output_root}_{kind}.fits"
    if not product.is_file():
        raise DrizzleError(
            f"AstroDrizzle finished but wrote no {product.name} (it made: {result.result.get('products')})"
        )
    logger.info("AstroDrizzle made %s in %.1f s", product.name, result.seconds)
    return DrizzleRun(product, tuple(inputs), source, result.seconds)
