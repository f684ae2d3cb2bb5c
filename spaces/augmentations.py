"""Search spaces of the augmentations; `aug.<name>` switches one on, its fields follow."""

from __future__ import annotations

from harmonia.spaces.core import FRACTION, PART, POSITIVE, PROBABILITY, SIZE, Space, SpaceError, SpacePart

AUGMENTATION_SPACES: dict[str, SpacePart] = {}

SEQUENCE_BREAKING = frozenset({"mixup", "mixup_lp", "extrapolation", "samplepairing", "tid"})
"""Augmentations that put a second clip's events into a clip (or cut one out) while its labels stay
the first clip's: harmless noise for tags, a wrong target for CTC on the ordered tags (task sequence)."""


def augmentations_for(task: str | None) -> list[str]:
    """The augmentations a task's search may switch on (sequence: none that breaks the event order)."""
    return sorted(n for n in AUGMENTATION_SPACES if not (task == "sequence" and n in SEQUENCE_BREAKING))


def register_augmentation_space(name: str):
    def deco(fn: SpacePart) -> SpacePart:
        AUGMENTATION_SPACES[name] = fn
        return fn

    return deco


@register_augmentation_space("chunkmix")
def chunkmix_space(s: Space) -> None:
    """Chunk mixing (dcase2018_workshop_proceedings.txt L13552–13564, Table 2 L13591–13599): each
    chunk's chance as the paper varies it (40–80 %), up to its 3 + 2 chunks, and the chunk length as a
    fraction of the clip (the paper's chunks span the whole example, 4 s ± 0.4 s: max_span up to 1)."""
    s.float("chunkmix.p", 0.4, 0.8, domain=PROBABILITY)
    s.int("chunkmix.chunks", 1, 5, domain=SIZE)
    s.float("chunkmix.min_span", 0.1, 0.5, domain=FRACTION)
    s.float("chunkmix.max_span", 0.5, 1.0, domain=FRACTION)


@register_augmentation_space("mixup")
def mixup_space(s: Space) -> None:
    """α from 0.1 to 2 (sample_mixed_augmentation_crnn.txt §4: best 1.5–2; digest §3: 0.2–1 elsewhere)."""
    s.float("mixup.alpha", 0.1, 2.0, log=True, domain=POSITIVE)


@register_augmentation_space("tid")
def time_interval_dropout_space(s: Space) -> None:
    """Probability around the paper's 30 % and the longest skipped span (proceedings L13679)."""
    s.float("tid.p", 0.1, 0.5, domain=PROBABILITY)
    s.float("tid.max_span", 0.05, 0.3, domain=PART)


@register_augmentation_space("samplepairing")
def samplepairing_space(s: Space) -> None:
    """SamplePairing has no parameter (sample_mixed_augmentation_crnn.txt §3.2)."""


@register_augmentation_space("mixup_lp")
def mixup_lp_space(s: Space) -> None:
    s.float("mixup_lp.alpha", 0.1, 2.0, log=True, domain=POSITIVE)


@register_augmentation_space("extrapolation")
def extrapolation_space(s: Space) -> None:
    s.float("extrapolation.alpha", 0.1, 2.0, log=True, domain=POSITIVE)


@register_augmentation_space("specaugment")
def specaugment_space(s: Space) -> None:
    s.int("specaugment.time_masks", 1, 3, domain=SIZE)
    s.int("specaugment.time_width", 5, 40, domain=SIZE)
    s.int("specaugment.freq_masks", 1, 3, domain=SIZE)
    s.int("specaugment.freq_width", 2, 12, domain=SIZE)


WAVEFORM_COPIES_PARAM = "aug.waveform_copies"


def waveform_copies_space(s: Space, n_copies: int) -> None:
    """`aug.waveform_copies`: train on the precomputed pitch-shift / time-stretch copies
    (`features.augmented_copies`, dcase2018_workshop_proceedings.txt L4558–4561), each clip drawn per
    epoch from {original, its copies}; on or off per trial.

    Offered only when the config precomputes copies (`n_copies` > 0). Without copies the parameter is
    absent (trials train on the originals) and forcing it on is a SpaceError, raised by
    `check_waveform_copies` before any trial starts.
    """
    check_waveform_copies(s.overrides, n_copies)
    if n_copies:
        s.bool(WAVEFORM_COPIES_PARAM)
    else:
        s.seen.append(WAVEFORM_COPIES_PARAM)


def check_waveform_copies(overrides: dict, n_copies: int) -> None:
    ov = overrides.get(WAVEFORM_COPIES_PARAM)
    if n_copies or ov is None:
        return
    values = ov.get("choices", []) if isinstance(ov, dict) else (ov if isinstance(ov, list) else [ov])
    if any(bool(v) for v in values):
        raise SpaceError(f"space.{WAVEFORM_COPIES_PARAM}: {ov!r} asks for the precomputed waveform copies, but "
                         "features.augmented_copies is empty; list pitch_shift_semitones or time_stretch_rates "
                         "there (computed once into the feature cache), or leave the parameter out")
