"""Checks a job makes before it starts Ray (or anything else slow), so that a typo costs a second, not
a cluster start-up: every input the command line names exists. Values are checked by the typed
configs themselves (`TrainConfig`, `ImageConfig`, `SplitConfig`, ...) when the job builds them, which
it also does before Ray starts."""
from __future__ import annotations

from thorax_ray import storage


def require_inputs(inputs: dict[str, str | None], *, endpoint_url: str | None = None) -> None:
    """Raises FileNotFoundError `FLAG URI: not found` for the first of `inputs` (`flag -> path or URI`;
    None: not given) that does not exist. A flag ending in `=` is written without a space
    (`--scores cnn=` -> `--scores cnn=out/x: not found`)."""
    for flag, uri in inputs.items():
        if uri is None:
            continue
        fs, path = storage.filesystem(uri, endpoint_url=endpoint_url)
        if not fs.exists(path):
            raise FileNotFoundError(f"{flag}{'' if flag.endswith('=') else ' '}{uri}: not found")
