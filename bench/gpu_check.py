"""The CUDA path, checked against the CPU on the same inputs, and GPU timings.

The GPU machines this project is sometimes lent have no network and take at most 64 MiB
of files per call: the pip-installed encoders (mpnet 440 MB, tiny.en 75 MB) cannot travel.
So the check runs in two steps:

  python bench/gpu_check.py capture --out .gpucheck   # here: the bundle's real inputs
  python bench/gpu_check.py run --inputs .gpucheck --out DIR   # on the GPU machine

``capture`` replays the demo recordings through the bundled tracker on the CPU and keeps,
for every utterance, the feature dict the fusion model received and the answer it gave;
it also copies the text encoder's configuration and tokenizer (no weights).

``run`` answers, on the machine it runs on:

- ``fusion``: the bundled checkpoint on CUDA and on the CPU over those real inputs
  (largest probability difference, labels that differ, time per utterance);
- ``training``: each of HBAF, BCAF, MCFN and GCA trained for a few epochs on CUDA
  through :func:`training.trainer.train`, saved, and loaded back on the CPU with the
  same answers;
- ``text``: the text encoder's architecture with random weights (the vectors differ from
  the real encoder's, the arithmetic and its time do not) on CUDA and CPU, one line with
  two turns of context as the live tracker reads it, plus a LoRA fine-tuning step;
- ``text_tune``: two epochs of ``python -m training text-tune``'s loop on that encoder, on the GPU;
- ``asr``: :class:`streamer.asr.Transcriber` with ``device="auto"`` on a Whisper of tiny.en's
  shape with random weights (converted there from ``transformers``), encode and decode.

Everything goes to DIR/gpu_check.json and a markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMOS = ["demo-kitchen.flac", "demo-office.flac", "demo-story.flac"]
TOKENIZER_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]
GPU = "cuda"  # --gpu: "cpu" tries the script out on a machine without one
TINY_EN = dict(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6, decoder_attention_heads=6)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def sync() -> None:
    if GPU != "cpu":
        torch.cuda.synchronize()


def timed(fn, repeats: int, on_gpu: bool) -> list[float]:
    """Milliseconds of each call of ``fn`` (after one warm-up); ``on_gpu``: the GPU synchronised around it."""
    fn()
    out = []
    for _ in range(repeats):
        if on_gpu:
            sync()
        t = time.perf_counter()
        fn()
        if on_gpu:
            sync()
        out.append((time.perf_counter() - t) * 1000)
    return out


# -- capture (here, on the CPU) -------------------------------------------------------------


def capture(out: Path) -> None:
    from models.streaming import StreamingClassifier
    from streamer.api import EmotionTracker
    from streamer.text_encoder import TextEncoder

    out.mkdir(parents=True, exist_ok=True)
    tracker = EmotionTracker(device="cpu")
    recorded: list[dict] = []
    push = StreamingClassifier.push

    def recording_push(self, utterance, per_channel=False):
        probs = push(self, utterance, per_channel)
        recorded.append({"features": dict(utterance), "probs": probs.clone()})
        return probs

    StreamingClassifier.push = recording_push
    dialogues = {}
    try:
        for name in DEMOS:
            recorded.clear()
            events = list(tracker.track(ROOT / "recordings" / name))
            dialogues[name] = {"utterances": list(recorded), "labels": [e.label for e in events if e.label]}
    finally:
        StreamingClassifier.push = push
    torch.save(dialogues, out / "features.pt")
    text = tracker.checkpoint.pipeline.text
    (out / "text").mkdir(exist_ok=True)
    source = Path(TextEncoder._resolve(text.encoder))
    for f in TOKENIZER_FILES:
        if (source / f).is_file():
            shutil.copy(source / f, out / "text" / f)
    from streamer.asr import bundled_whisper_path

    (out / "whisper").mkdir(exist_ok=True)
    for f in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(Path(bundled_whisper_path()) / f, out / "whisper" / f)
    spec = {"context_turns": text.context_turns, "max_tokens": text.max_tokens}
    (out / "text_pipeline.json").write_text(json.dumps(spec))
    n = sum(len(d["utterances"]) for d in dialogues.values())
    print(f"captured {n} utterances of {len(dialogues)} recordings into {out}")


# -- run (on the GPU machine) ---------------------------------------------------------------


def check_fusion(inputs: Path, passes: int) -> dict:
    import models

    dialogues = torch.load(inputs / "features.pt", weights_only=True)
    path = ROOT / "streamer" / "assets" / "default.pt"
    res = {}
    answers = {}
    for device, key in (("cpu", "cpu"), (GPU, "cuda")):
        ck = models.load(path, device=device)
        clf = ck.classifier()  # as the live pipeline builds it
        ms = []
        for rep in range(passes):  # the first pass gives the answers; all but the first pass the times
            probs = []
            for d in dialogues.values():
                clf.reset()
                for u in d["utterances"]:
                    sync()
                    t = time.perf_counter()
                    p = clf.push(dict(u["features"]), per_channel=True)
                    sync()
                    ms.append((time.perf_counter() - t) * 1000)
                    probs.append(p.detach().cpu())
            if rep == 0:
                answers[key] = torch.stack(probs)
                ms.clear()
        res[f"{key}_ms_p50"], res[f"{key}_ms_p95"] = pct(ms, 50), pct(ms, 95)
    captured = torch.stack([u["probs"] for d in dialogues.values() for u in d["utterances"]])
    res["utterances"] = len(captured)
    res["max_abs_diff_cuda_vs_cpu"] = float((answers["cuda"] - answers["cpu"]).abs().max())
    res["labels_differing_cuda_vs_cpu"] = int((answers["cuda"].argmax(1) != answers["cpu"].argmax(1)).sum())
    res["max_abs_diff_cpu_vs_captured"] = float((answers["cpu"] - captured).abs().max())
    res["labels_differing_cuda_vs_captured"] = int((answers["cuda"].argmax(1) != captured.argmax(1)).sum())
    return res


def check_training(epochs: int) -> dict:
    import models
    from models import ContextConfig
    from models.pipeline import FeaturePipeline
    from training.trainer import FeatureDialogue, TrainConfig, predict, train

    rng = np.random.default_rng(0)

    def synthetic(n: int, audio_dim: int = 32, text_dim: int = 24) -> list[FeatureDialogue]:
        out = []
        for d in range(n):
            ys = rng.integers(0, 4, int(rng.integers(3, 9)))
            utts = []
            for i, y in enumerate(ys):
                a, t = rng.normal(size=audio_dim), rng.normal(size=text_dim)
                frames = rng.normal(size=(int(rng.integers(20, 60)), 120))
                tokens = rng.normal(size=(int(rng.integers(5, 20)), 384))
                for x in (a, t, frames.T, tokens.T):
                    x[y] += 2.0
                u = {"audio": a, "text": t, "frames": frames, "tokens": tokens}
                utts.append({k: torch.tensor(v, dtype=torch.float32) for k, v in u.items()} | {"speaker": i % 2})
            out.append(FeatureDialogue(f"d{d}", utts, [int(y) for y in ys]))
        return out

    tr, va = synthetic(200), synthetic(40)
    res = {}
    for name in ("hbaf", "bcaf", "mcfn", "gca"):
        try:
            torch.manual_seed(0)
            dims = {"audio_dim": 32, "text_dim": 24} if name in ("hbaf", "bcaf") else {}
            m = models.build(name, context=ContextConfig("online", 8), num_classes=4, **dims)
            t = time.perf_counter()
            result = train(m, tr, va, TrainConfig(max_epochs=epochs, batch_size=16, patience=epochs, device=GPU))
            seconds = time.perf_counter() - t
            on_gpu = next(m.parameters()).device.type
            logits_gpu, y = predict(m, va, 32, torch.device(GPU))
            path = models.save(Path("/tmp/gpu_check") / f"{name}.pt", m, ["a", "b", "c", "d"], FeaturePipeline())
            ck = models.load(path, device="cpu")
            logits_cpu, _ = predict(ck.model, va, 32, torch.device("cpu"))
            res[name] = {
                "trained_on": on_gpu,
                "epochs": len(result.history),
                "seconds": round(seconds, 2),
                "val_accuracy_cuda": float((logits_gpu.argmax(1) == y).mean()),
                "max_abs_logit_diff_cpu_reload": float(np.abs(logits_gpu - logits_cpu).max()),
                "labels_differing_cpu_reload": int((logits_gpu.argmax(1) != logits_cpu.argmax(1)).sum()),
            }
        except Exception as exc:
            res[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
    return res


def check_text(inputs: Path, repeats: int) -> dict:
    from transformers import AutoConfig, AutoModel

    from streamer.text_adapter import attach_lora, family_of, lora_config
    from streamer.text_encoder import TextEncoder

    spec = json.loads((inputs / "text_pipeline.json").read_text())
    folder = Path("/tmp/gpu_check/text")
    folder.mkdir(parents=True, exist_ok=True)
    for f in (inputs / "text").iterdir():
        shutil.copy(f, folder / f.name)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)
    line = "Oh my god, I cannot believe you actually did that to my sandwich!"
    context = "A: Did anybody see my lunch? B: I think Joey was in the kitchen a minute ago."
    res = {"context_turns": spec["context_turns"]}
    vectors = {}
    for device, key in (("cpu", "cpu"), (GPU, "cuda")):
        enc = TextEncoder(str(folder), spec["max_tokens"], device, pooling="utterance_last", runtime="torch")
        ms = timed(lambda enc=enc: enc.embed([line], [context]), repeats, key == "cuda")
        vectors[key] = torch.as_tensor(enc.embed([line], [context]))
        res[f"{key}_ms_p50"], res[f"{key}_ms_p95"] = pct(ms, 50), pct(ms, 95)
    res["max_abs_diff_cuda_vs_cpu"] = float((vectors["cuda"] - vectors["cpu"]).abs().max())
    res["max_abs_vector"] = float(vectors["cpu"].abs().max())
    # one LoRA fine-tuning step (batch 32, 128 tokens: text-tune's defaults)
    model = AutoModel.from_pretrained(folder)
    cfg = lora_config(family_of(model), list(range(6, model.config.num_hidden_layers)))
    peft_model = attach_lora(model, cfg).to(GPU).train()
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-4)
    ids = torch.randint(5, 30000, (32, 128), device=GPU)

    def step():
        opt.zero_grad()
        out = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        out.float().pow(2).mean().backward()
        opt.step()

    ms = timed(step, max(3, repeats // 10), True)
    res["lora_step_b32_t128_cuda_ms_p50"] = pct(ms, 50)
    return res


def check_text_tune() -> dict:
    """``python -m training text-tune``'s loop on the GPU: two epochs of a tiny LoRA fine-tuning of the
    random-weight encoder made by :func:`check_text` (run that first)."""
    import training.text_tune as tt
    from training.data.records import Dialogue, Utterance

    def dialogue(did, lines):
        return Dialogue(did, tuple(Utterance(did, i, f"s{i % 2}", text=t, label=y) for i, (t, y) in enumerate(lines)))

    lines = [("I love this so much", "joy"), ("leave me alone", "anger"), ("ok then", "neutral")]
    train = [dialogue(f"d{i}", lines) for i in range(16)]
    val = [dialogue("v0", [("this is wonderful", "joy"), ("get out", "anger")])]
    cfg = tt.TuneConfig(
        encoder="/tmp/gpu_check/text", context_turns=1, lora_layers=2, lora_rank=4, epochs=2, batch_size=8,
        noise_p=0.0, max_tokens=32,
    )  # fmt: skip
    t = time.perf_counter()
    model, result = tt.tune(cfg, train, val, None, {}, device=GPU)
    adapter = model.adapter()
    return {
        "trained_on": str(next(model.head.parameters()).device),
        "encoder_on": str(model.encoder.device),
        "seconds": round(time.perf_counter() - t, 2),
        "history": result["history"],
        "adapter_tensors_on_cpu": all(v.device.type == "cpu" for v in adapter.weights.values()),
        "trainable_on_cpu": all(v.device.type == "cpu" for v in tt._trainable(model).values()),
    }


def check_asr(inputs: Path, repeats: int) -> dict:
    import ctranslate2
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from streamer.asr import EncodePolicy, Transcriber

    folder = Path("/tmp/gpu_check/whisper")
    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=51864, num_mel_bins=80, encoder_ffn_dim=1536, decoder_ffn_dim=1536,
        decoder_start_token_id=50257, eos_token_id=50256, pad_token_id=50256, bos_token_id=50256, **TINY_EN,
    )  # fmt: skip
    WhisperForConditionalGeneration(cfg).save_pretrained(folder / "hf")
    ctranslate2.converters.TransformersConverter(str(folder / "hf")).convert(str(folder / "ct2"), force=True)
    for f in (folder / "ct2").iterdir():  # the converter's placeholder vocabulary: tiny.en's own instead
        if f.name != "model.bin":
            f.unlink()
    for f in (inputs / "whisper").iterdir():
        shutil.copy(f, folder / "ct2" / f.name)
    res = {"ctranslate2": ctranslate2.__version__, "cuda_devices_seen": ctranslate2.get_cuda_device_count()}
    audio = (0.1 * np.random.default_rng(0).normal(size=16000 * 4)).astype(np.float32)
    for device in ("auto", "cuda", "cpu"):
        try:
            tr = Transcriber(str(folder / "ct2"), device=device)
            res[f"{device}_resolved"] = f"{tr.device} ({tr.compute_type})"
            enc = tr.encode(audio)
            tr.transcribe(audio, enc)
            for window in (10.0, 30.0):
                policy = EncodePolicy(min_window_s=window)
                ms = timed(lambda tr=tr, policy=policy: tr.encode(audio, policy), repeats, False)
                res[f"{device}_encode_{window:.0f}s_ms_p50"] = pct(ms, 50)
            ms = timed(lambda tr=tr: tr.transcribe(audio), repeats, False)
            res[f"{device}_encode_plus_decode_ms_p50"] = pct(ms, 50)
        except Exception as exc:
            res[f"{device}_error"] = f"{type(exc).__name__}: {exc}"
    # the features the bundle was trained on are CPU int8 encoder states: how far is each GPU type?
    try:
        ref = np.asarray(Transcriber(str(folder / "ct2"), device="cpu", compute_type="int8").encode(audio).states)
        for device, ct in (("cpu", "float32"), (GPU, "float16"), (GPU, "int8_float16"), (GPU, "int8")):
            got = np.asarray(Transcriber(str(folder / "ct2"), device=device, compute_type=ct).encode(audio).states)
            res[f"states_vs_cpu_int8_{device}_{ct}"] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    except Exception as exc:
        res["states_error"] = f"{type(exc).__name__}: {exc}"
    return res


def run(inputs: Path, out: Path, repeats: int, epochs: int, only: list[str]) -> dict:
    logging.basicConfig(level=logging.WARNING)
    report: dict = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
    }
    checks = {"fusion": lambda: check_fusion(inputs, max(2, repeats // 5)), "training": lambda: check_training(epochs),
              "text": lambda: check_text(inputs, repeats), "text_tune": check_text_tune,
              "asr": lambda: check_asr(inputs, repeats)}  # fmt: skip
    for name, fn in checks.items():
        if only and name not in only:
            continue
        t = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as exc:
            report[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        report[name]["check_seconds"] = round(time.perf_counter() - t, 1)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
        print(f"## {name}\n```\n{json.dumps(report[name], indent=1)}\n```", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture", help="record the bundle's real inputs on this machine")
    c.add_argument("--out", type=Path, default=ROOT / ".gpucheck")
    r = sub.add_parser("run", help="compare CUDA with the CPU and time both")
    r.add_argument("--inputs", type=Path, default=ROOT / ".gpucheck")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--repeats", type=int, default=50)
    r.add_argument("--epochs", type=int, default=3)
    r.add_argument("--gpu", default="cuda", help="the device compared with the CPU (cpu: try the script out)")
    r.add_argument("--only", nargs="*", default=[], choices=["fusion", "training", "text", "text_tune", "asr"])
    args = ap.parse_args(argv)
    if args.cmd == "capture":
        capture(args.out)
    else:
        global GPU
        GPU = args.gpu
        run(args.inputs, args.out, args.repeats, args.epochs, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
