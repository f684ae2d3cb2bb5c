"""Trial run names that read at a glance in the MLflow runs table."""

from __future__ import annotations

from typing import Any


def trial_run_name(params: dict[str, Any], number: int | str) -> str:
    """`ARCH-POOLING AUG+AUG #N` (e.g. `crnn-attention mixup+tid #7`): architecture, pooling, the
    augmentations switched on (or `no-aug`), the trial number (the trial id until the driver numbers it)."""
    arch = str(params.get("arch", "model"))
    pooling = next((str(v) for k, v in sorted(params.items())
                    if k.startswith(f"{arch}.") and k.endswith("pooling")), None)
    augs = sorted(k[4:] for k, v in params.items() if k.startswith("aug.") and k.count(".") == 1 and v is True)
    head = f"{arch}-{pooling}" if pooling else arch
    return f"{head} {'+'.join(augs) or 'no-aug'} #{number}"
