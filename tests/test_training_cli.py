"""`python -m training` end to end on real shared data: a tiny run whose checkpoint
the live tracker loads and runs, then evaluate and compare on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import models
from training.cli import main

SHARED = Path(__file__).parent.parent.parent / "shared" / "data"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not available")]

TINY = [
    "--set",
    "d_model=32",
    "--set",
    "lstm_hidden=16",
    "--set",
    "transformer_heads=2",
    "--set",
    "transformer_ff=32",
    "--set",
    "gru_hidden=16",
    "--set",
    "ffn_dim=32",
]


def train_argv(name, runs_dir, cache_dir, *seeds):
    """The tiny paired run every test here trains: 6 dialogues, 2 epochs, HBAF at TINY widths."""
    return ["train", "--model", "hbaf", "--dataset", "paired", "--data-root", str(SHARED), "--option",
            "max_dialogues=6", "--window", "4", "--epochs", "2", "--batch-size", "4", "--audio-features", "24",
            "--audio-dropout", "0.2", "--text-dropout", "0.2", "--seeds", *map(str, seeds), "--name", name,
            "--runs-dir", str(runs_dir), "--cache-dir", str(cache_dir), "--quiet", *TINY]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    code = main(train_argv("tiny", tmp / "runs", tmp / "cache", 0, 1))
    assert code == 0
    # bitwise equality of two trainings needs the same torch thread count (it sets the order of
    # sums); a live tracker built in this process sets torch's to Whisper's (see README)
    (tmp / "torch-threads").write_text(str(torch.get_num_threads()))
    return tmp


def test_run_writes_everything_and_the_live_loader_accepts_it(run_dir):
    from streamer.audio import load_audio
    from streamer.features import FeatureExtractor

    out = run_dir / "runs" / "tiny-s0"
    for name in (
        "model.pt",
        "metrics.json",
        "config.json",
        "history.json",
        "confusion_validation.png",
        "confusion_test.png",
    ):
        assert (out / name).is_file(), name
    assert not (out / "resume.pt").exists()  # the per-epoch training state goes once the run is written
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("validation", "test"):
        m = metrics[split]
        assert 0 <= m["weighted_f1"] <= 1 and m["n"] > 0 and len(m["confusion"]) == 7
    ck = models.load(out / "model.pt")
    assert ck.model.name == "hbaf" and ck.model.context.window == 4
    assert ck.pipeline.audio.dim == 24 and len(ck.pipeline.audio.mean) == 6373
    assert ck.meta["dataset"] == "paired" and ck.meta["git_commit"]
    # the recipe: HBAF's paper settings, with the batch size and epochs this tiny run changed, in meta and metrics
    assert ck.meta["recipe"]["name"] == "paper" and ck.meta["recipe"]["overridden"] == ["batch_size", "max_epochs"]
    train = dict(max_epochs=2, batch_size=4, lr=1e-4, weight_decay=3e-4, patience=15, class_weight_power=0.0)
    assert ck.meta["recipe"]["train"] == train
    assert metrics["recipe"] == ck.meta["recipe"]
    feats, _ = FeatureExtractor(ck.pipeline).utterance(
        load_audio(next((SHARED / "ravdess" / "Actor_01").glob("*.flac"))), "Kids are talking by the door"
    )
    probs = models.StreamingClassifier(ck.model, ck.temperature).push(feats)
    assert probs.shape == (7,) and abs(float(probs.sum()) - 1) < 1e-5


def evaluate(run_dir, out, *extra):
    ck = run_dir / "runs" / "tiny-s0" / "model.pt"
    argv = [
        "evaluate",
        str(ck),
        "--dataset",
        "paired",
        "--data-root",
        str(SHARED),
        "--option",
        "max_dialogues=6",
        "--split",
        "test",
        "--cache-dir",
        str(run_dir / "cache"),
        "--quiet",
        "--output",
        str(out),
        *extra,
    ]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_evaluate_and_compare(run_dir, capsys):
    evaluated = evaluate(run_dir, run_dir / "eval.json")
    recorded = json.loads((run_dir / "runs" / "tiny-s0" / "metrics.json").read_text())["test"]
    assert evaluated["weighted_f1"] == pytest.approx(recorded["weighted_f1"])
    assert "by_part" not in evaluated  # parts are mixed's; paired dialogue ids are not parts
    voice_only = evaluate(run_dir, run_dir / "eval-no-text.json", "--hide", "text")
    # the same utterances, other probabilities (a tiny 2-epoch model may still predict the same classes)
    assert voice_only["n"] == evaluated["n"] and voice_only["ece_uncalibrated"] != evaluated["ece_uncalibrated"]
    # the voice alone is calibrated by its own temperature, as the live events' channels are
    ck = models.load(run_dir / "runs" / "tiny-s0" / "model.pt")
    assert voice_only["temperature"] == pytest.approx(ck.meta["channel_temperatures"]["audio"])
    assert evaluated["temperature"] == pytest.approx(ck.temperature)
    capsys.readouterr()
    assert main(["compare", *map(str, sorted((run_dir / "runs").iterdir()))]) == 0
    table = capsys.readouterr().out
    assert "| tiny | 2 |" in table and "±" in table and "| paper+batch_size,max_epochs |" in table


def test_bad_inputs_give_one_line(tmp_path, capsys):
    assert main(["train", "--dataset", "iemocap", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert main(["train", "--dataset", "manifest", "--data-root", str(tmp_path / "none.csv"), "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["compare", str(tmp_path)]) == 2
    assert "no run" in capsys.readouterr().err


def test_make_recordings_then_e2e(run_dir, tmp_path, capsys):
    assert (
        main(
            [
                "make-recordings",
                "--dataset",
                "voice-chains",
                "--data-root",
                str(SHARED),
                "--split",
                "validation",
                "--limit",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    (rec,) = sorted(tmp_path.glob("*.flac"))
    truth = rec.with_suffix(".jsonl").read_text().splitlines()
    out = tmp_path / "e2e.json"
    assert main(["e2e", str(rec), "--model", str(run_dir / "runs" / "tiny-s0" / "model.pt"), "--output", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["truth"] == len(truth)
    assert result["missed"] + result["split"] <= 1  # clean clips with 1 s gaps segment well
    assert 0 <= result["weighted_f1"] <= 1 and result["wer"] < 0.5
    assert "weighted F1" in capsys.readouterr().out


def test_same_seed_same_model(run_dir, tmp_path):
    argv = train_argv("again", tmp_path, run_dir / "cache", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(int((run_dir / "torch-threads").read_text()))
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    first = models.load(run_dir / "runs" / "tiny-s0" / "model.pt").model.state_dict()
    again = models.load(tmp_path / "again-s0" / "model.pt").model.state_dict()
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    # --resume keeps a run that finished with the same settings instead of training it again
    written = (tmp_path / "again-s0" / "model.pt").stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0
    assert (tmp_path / "again-s0" / "model.pt").stat().st_mtime_ns == written


def test_arbiter_is_fitted_on_validation_and_evaluate_scores_through_it(run_dir, capsys):
    """`python -m training arbiter` writes a checkpoint whose answers the arbiter gives, live and in evaluate."""
    ck = run_dir / "runs" / "tiny-s0" / "model.pt"
    out = run_dir / "arbiter.pt"
    argv = ["arbiter", str(ck), "--dataset", "paired", "--data-root", str(SHARED), "--option", "max_dialogues=6",
            "--cache-dir", str(run_dir / "cache"), "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = capsys.readouterr().out
    assert "validation: weighted F1 fused" in report and "test: weighted F1 fused" in report
    judged = models.load(out)
    assert judged.arbiter is not None and models.load(ck).arbiter is None  # the original is left as it was
    assert set(judged.meta["arbiter_scores"]) == {"validation", "test"}
    metrics = evaluate(run_dir, run_dir / "eval-arbiter.json")  # the original checkpoint: fused only
    assert "fused" not in metrics
    argv = ["evaluate", str(out), "--dataset", "paired", "--data-root", str(SHARED), "--option", "max_dialogues=6",
            "--split", "test", "--cache-dir", str(run_dir / "cache"), "--quiet",
            "--output", str(run_dir / "e.json")]  # fmt: skip
    assert main(argv) == 0
    judged_metrics = json.loads((run_dir / "e.json").read_text())
    assert judged_metrics["n"] == metrics["n"]
    assert judged_metrics["weighted_f1"] == pytest.approx(judged.meta["arbiter_scores"]["test"]["arbiter"], abs=1e-4)
    assert judged_metrics["fused"]["weighted_f1"] == pytest.approx(metrics["weighted_f1"], abs=1e-4)


def test_a_channel_alone_is_scored_with_its_own_temperature():
    from types import SimpleNamespace

    from training.evaluate import answer_temperature
    from training.trainer import FeatureDialogue

    ck = SimpleNamespace(temperature=1.5, meta={"channel_temperatures": {"audio": 1.2, "text": 2.0}})
    both = [FeatureDialogue("d", [{"audio_present": True, "text_present": True}] * 2, [0, 1])]
    words = [FeatureDialogue("d", [{"audio_present": False, "text_present": True}] * 2, [0, 1])]
    voice = [FeatureDialogue("d", [{"audio_present": True, "text_present": False}] * 2, [0, 1])]
    some_voice = [FeatureDialogue("d", [{"audio_present": False, "text_present": True}, both[0].utterances[0]], [0, 1])]
    assert answer_temperature(ck, both) == 1.5 and answer_temperature(ck, some_voice) == 1.5
    assert answer_temperature(ck, words) == 2.0 and answer_temperature(ck, voice) == 1.2
    assert answer_temperature(SimpleNamespace(temperature=1.5, meta={}), words) == 1.5  # older checkpoints


def test_mixed_scores_are_broken_down_by_part_in_prediction_order():
    from training.evaluate import part_of_each_utterance
    from training.trainer import FeatureDialogue

    dialogues = [
        FeatureDialogue("paired-d1", [{}] * 3, [0, -100, 2]),
        FeatureDialogue("aug2-voice-ravdess-7", [{}] * 2, [1, 1]),
        FeatureDialogue("words-d9", [{}], [4]),
    ]
    assert part_of_each_utterance(dialogues).tolist() == ["paired", "paired", "voice", "voice", "words"]


def test_prior_is_fitted_on_validation_and_evaluate_scores_through_it(run_dir, capsys):
    """`python -m training prior` writes a checkpoint that corrects each session's prior, live and in evaluate."""
    ck = run_dir / "runs" / "tiny-s0" / "model.pt"
    out = run_dir / "prior.pt"
    argv = ["prior", str(ck), "--dataset", "paired", "--data-root", str(SHARED), "--option", "max_dialogues=6",
            "--cache-dir", str(run_dir / "cache"), "--quiet", "--out", str(out), "--weights", "1", "3"]  # fmt: skip
    assert main(argv) == 0
    report = capsys.readouterr().out
    assert "validation (pooled chooses): none:" in report and "test: pooled" in report
    fitted = models.load(out)
    assert fitted.prior_shift is not None and models.load(ck).prior_shift is None  # the original is left as it was
    assert fitted.prior_shift.weight in (1.0, 3.0) and sum(fitted.prior_shift.prior) == pytest.approx(1.0)
    best = str(fitted.prior_shift.weight)
    argv = ["evaluate", str(out), "--dataset", "paired", "--data-root", str(SHARED), "--option", "max_dialogues=6",
            "--split", "test", "--cache-dir", str(run_dir / "cache"), "--quiet",
            "--output", str(run_dir / "e-prior.json")]  # fmt: skip
    assert main(argv) == 0
    scored = json.loads((run_dir / "e-prior.json").read_text())
    assert scored["weighted_f1"] == pytest.approx(fitted.meta["prior_shift_fit"]["test"][best]["pooled"], abs=1e-6)
    assert main(["prior", str(ck), "--weights", "0"]) == 2  # one sentence, not a traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weights must be positive" in err[0]
    # one correction after training at a time: an arbiter on top would be scored without the prior
    assert main(["arbiter", str(out), "--dataset", "paired", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has a session prior" in err[0]
