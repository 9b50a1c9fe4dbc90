"""Cached feature extraction for a dataset split.

Raw features (openSMILE functionals before scaling/selection, text vectors, and
frame/token sequences for MCFN) are cached on disk, one store per extractor
setting and dataset split. Every utterance is keyed by a hash of its audio
file's bytes plus its segment times (audio) or of its text (text), so a second
run reads everything back, and a changed file or setting re-extracts only what
changed. The scaler and SVM selection are *not* cached: they are fitted per
training run, on the training split only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.pipeline import TextPipeline
from streamer.asr import DECODE_PROMPT
from training.data.records import DatasetSplit, Utterance

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(".cache/features")
#: New transcripts between two writes of their cache (a cold ``mixed`` extraction transcribes ~10k lines).
TRANSCRIPTS_SAVE_EVERY = 200


@dataclass(frozen=True)
class ExtractConfig:
    cache_dir: Path = DEFAULT_CACHE
    text_encoder: str | None = None  # None: the bundled MiniLM
    feature_set: str = "ComParE_2016"
    audio: bool = True
    frames: bool = False
    tokens: bool = False
    workers: int = 1
    asr_model: str | None = None  # fills missing transcripts; None: bundled tiny.en
    progress: bool = True
    #: Train as you serve: features of the segmenter's cut of each clip (streamer.live_cut.live_cut),
    #: not of the whole clip with its silences.
    live_cut: bool = True
    #: Pooled Whisper encoder states (mean + std over the speech frames), under this encode policy.
    whisper: bool = False
    whisper_encoder: str = "tiny.en"
    whisper_min_window_s: float = 15.0
    whisper_pad_s: float = 1.0
    #: A fine-tuned text encoder (``python -m training text-tune``'s adapter file): its vectors,
    #: with the dialogue context it reads, replace the frozen encoder's.
    text_adapter: Path | None = None
    #: On the training split, take each line's vector from the fold adapter that never saw it.
    text_out_of_fold: bool = True
    #: A checkpoint's text pipeline (evaluation): its encoder, adapter and context, as live.
    text_pipeline: TextPipeline | None = None
    #: The frozen encoder reads each line with this many past turns (``utterance_last4`` pooling).
    text_context_turns: int = 0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")


@dataclass
class SplitFeatures:
    """Raw per-utterance features of a split, in ``split.utterances()`` order."""

    keys: list[str]
    audio: np.ndarray | None  # (n, 6373) raw functionals; rows of NaN where audio is missing
    audio_ok: np.ndarray  # (n,) bool
    text: np.ndarray  # (n, Dt)
    texts: list[str]
    frames: list[np.ndarray] | None = None
    tokens: list[np.ndarray] | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    whisper: np.ndarray | None = None  # (n, 2 D) pooled encoder states; rows of NaN where audio is missing


class FeatureStore:
    """One ``.npz`` per (extractor setting, dataset, split): key -> array, no pickles."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                keys = z["keys"]
                if "offsets" in z:  # ragged arrays stored concatenated
                    flat, off = z["values"], z["offsets"]
                    self.data = {str(k): flat[off[i] : off[i + 1]] for i, k in enumerate(keys)}
                else:
                    self.data = {str(k): v for k, v in zip(keys, z["values"])}
        self.dirty = False

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __getitem__(self, key: str) -> np.ndarray:
        return self.data[key]

    def put(self, key: str, value: np.ndarray) -> None:
        self.data[key] = np.asarray(value, np.float32)
        self.dirty = True

    def save(self, ragged: bool = False) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self.data), dtype=str)
        values = list(self.data.values())
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp.npz")  # ranks may share a cache
        if ragged:
            off = np.cumsum([0] + [len(v) for v in values])
            flat = np.concatenate(values) if values else np.zeros((0, 1), np.float32)
            np.savez(tmp, keys=keys, values=flat, offsets=off)
        else:
            np.savez(tmp, keys=keys, values=np.stack(values) if values else np.zeros((0, 1), np.float32))
        os.replace(tmp, self.path)
        self.dirty = False


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha1 of a file's bytes, memoised by (path, size, mtime) for this process."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha1()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def audio_key(u: Utterance) -> str:
    key = f"{file_digest(u.audio_path)}:{u.start_s}:{u.end_s}"
    return f"{key}:{u.augment}" if u.augment else key


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _setting_id(**settings) -> str:
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def load_utterance_audio(
    path, start_s: float | None, end_s: float | None, live_cut: bool, augment: str | None = None
) -> np.ndarray:
    """A training utterance's audio as the live tracker would analyse it (see ExtractConfig.live_cut);
    an augmented copy is made a new voice in a new room first, so the segmenter cuts what a room gives."""
    from streamer.audio import load_audio
    from streamer.live_cut import live_cut as cut

    audio = load_audio(path, start_s=start_s, end_s=end_s)
    if augment:
        from training.augment import parse

        audio = parse(augment)(audio)
    return cut(audio) if live_cut else audio


def _opensmile_job(
    args: tuple[str, float | None, float | None, str, bool, str | None],
) -> tuple[np.ndarray | None, str]:
    """Worker: decode one segment and compute its functionals (module-level so it pickles)."""
    from streamer.features import OpenSmileExtractor

    path, start, end, feature_set, cut, augment = args
    try:
        audio = load_utterance_audio(path, start, end, cut, augment)
        if feature_set not in _EXTRACTORS:  # one extractor per worker process
            _EXTRACTORS[feature_set] = OpenSmileExtractor(feature_set)
        return _EXTRACTORS[feature_set](audio), ""
    except Exception as exc:  # one bad file must not stop the run; it is reported
        return None, " ".join(str(exc).split())[:200]


_EXTRACTORS: dict[str, object] = {}


def extract_split(split: DatasetSplit, cfg: ExtractConfig) -> SplitFeatures:
    """Raw features for every utterance of ``split``, reading and filling the cache."""
    from streamer.text_encoder import normalize_text

    utts = list(split.utterances())
    root = Path(cfg.cache_dir)
    name = f"{split.dataset}-{split.name}"
    failures: list[tuple[str, str]] = []

    asr_id = _setting_id(model=cfg.asr_model, cut=cfg.live_cut, policy=_policy(cfg), decode=DECODE_PROMPT)
    texts = _transcripts(utts, cfg, root / f"asr-{asr_id}" / f"{name}.npz")
    texts = [normalize_text(t) for t in texts]

    # --- openSMILE functionals
    audio_ok = np.array([cfg.audio and u.audio_path is not None for u in utts], dtype=bool)
    audio = None
    if audio_ok.any():
        sid = _setting_id(fs=cfg.feature_set, **({"cut": True} if cfg.live_cut else {}))
        store = FeatureStore(root / f"opensmile-{sid}" / f"{name}.npz")
        keys = [audio_key(u) if ok else "" for u, ok in zip(utts, audio_ok)]
        todo = [i for i, k in enumerate(keys) if k and k not in store]
        # the same clip can serve several utterances (paired data): extract each key once
        first: dict[str, int] = {}
        for i in todo:
            first.setdefault(keys[i], i)
        unique = list(first.values())
        jobs = [
            (str(utts[i].audio_path), utts[i].start_s, utts[i].end_s, cfg.feature_set, cfg.live_cut, utts[i].augment)
            for i in unique
        ]
        bad: dict[str, str] = {}
        for i, (vec, err) in zip(unique, _run_jobs(jobs, cfg, f"openSMILE {name}", store)):
            if vec is None:
                bad[keys[i]] = err
            else:
                store.put(keys[i], vec)
        store.save()
        for i in todo:
            if keys[i] in bad:
                failures.append((utts[i].source or str(utts[i].audio_path), bad[keys[i]]))
                split.report_unreadable(utts[i], bad[keys[i]])
                audio_ok[i] = False
        dim = next((store[k].shape[0] for k in keys if k and k in store), 6373)
        audio = np.full((len(utts), dim), np.nan, np.float32)
        for i, k in enumerate(keys):
            if audio_ok[i] and k in store:
                audio[i] = store[k]
            else:
                audio_ok[i] = False

    whisper = _whisper(utts, audio_ok if audio is not None else None, cfg, root, name, split, failures)

    # --- text vectors (and token states for MCFN)
    encoder = text_encoder(cfg.text_encoder)
    enc_id = _setting_id(enc=encoder.name, pool="mean_last4", max_tokens=encoder.max_tokens)
    tkeys = [text_key(t) for t in texts]
    spec = cfg.text_pipeline
    if spec is None and cfg.text_adapter is None and cfg.text_context_turns:
        from training.text_features import context_pipeline

        spec = context_pipeline(cfg.text_encoder, cfg.text_context_turns)
    if cfg.text_adapter is not None or (spec is not None and spec.pooling != "mean_last4"):
        from training.text_features import split_vectors

        store = FeatureStore(root / "text-tuned" / f"{name}.npz")
        source = cfg.text_adapter if cfg.text_adapter is not None else spec
        text = split_vectors(split, texts, source, cfg.text_out_of_fold, store)
    else:
        tstore = FeatureStore(root / f"text-{enc_id}" / f"{name}.npz")
        # by length: a batch costs its longest line, so similar lengths waste no padding
        missing = sorted({(k, t) for k, t in zip(tkeys, texts) if k not in tstore}, key=lambda kt: (len(kt[1]), kt[0]))
        for lo in tqdm(range(0, len(missing), 64), desc=f"text {name}", disable=not cfg.progress or not missing):
            chunk = missing[lo : lo + 64]
            for (k, _), vec in zip(chunk, encoder.encode([t for _, t in chunk])):
                tstore.put(k, vec)
        tstore.save()
        text = np.stack([tstore[k] for k in tkeys]) if utts else np.zeros((0, encoder.dim), np.float32)

    tokens = None
    if cfg.tokens:
        kstore = FeatureStore(root / f"tokens-{enc_id}" / f"{name}.npz")
        missing = sorted({(k, t) for k, t in zip(tkeys, texts) if k not in kstore})
        for lo in range(0, len(missing), 64):
            chunk = missing[lo : lo + 64]
            for (k, _), states in zip(chunk, encoder.encode_tokens([t for _, t in chunk])):
                kstore.put(k, states if len(states) else np.zeros((1, encoder.dim), np.float32))
        kstore.save(ragged=True)
        tokens = [kstore[k] for k in tkeys]

    frames = None
    if cfg.frames:
        frames = _frames(utts, audio_ok, root / "logmel-default" / f"{name}.npz")
    if whisper is not None:
        audio_ok = audio_ok & np.isfinite(whisper).all(axis=1) if audio is not None else np.isfinite(whisper).all(1)
    return SplitFeatures([u.key for u in utts], audio, audio_ok, text, texts, frames, tokens, failures, whisper)


def _policy(cfg: ExtractConfig):
    from streamer.asr import EncodePolicy

    return EncodePolicy(cfg.whisper_min_window_s, cfg.whisper_pad_s)


@functools.lru_cache(maxsize=2)
def whisper_model(name: str, min_window_s: float, pad_s: float):
    """One loaded Whisper per (model, policy) for the whole run; on the CPU like the live default."""
    from streamer.asr import EncodePolicy, Transcriber

    return Transcriber(name, policy=EncodePolicy(min_window_s, pad_s))


def _whisper(utts, ok, cfg: ExtractConfig, root: Path, name: str, split, failures) -> np.ndarray | None:
    """Pooled Whisper encoder states of every utterance with audio (cached by audio content)."""
    if not cfg.whisper:
        return None
    policy = _policy(cfg)
    sid = _setting_id(enc=cfg.whisper_encoder, policy=policy, cut=cfg.live_cut, pool="mean_std")
    store = FeatureStore(root / f"whisper-{sid}" / f"{name}.npz")
    has = [u.audio_path is not None and (ok is None or ok[i]) for i, u in enumerate(utts)]
    keys = [audio_key(u) if h else "" for u, h in zip(utts, has)]
    todo = list(dict.fromkeys(k for k in keys if k and k not in store))
    if todo:  # the same clip serves several datasets (paired, mixed, voice-chains): reuse their vectors
        for other in sorted(store.path.parent.glob("*.npz")):
            if other != store.path and ".tmp." not in other.name and todo:
                known = FeatureStore(other)
                for k in [k for k in todo if k in known]:
                    store.put(k, known[k])
                todo = [k for k in todo if k not in store]
    first = {k: i for i, k in reversed(list(enumerate(keys))) if k}
    model = whisper_model(cfg.whisper_encoder, policy.min_window_s, policy.pad_s) if todo else None
    for n, k in enumerate(tqdm(todo, desc=f"whisper {name}", disable=not cfg.progress or not todo), 1):
        u = utts[first[k]]
        try:
            audio = load_utterance_audio(u.audio_path, u.start_s, u.end_s, cfg.live_cut, u.augment)
            store.put(k, model.encode(audio).pooled())
        except Exception as exc:  # one bad file must not stop the run; it is reported
            err = " ".join(str(exc).split())[:200]
            failures.append((u.source or str(u.audio_path), err))
            split.report_unreadable(u, err)
        if n % 200 == 0:
            store.save()
    store.save()
    dim = next((store[k].shape[0] for k in keys if k and k in store), 768)
    out = np.full((len(utts), dim), np.nan, np.float32)
    for i, k in enumerate(keys):
        if k and k in store:
            out[i] = store[k]
    return out


@functools.lru_cache(maxsize=2)
def text_encoder(name: str | None):
    """One loaded encoder per name for the whole run (loading MiniLM takes seconds)."""
    from streamer.text_encoder import TextEncoder

    return TextEncoder(name)


def _run_jobs(jobs: list, cfg: ExtractConfig, desc: str, store: FeatureStore, save_every: int = 200):
    """Yield (vector, error) per job in order; the store is saved every ``save_every`` jobs,
    so an interrupted extraction keeps what it had done."""
    bar = tqdm(total=len(jobs), desc=desc, disable=not cfg.progress or not jobs)
    pool = ProcessPoolExecutor(cfg.workers) if cfg.workers > 1 and len(jobs) > 1 else None
    try:
        results = pool.map(_opensmile_job, jobs, chunksize=4) if pool else map(_opensmile_job, jobs)
        for n, result in enumerate(results, 1):
            bar.update()
            yield result
            if n % save_every == 0:
                store.save()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _frames(utts: list[Utterance], ok: np.ndarray, path: Path) -> list[np.ndarray]:
    from streamer.frames import LogMelExtractor

    ext = LogMelExtractor()
    store = FeatureStore(path)
    out = []
    for u, good in zip(utts, ok):
        if not good:
            out.append(np.zeros((1, ext.dim), np.float32))
            continue
        k = audio_key(u)
        if k not in store:
            store.put(k, ext(load_utterance_audio(u.audio_path, u.start_s, u.end_s, False, u.augment)))
        out.append(store[k])
    store.save(ragged=True)
    return out


def _transcripts(utts: list[Utterance], cfg: ExtractConfig, path: Path) -> list[str]:
    """The given text, or Whisper's transcript (cached by audio content) where there is none."""
    need = [i for i, u in enumerate(utts) if u.text is None]
    texts = [u.text or "" for u in utts]
    if not need:
        return texts
    store_path = path.with_suffix(".json")
    cache: dict[str, str] = json.loads(store_path.read_text()) if store_path.is_file() else {}

    def save() -> None:
        store_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = store_path.with_name(f"{store_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, store_path)

    transcriber, new = None, 0
    for i in tqdm(need, desc="whisper", disable=not cfg.progress):
        u = utts[i]
        k = audio_key(u)
        if k not in cache:
            policy = _policy(cfg)
            transcriber = transcriber or whisper_model(cfg.asr_model or "tiny.en", policy.min_window_s, policy.pad_s)
            audio = load_utterance_audio(u.audio_path, u.start_s, u.end_s, cfg.live_cut, u.augment)
            cache[k] = transcriber.transcribe(audio)
            new += 1
            if new % TRANSCRIPTS_SAVE_EVERY == 0:  # hours of transcription survive an interruption
                save()
        texts[i] = cache[k]
    save()
    return texts
