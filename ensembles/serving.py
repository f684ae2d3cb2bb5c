"""The registered pyfunc model's input and signature: audio paths on the serving machine (`path`), or the
audio itself (`audio`: the bytes of a WAV/FLAC file from Python, base64 text over HTTP), one per row;
a bad row is an error that names the row, its column and the expected format."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import pandas as pd

from harmonia.data.audio import AUDIO_BYTES, audio_format

PATH_COLUMN = "path"
AUDIO_COLUMN = "audio"
EXPECTED_INPUT = (f"a `{PATH_COLUMN}` column (audio file paths on the serving machine) or an `{AUDIO_COLUMN}` "
                  f"column ({AUDIO_BYTES}; base64-encoded text in JSON), one audio per row")


class ServingInputError(ValueError):
    """Rows of a pyfunc request that cannot be scored; the message lists each with its reason."""


@dataclass(frozen=True)
class AudioRow:
    """One request row: the name its output row carries (`filename`) and a path or the audio bytes."""

    name: str
    source: str | bytes


def model_signature(classes: list[str]):
    """`path` (string) or `audio` (binary, base64 in JSON) in, each optional; `filename`, one float score
    per class, `event_labels` out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("string", PATH_COLUMN, required=False), ColSpec("binary", AUDIO_COLUMN, required=False)])
    outputs = [ColSpec("string", "filename"), *(ColSpec("float", c) for c in classes),
               ColSpec("string", "event_labels")]
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def _missing(value) -> bool:
    """Whether a cell is empty (None, NaN, pd.NA: the other column of a mixed request)."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def audio_bytes(value) -> bytes:
    """The audio bytes of an `audio` cell: raw bytes as given, or decoded from base64 text (a str, or the
    bytes of one, as MLflow's `inputs` JSON passes them); ValueError for anything else."""
    if isinstance(value, str):
        try:
            return base64.b64decode(re.sub(r"\s+", "", value).encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError(f"text that is not valid base64 (expected {AUDIO_BYTES}, base64-encoded; audio file "
                             f"paths go in the `{PATH_COLUMN}` column)") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:  # audio bytes are never all base64 characters (headers hold NUL bytes)
            decoded = base64.b64decode(re.sub(rb"\s+", b"", raw), validate=True)
        except binascii.Error:
            return raw
        return decoded if audio_format(decoded) else raw  # base64 text of audio, else what was given
    raise ValueError(f"a {type(value).__name__} (expected {AUDIO_BYTES}, or their base64 text)")


def parse_rows(model_input) -> tuple[list[AudioRow | None], dict[int, str]]:
    """Each row of a request as an AudioRow (None where it is bad) and row → reason for the bad ones.

    `model_input`: a DataFrame (or what converts to one: a dict of columns, a list of records), or a plain
    list of paths / bytes."""
    if not isinstance(model_input, pd.DataFrame):
        if isinstance(model_input, (list, tuple)) and not any(isinstance(v, dict) for v in model_input):
            model_input = pd.DataFrame({AUDIO_COLUMN if any(isinstance(v, (bytes, bytearray)) for v in model_input)
                                        else PATH_COLUMN: list(model_input)})
        else:
            model_input = pd.DataFrame(model_input)
    cols = [c for c in (PATH_COLUMN, AUDIO_COLUMN) if c in model_input.columns]
    if not cols:
        raise ServingInputError(f"the input has columns {list(map(str, model_input.columns))}; "
                                f"expected {EXPECTED_INPUT}")
    rows: list[AudioRow | None] = []
    bad: dict[int, str] = {}
    for i in range(len(model_input)):
        given = {c: model_input[c].iloc[i] for c in cols if not _missing(model_input[c].iloc[i])}
        if len(given) != 1:
            both = bool(given)
            bad[i] = (f"{'both' if both else 'neither'} `{PATH_COLUMN}` {'and' if both else 'nor'} `{AUDIO_COLUMN}` "
                      "given (expected one per row)")
            rows.append(None)
        elif PATH_COLUMN in given:
            rows.append(AudioRow(str(given[PATH_COLUMN]), str(given[PATH_COLUMN])))
        else:
            try:
                rows.append(AudioRow(f"{AUDIO_COLUMN}[{i}]", audio_bytes(given[AUDIO_COLUMN])))
            except ValueError as err:
                bad[i] = f"`{AUDIO_COLUMN}`: {err}"
                rows.append(None)
    return rows, bad


def row_error(bad: dict[int, str], n: int) -> ServingInputError:
    """One error for every bad row of an n-row request, each named by its row number (from 0)."""
    listed = "; ".join(f"row {i}: {reason}" for i, reason in sorted(bad.items()))
    return ServingInputError(f"{len(bad)} of {n} input rows cannot be scored: {listed}")


def predict_input(predictor, model_input) -> pd.DataFrame:
    """The bundle's output rows (`filename`, scores, `event_labels`) for every row of a request; a request
    with a bad row raises a ServingInputError listing each bad row (nothing is scored partly)."""
    rows, bad = parse_rows(model_input)
    good = [(i, r) for i, r in enumerate(rows) if r is not None]
    df, unreadable = predictor.predict_sources([r.source for _, r in good], [r.name for _, r in good])
    for k, reason in unreadable.items():
        i, r = good[k]
        bad[i] = f"`{PATH_COLUMN}` {r.source}: {reason}" if isinstance(r.source, str) else f"`{AUDIO_COLUMN}`: {reason}"
    if bad:
        raise row_error(bad, len(rows))
    return df
