"""Reading and writing audio with errors that say which file is wrong and what was expected."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

_AUDIO_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"RIFF", "WAV"),
    (0, b"RIFX", "WAV"),
    (0, b"RF64", "RF64"),
    (0, b"riff", "W64"),
    (0, b"FORM", "AIFF"),
    (0, b"fLaC", "FLAC"),
    (0, b"OggS", "OGG"),
    (0, b".snd", "AU"),
    (0, b"caff", "CAF"),
    (0, b"NIST", "NIST"),
    (0, b"ID3", "MP3"),
)
_UNSUPPORTED_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", "MP4/M4A"),
    (0, b"#!AMR", "AMR"),
    (0, b"\x30\x26\xb2\x75", "WMA/ASF"),
    (0, b"MAC ", "APE"),
    (0, b"wvpk", "WavPack"),
)


class AudioError(ValueError):
    """An audio file that cannot be used; `reason` is the message without the path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _sniff(head: bytes) -> tuple[str, bool] | None:
    """(container name, readable by libsndfile) from the first bytes, or None if unknown."""
    for offset, magic, name in _AUDIO_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name, True
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "MP3", True
    for offset, magic, name in _UNSUPPORTED_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name, False
    return None


def audio_format(head: bytes) -> str | None:
    """The audio container (WAV, FLAC, ...) that leading bytes announce, or None when they announce none."""
    kind = _sniff(head[:64])
    return kind[0] if kind else None


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable / len(head) > 0.95


def _diagnose(path: Path) -> str:
    """Why libsndfile refused `path`, from its existence, size and leading bytes."""
    if not path.exists():
        return "file not found (expected an audio file)"
    if path.is_dir():
        return "is a directory (expected an audio file)"
    if path.stat().st_size == 0:
        return "empty file (0 bytes; expected audio samples)"
    with path.open("rb") as fh:
        head = fh.read(64)
    kind = _sniff(head)
    if kind is None:
        what = "text" if _looks_like_text(head) else "unrecognised binary content"
        return f"not an audio file (content is {what}; expected WAV, FLAC, OGG or another libsndfile format)"
    name, supported = kind
    if not supported:
        return f"unsupported audio format {name} (expected WAV, FLAC, OGG or another libsndfile format)"
    return _corrupt(path, name, head)


_EXTENSION_FORMATS: dict[str, str] = {
    ".wav": "WAV", ".wave": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG", ".opus": "OGG",
    ".mp3": "MP3", ".aif": "AIFF", ".aiff": "AIFF", ".aifc": "AIFF", ".au": "AU", ".snd": "AU",
    ".caf": "CAF", ".w64": "W64", ".rf64": "RF64", ".nist": "NIST", ".sph": "NIST",
}


def _corrupt(path: Path, header: str, head: bytes) -> str:
    """The corrupt-file reason naming the format the extension claims and the one the header shows.

    The MP3 frame sync (11 set bits) is a weak sign that any garbage starting with 0xFF matches, so it
    names MP3 only for a file that the extension does not claim for another format."""
    claimed = _EXTENSION_FORMATS.get(path.suffix.lower())
    weak = header == "MP3" and not head.startswith(b"ID3")
    if claimed is None or claimed == header:
        return f"corrupt or unreadable {header} file (its header could not be parsed)"
    if weak:
        return (f"corrupt or unreadable {claimed} file (named {path.suffix}, but it does not start with a "
                f"{claimed} header: first bytes {head[:8].hex(' ')})")
    return (f"corrupt or unreadable file: named {path.suffix} ({claimed}) but its header is {header}, "
            "and it could not be read as either")


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """(sample_rate, frames, channels) from the header; AudioError if unusable or 0 samples."""
    path = Path(path)
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError):
        raise AudioError(path, _diagnose(path)) from None
    if info.frames <= 0:
        raise AudioError(path, "empty audio (0 samples; expected at least one)")
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(path, f"invalid header (sample rate {info.samplerate}, channels {info.channels})")
    return int(info.samplerate), int(info.frames), int(info.channels)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Float32 mono samples at `sample_rate` (downmixed, resampled when the file differs)."""
    path = Path(path)
    try:
        y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError):
        raise AudioError(path, _diagnose(path)) from None
    return _mono(path, y, sr, sample_rate)


def _mono(name: str | Path, y: np.ndarray, sr: int, sample_rate: int) -> np.ndarray:
    """[frames, channels] samples at `sr` → float32 mono at `sample_rate`; AudioError when there are none."""
    if y.shape[0] == 0:
        raise AudioError(name, "empty audio (0 samples; expected at least one)")
    mono = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]
    if sr != sample_rate:
        import librosa

        mono = librosa.resample(mono, orig_sr=sr, target_sr=sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


AUDIO_BYTES = "the bytes of a WAV, FLAC, OGG or another libsndfile audio file"


def _diagnose_bytes(data: bytes) -> str:
    """Why libsndfile refused in-memory audio, from its size and leading bytes."""
    if not data:
        return f"empty (0 bytes; expected {AUDIO_BYTES})"
    kind = _sniff(data[:64])
    if kind is None:
        what = "text" if _looks_like_text(data[:64]) else "unrecognised binary content"
        return f"not audio (content is {what}; expected {AUDIO_BYTES})"
    name, supported = kind
    if not supported:
        return f"unsupported audio format {name} (expected {AUDIO_BYTES})"
    return f"corrupt or unreadable {name} data (its header could not be parsed; expected {AUDIO_BYTES})"



def load_audio_bytes(data: bytes, sample_rate: int, name: str) -> np.ndarray:
    """`load_audio` of the bytes of an audio file (a request to a served model); errors name `name`."""
    try:
        y, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, TypeError):
        raise AudioError(name, _diagnose_bytes(data)) from None
    return _mono(name, y, sr, sample_rate)


def write_wav(path: str | Path, y: np.ndarray, sample_rate: int) -> None:
    """Write mono or [frames, channels] samples in [-1, 1] as 16-bit PCM WAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(y, dtype=np.float32), sample_rate, subtype="PCM_16", format="WAV")
