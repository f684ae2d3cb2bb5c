"""Search spaces of the architectures, one registered function per architecture name."""

from __future__ import annotations

from harmonia.spaces.core import DROPOUT, POSITIVE, SIZE, Space, SpacePart

ARCHITECTURE_SPACES: dict[str, SpacePart] = {}
ARCHITECTURE_TASKS: dict[str, tuple[str, ...]] = {}
"""The tasks each architecture's space is sampled for; the same as the architecture registry's
(`harmonia.trainables.architectures.ARCHITECTURES[name].tasks`, checked by a test). Spaces do not
import the trainables, so the tasks are declared here too."""

DEFAULT_TASKS: tuple[str, ...] = ("tagging", "sed", "scene")


def register_architecture_space(name: str, tasks: tuple[str, ...] = DEFAULT_TASKS):
    def deco(fn: SpacePart) -> SpacePart:
        ARCHITECTURE_SPACES[name] = fn
        ARCHITECTURE_TASKS[name] = tasks
        return fn

    return deco


def architectures_for(task: str | None) -> list[str]:
    """The architectures a search of `task` samples from (every one when task is None), sorted."""
    return sorted(n for n in ARCHITECTURE_SPACES if task is None or task in ARCHITECTURE_TASKS[n])


@register_architecture_space("crnn")
def crnn_space(s: Space) -> None:
    """CRNN / CRMP / CRAP / attention (crnn_ctc_sequential_labels.txt §1.3): depth, width, GRU, pooling."""
    s.int("crnn.blocks", 2, 4, domain=SIZE)
    s.categorical("crnn.channels", [16, 32], domain=SIZE)
    s.categorical("crnn.gru_size", [32, 64], domain=SIZE)
    s.float("crnn.dropout", 0.0, 0.4, domain=DROPOUT)
    s.categorical("crnn.pooling", ["max", "avg", "attention"])


@register_architecture_space("crnn_ctc", tasks=("sequence",))
def crnn_ctc_space(s: Space) -> None:
    """CRNN-CTC (crnn_ctc_sequential_labels.txt §1.4): the CRNN's conv/BGRU sizes, no clip pooling."""
    s.int("crnn_ctc.blocks", 2, 4, domain=SIZE)
    s.categorical("crnn_ctc.channels", [16, 32], domain=SIZE)
    s.categorical("crnn_ctc.gru_size", [32, 64], domain=SIZE)
    s.float("crnn_ctc.dropout", 0.0, 0.4, domain=DROPOUT)
    s.categorical("crnn_ctc.time_pool", [2, 4], domain=SIZE)


@register_architecture_space("gated_crnn")
def gated_crnn_space(s: Space) -> None:
    """Gated CRNN (gated_crnn_attention_dcase2017.txt §2.3, §3, §4.1: 3 × 64 GLU blocks, BGRU 128)."""
    s.int("gated_crnn.blocks", 2, 4, domain=SIZE)
    s.categorical("gated_crnn.channels", [16, 32, 64], domain=SIZE)
    s.categorical("gated_crnn.gru_size", [32, 64, 128], domain=SIZE)
    s.float("gated_crnn.dropout", 0.0, 0.3, domain=DROPOUT)
    s.categorical("gated_crnn.task_pooling", ["tagging", "sed"])


@register_architecture_space("elu_crnn")
def elu_crnn_space(s: Space) -> None:
    """ELU CRNN (sample_mixed_augmentation_crnn.txt §2: 7 blocks of 8…64 filters, dropout 0.1)."""
    s.categorical("elu_crnn.width", [0.5, 1.0, 2.0], domain=POSITIVE)
    s.float("elu_crnn.dropout", 0.0, 0.3, domain=DROPOUT)
    s.categorical("elu_crnn.gru_size", [32, 64, 128], domain=SIZE)


@register_architecture_space("cnn8")
def cnn8_space(s: Space) -> None:
    """CNN8 cross-task baseline (dcase2018_workshop_proceedings.txt L20203–20292; 64 is the paper's width)."""
    s.categorical("cnn8.channels", [16, 32, 64], domain=SIZE)
    s.categorical("cnn8.pooling", ["max", "avg"])


@register_architecture_space("multi_input_cnn")
def multi_input_cnn_space(s: Space) -> None:
    """MI-CNN + NNF (dcase2018_workshop_proceedings.txt L2691–2781: 2–4 single/double blocks, ± dropout,
    cosine or euclidean neighbours, k = 5 in the paper)."""
    s.categorical("multi_input_cnn.variant", ["single", "double"])
    s.int("multi_input_cnn.blocks", 2, 4, domain=SIZE)
    s.categorical("multi_input_cnn.width", [0.25, 0.5, 1.0], domain=POSITIVE)
    s.float("multi_input_cnn.dropout", 0.0, 0.5, domain=DROPOUT)
    s.int("multi_input_cnn.k", 3, 12, domain=SIZE)
    s.categorical("multi_input_cnn.metric", ["cosine", "euclidean"])
