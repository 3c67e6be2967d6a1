"""Final drizzle products with AstroDrizzle, run in a child process inside a candidate's folder."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from astropy.io import fits

from autodriz.childproc import FILE_MARK, ChildError, ChildResult, reference_env, run_child
from autodriz.errors import DrizzleError
from autodriz.reffiles import names_a_file, resolve_reference

logger = logging.getLogger(__name__)

#: Parameters we always set, whatever the MDRIZTAB or config says: reset and flag cosmic rays
#: with DQ bit 4096 (as the pipeline does), one self-contained product file, no backups of the
#: (already copied) inputs, intermediate files removed.
FORCED_PARAMETERS: Mapping[str, Any] = MappingProxyType({
    "build": True,
    "preserve": False,
    "clean": True,
    "in_memory": False,
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
    #: The result of the job run after AstroDrizzle in the same child (``then``), or its error.
    then_result: Mapping[str, Any] | None = None
    then_error: str | None = None
    #: The child's log (AstroDrizzle's output and the follow-up job's).
    log: Path | None = None


def choose_parameters(
    first_exposure: Path,
    folders: Mapping[str, Path | None],
    defaults: Mapping[str, Any],
) -> tuple[dict[str, Any], str]:
    """Pick AstroDrizzle parameters: the MDRIZTAB named in the header if found, else ``defaults``.

    Returns the parameters and a sentence saying where they came from.
    """
    # fits.getval has no default: a header without the keyword raises KeyError.
    value = fits.getheader(first_exposure, 0).get("MDRIZTAB")
    path = resolve_reference(value, folders)
    if names_a_file(path):
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
    then: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> DrizzleRun:
    """Drizzle ``inputs`` (files inside ``workdir``) into ``workdir/<output_root>_drz|drc.fits``.

    ``then``: a child job to run in the same child process once AstroDrizzle has succeeded (its
    outcome is in the returned run's ``then_result``/``then_error``; it does not count in
    ``seconds``).

    ``overrides`` are AstroDrizzle parameters that win over the MDRIZTAB and the defaults (but
    not over :data:`FORCED_PARAMETERS`), e.g. the ``final_*`` output grid that
    :mod:`autodriz.visit` shares between the filters of a visit; AstroDrizzle re-applies
    parameters given by the caller after reading the MDRIZTAB.

    Raises
    ------
    DrizzleError
        AstroDrizzle failed, timed out, or wrote no product.
    """
    params, source = choose_parameters(inputs[0], folders, defaults)
    if overrides:
        clash = sorted(set(overrides) & set(FORCED_PARAMETERS))
        if clash:
            raise ValueError(f"AstroDrizzle parameters {clash} cannot be overridden")
        params.update(overrides)
        source += f"; overridden by the caller: {', '.join(sorted(overrides))}"
    params["num_cores"] = num_cores
    kind = "drc" if inputs[0].name.endswith("_flc.fits") else "drz"
    logger.info(
        "AstroDrizzle: %d exposures → %s_%s.fits; parameters from %s",
        len(inputs), output_root, kind, source,
    )
    job: dict[str, Any] = {
        "task": "astrodrizzle",
        "input": [p.name for p in inputs],
        "output": output_root,
        "params": params,
        # Not the child's own stdout log (astrodrizzle_<kind>.log): two writers would clobber it.
        "runfile": f"astrodrizzle_{kind}_runfile.log",
    }
    if then is not None:
        job["then"] = dict(then)
    try:
        result = run_child(
            job,
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
    then_seconds = float(result.result.get("then_seconds", 0.0))
    seconds = result.seconds - then_seconds
    logger.info("AstroDrizzle made %s in %.1f s", product.name, seconds)
    return DrizzleRun(
        product, tuple(inputs), source, seconds,
        then_result=result.result.get("then"), then_error=_then_error(result), log=result.log_path,
    )


def _then_error(result: ChildResult) -> str | None:
    """The follow-up job's error, naming the file it was working on (its last FILE_MARK line)."""
    error = result.result.get("then_error")
    if not error:
        return None
    lines = result.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    marks = [ln[len(FILE_MARK):].strip() for ln in lines if ln.startswith(FILE_MARK)]
    return f"{Path(marks[-1]).name}: {error}" if marks else error


def _link_or_copy(src: Path, dest: Path) -> Path:
    """Hard-link ``src`` to ``dest`` (same data, no copy), or copy when links are impossible."""
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return dest


def _after_final_drizzle(
    followup: Mapping[str, Any] | None, group: Sequence[Path], inputs: Sequence[Path]
) -> dict[str, Any] | None:
    """The follow-up job, told which files AstroDrizzle drizzled and with which CR bit.

    AstroDrizzle writes its cosmic-ray flags into the DQ of the files it drizzles; a group
    drizzled in a subfolder works on links of the working copies that AstroDrizzle may have
    rewritten (and so unlinked), so the follow-up must read the files AstroDrizzle was given.
    """
    if followup is None:
        return None
    return {
        **followup,
        "final_drizzle": {
            "crbit": FORCED_PARAMETERS["crbit"],
            "inputs": {str(copy): str(used) for copy, used in zip(group, inputs, strict=True)},
        },
    }


def run_final_drizzles(
    groups: Sequence[Sequence[Path]],
    output_root: str,
    workdir: Path,
    folders: Mapping[str, Path | None],
    defaults: Mapping[str, Any],
    *,
    num_cores: int = 1,
    timeout: float = 3600.0,
    then: Sequence[Mapping[str, Any] | None] = (),
    overrides: Mapping[str, Any] | None = None,
) -> list[DrizzleRun]:
    """The final products: one AstroDrizzle run per group (FLTs → DRZ, FLCs → DRC).

    ``then[k]``, if given, is a child job run after group k's AstroDrizzle in the same child
    (it receives ``final_drizzle``: the CR bit and the files AstroDrizzle drizzled, see
    :func:`autodriz._child._apply_headerlets`), and ``overrides`` are AstroDrizzle parameters for every run (see :func:`run_astrodrizzle`).

    With ``num_cores`` ≥ 2 and two groups, the runs go side by side, each in its own child
    process with ``num_cores // 2`` AstroDrizzle cores: DRZ and DRC share nothing but the WCS.
    Every group after the first runs in a subfolder of ``workdir`` on hard links of its
    inputs, so that intermediate files of the same output root (median, masks, logs) can never
    collide.

    Raises
    ------
    DrizzleError
        A run failed; the other runs were waited for (no orphan children), their products stay
        in ``workdir`` (not published).
    """
    followups = list(then) + [None] * (len(groups) - len(then))
    jobs: list[tuple[list[Path], Path, Mapping[str, Any] | None]] = []
    for group, followup in zip(groups, followups, strict=True):
        if not group:
            continue
        if not jobs:
            inputs = list(group)
            cwd = workdir
        else:
            cwd = workdir / f"drizzle{len(jobs) + 1}"
            cwd.mkdir(exist_ok=True)
            inputs = [_link_or_copy(p, cwd / p.name) for p in group]
        jobs.append((inputs, cwd, _after_final_drizzle(followup, group, inputs)))
    side_by_side = min(len(jobs), max(1, num_cores))
    cores_each = max(1, num_cores // side_by_side)

    def one(job: tuple[list[Path], Path, Mapping[str, Any] | None]) -> DrizzleRun:
        inputs, cwd, followup = job
        return run_astrodrizzle(
            inputs, output_root, cwd, folders, defaults, num_cores=cores_each, timeout=timeout, then=followup,
            overrides=overrides,
        )

    if side_by_side <= 1:
        return [one(job) for job in jobs]
    logger.info(
        "%d AstroDrizzle runs side by side (num_cores=%d: %d core(s) each)", len(jobs), num_cores, cores_each
    )
    with ThreadPoolExecutor(max_workers=side_by_side, thread_name_prefix="astrodrizzle") as pool:
        futures = [pool.submit(one, job) for job in jobs]
        wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]
    return [f.result() for f in futures]
