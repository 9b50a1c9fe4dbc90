"""The fine-tuned text branch: causal dialogue context, the adapter's round trip through a
checkpoint, the refusal of a mismatched base encoder, and live == training text vectors."""

import dataclasses

import numpy as np
import pytest
import torch

import models
from models import FeaturePipeline
from models.pipeline import TextPipeline
from streamer.frames import FeatureError
from streamer.text_adapter import TextAdapter, attach_lora, base_fingerprint, extract_adapter, lora_config
from streamer.text_context import DialogueHistory, Turn, context_input, dialogue_contexts
from streamer.text_encoder import TextEncoder
from tests.conftest import killed_on_call

LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]

TURNS = [
    Turn("Ross", "We were on a break!"),
    Turn("Rachel", "Oh, here we go again."),
    Turn("Ross", "I'm just saying."),
    Turn("Joey", "How you doin'?"),
]


def test_context_is_past_only_newest_first_and_speaker_relative():
    ctx = dialogue_contexts(TURNS, 2)
    assert ctx[0] is None  # nothing before the first line
    assert ctx[1] == "B: We were on a break!"
    # Ross speaks at turn 2: his own past line is A, Rachel's is B; newest first
    assert ctx[2] == "B: Oh, here we go again. | A: We were on a break!"
    assert ctx[3] == "B: I'm just saying. | C: Oh, here we go again."
    # the future never enters: a turn's context is unchanged by what follows it
    for n in range(1, len(TURNS) + 1):
        assert dialogue_contexts(TURNS[:n], 2) == ctx[:n]


def test_unknown_speakers_get_no_tags_and_zero_turns_no_context():
    past = [Turn(None, "hello there"), Turn(None, "")]
    assert context_input(past, None, 3) == "hello there"  # empty lines skipped
    assert context_input(TURNS, "Ross", 0) is None


def test_live_history_equals_batch_contexts():
    h = DialogueHistory(2)
    live = []
    for t in TURNS:
        live.append(h.context(t.speaker))
        h.push(t.speaker, t.text)
    assert live == dialogue_contexts(TURNS, 2)
    assert len(h._past) == 2  # bounded
    h.reset()
    assert h.context("Ross") is None


@pytest.fixture(scope="module")
def trained_adapter():
    """A LoRA delta with non-zero weights over the bundled MiniLM (as text-tune makes them)."""
    enc = TextEncoder(None, 64, "cpu", pooling="utterance_last")
    fp = base_fingerprint(enc.model)
    cfg = lora_config("bert", [4, 5], r=4)
    peft_model = attach_lora(enc.model, cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return extract_adapter(peft_model, cfg, fp)


def test_adapter_changes_the_encoder_and_round_trips_through_a_checkpoint(tmp_path, trained_adapter):
    base = TextEncoder(None, 64, "cpu", pooling="utterance_last")
    tuned = TextEncoder(None, 64, "cpu", pooling="utterance_last", adapter=trained_adapter)
    lines, ctx = ["Fine.", "I can't believe it!"], [None, "B: we lost the house"]
    v_base, v_tuned = base.embed(lines, ctx), tuned.embed(lines, ctx)
    assert not np.allclose(v_base, v_tuned, atol=1e-4)

    spec = tuned.pipeline_for(context_turns=3)
    m = models.build("text", input_dim=spec.dim, hidden=4)
    path = models.save(tmp_path / "m.pt", m, LABELS, FeaturePipeline(text=spec))
    assert path.stat().st_size < 2_000_000  # the delta only, never a copy of the encoder
    loaded = models.load(path).pipeline.text
    assert loaded.context_turns == 3 and loaded.pooling == "utterance_last"
    again = TextEncoder.from_pipeline(loaded, "cpu")
    np.testing.assert_allclose(again.embed(lines, ctx), v_tuned, atol=1e-5)


def test_a_mismatched_base_is_refused_in_one_sentence(trained_adapter):
    wrong = dataclasses.replace(trained_adapter, base_fingerprint="0123456789abcdef")
    with pytest.raises(FeatureError) as e:
        TextEncoder(None, 64, "cpu", pooling="utterance_last", adapter=wrong)
    msg = str(e.value)
    assert "trained on other weights" in msg and "\n" not in msg


def test_a_damaged_adapter_is_refused(trained_adapter):
    spec = TextPipeline(pooling="utterance_last", context_turns=2, adapter={"config": {"r": 4}, "weights": {}})
    with pytest.raises(FeatureError, match="damaged"):
        TextEncoder.from_pipeline(spec, "cpu")
    bad = TextAdapter({**trained_adapter.config, "target_modules": ["no_such_module"]}, trained_adapter.weights,
                      trained_adapter.base_fingerprint)
    with pytest.raises(FeatureError):
        TextEncoder(None, 64, "cpu", pooling="utterance_last", adapter=bad)


def test_context_needs_an_utterance_pooling():
    with pytest.raises(ValueError, match="utterance_"):
        TextPipeline(context_turns=2)


def test_utterance_pooling_averages_the_line_not_its_context():
    enc = TextEncoder(None, 64, "cpu", pooling="utterance_last")
    batch, mask = enc.tokenize(["hello there"], ["B: a much longer context line with many words"])
    assert int(mask.sum()) == len(enc.tokenizer.tokenize("hello there"))
    assert int(batch["attention_mask"].sum()) > int(mask.sum())


def _adapter_file(path, adapter, held=None, context_turns=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": "ser-live/text-adapter",
            "encoder": "sentence-transformers/all-MiniLM-L6-v2",
            "pooling": "utterance_last",
            "max_tokens": 64,
            "context_turns": context_turns,
            "adapter": adapter.to_dict(),
            "result": {"held_dialogues": sorted(held or [])},
        },
        path,
    )
    return path


def test_training_vectors_come_out_of_fold(tmp_path, trained_adapter):
    from training.data.records import DatasetSplit, Dialogue, Utterance
    from training.extract import FeatureStore
    from training.text_features import split_vectors

    def shifted(seed):
        g = torch.Generator().manual_seed(seed)
        w = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in trained_adapter.weights.items()}
        return dataclasses.replace(trained_adapter, weights=w)

    main = _adapter_file(tmp_path / "run" / "adapter.pt", trained_adapter)
    _adapter_file(tmp_path / "run" / "fold-0" / "adapter.pt", shifted(1), held={"dia1"})
    _adapter_file(tmp_path / "run" / "fold-1" / "adapter.pt", shifted(2), held={"dia2"})

    def dialogue(did, lines):
        return Dialogue(did, tuple(Utterance(did, i, f"s{i % 2}", text=t, label="joy") for i, t in enumerate(lines)))

    dialogues = (dialogue("paired-dia1", ["hi there", "go away"]), dialogue("words-dia2", ["oh no"]),
                 dialogue("dia3", ["fine", "really fine"]))
    texts = [u.text for d in dialogues for u in d.utterances]
    train = DatasetSplit("mixed", "train", dialogues, tuple(LABELS))
    got = split_vectors(train, texts, main, True, FeatureStore(tmp_path / "s.npz"))

    def enc(adapter):
        return TextEncoder(None, 64, "cpu", pooling="utterance_last", adapter=adapter)

    fold0, fold1, full = enc(shifted(1)), enc(shifted(2)), enc(trained_adapter)
    ctx = [None, "B: hi there", None, None, "B: fine"]
    want = np.stack([
        fold0.embed([texts[0]], [ctx[0]])[0], fold0.embed([texts[1]], [ctx[1]])[0],
        fold1.embed([texts[2]], [ctx[2]])[0],
        full.embed([texts[3]], [ctx[3]])[0], full.embed([texts[4]], [ctx[4]])[0],
    ])
    np.testing.assert_allclose(got, want, atol=1e-5)
    # other splits, and --in-sample-text, read everything through the full adapter
    val = DatasetSplit("mixed", "validation", dialogues, tuple(LABELS))
    np.testing.assert_allclose(
        split_vectors(val, texts, main, True, FeatureStore(tmp_path / "v.npz")), full.embed(texts, ctx), atol=1e-5
    )
    np.testing.assert_allclose(
        split_vectors(train, texts, main, False, FeatureStore(tmp_path / "t.npz")), full.embed(texts, ctx), atol=1e-5
    )


def test_out_of_fold_without_fold_adapters_says_the_vectors_are_in_sample(tmp_path, trained_adapter, caplog):
    from training.data.records import DatasetSplit, Dialogue, Utterance
    from training.extract import FeatureStore
    from training.text_features import split_vectors

    lone = _adapter_file(tmp_path / "lone" / "adapter.pt", trained_adapter)
    train = DatasetSplit("mixed", "train", (Dialogue("dia1", (Utterance("dia1", 0, "s0", text="hi", label="joy"),)),),
                         tuple(LABELS))
    with caplog.at_level("WARNING", logger="training.text_features"):
        split_vectors(train, ["hi"], lone, True, FeatureStore(tmp_path / "s.npz"))
    assert "no fold adapters" in caplog.text and "in sample" in caplog.text


class ContextFeatures:
    """Records the dialogue context each line's text vector was computed with."""

    def __init__(self):
        self.contexts: list[tuple[str, str | None]] = []

    def audio_part(self, audio):
        return {}, {}

    def _vec(self, text, context):
        self.contexts.append((text, context))
        return torch.tensor([len(text), len(context or ""), 1.0, 0.0])

    def utterance(self, audio, text, speaker=None, audio_part=None, encoded=None, norm_key=None, text_context=None):
        return {"text": self._vec(text, text_context), "speaker": 0}, {"text": 0.1}

    def text_vector(self, text, context, timing=None):
        return self._vec(text, context)


def test_the_live_pipeline_reads_each_line_with_its_past_only():
    from streamer.pipeline import UtteranceProcessor
    from streamer.segmenter import Utterance

    lines = ["hello", "hi, how are you", "terrible, thanks", "oh no"]

    class Script:  # the line is a function of the audio (its length), as a real ASR's would be
        def transcribe(self, audio):
            return lines[len(audio) // 1600 - 1]

    model = models.build("text", input_dim=4, hidden=8)
    spec = TextPipeline(pooling="utterance_last4", context_turns=2)
    ck = models.Checkpoint(model.eval(), LABELS, FeaturePipeline(text=spec))
    feats = ContextFeatures()
    proc = UtteranceProcessor(ck, feats, Script())

    def utt(i):
        n = (i + 1) * 1600
        return Utterance(i * 32000, i * 32000 + n, np.zeros(n, np.float32), i * 32000 + n)

    u = [utt(i) for i in range(4)]
    texts = [proc(u[0]).text]
    early = proc.prepare(u[2])  # speculation: line 3 prepared before line 2's event...
    texts.append(proc(u[1]).text)
    texts.append(proc(u[2], prepared=early).text)  # ...and classified after it
    texts.append(proc(u[3]).text)
    assert texts == lines
    want = dialogue_contexts([Turn(None, t) for t in texts], 2)
    used = {}
    for text, ctx in feats.contexts:
        used[text] = ctx  # the last vector computed for a line is the one classified
    assert [used[t] for t in texts] == want
    proc.reset()
    assert proc.history.context(None) is None


def test_a_bad_adapter_file_is_one_sentence(tmp_path):
    from training.text_features import read_adapter_file

    with pytest.raises(ValueError, match="no text adapter at") as e:
        read_adapter_file(tmp_path / "missing.pt")
    assert "\n" not in str(e.value)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a ser-live text adapter"):
        read_adapter_file(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk" * 10)
    with pytest.raises(ValueError, match="not a readable text adapter"):
        read_adapter_file(tmp_path / "junk.pt")


def test_text_tune_refuses_bad_settings_in_one_line_before_writing(tmp_path, capsys):
    from training.cli import main

    runs = tmp_path / "runs"
    assert main(["text-tune", "--name", "x", "--epochs", "0", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "epochs" in err and "\n" not in err
    assert not runs.exists()  # nothing written for a refused run
    bad = [("tpu", "unknown device")] + ([] if torch.cuda.is_available() else [("cuda", "CUDA is not available")])
    for device, said in bad:
        assert main(["text-tune", "--name", "x", "--device", device, "--runs-dir", str(runs)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --device:") and said in err and "\n" not in err
    assert not runs.exists()


def test_fine_tuning_runs_where_it_is_asked_and_keeps_its_weights_on_the_cpu():
    """``--device`` (auto: CUDA when present) is where text-tune trains; what it keeps and saves is on
    the CPU either way, so an adapter trained on a GPU loads anywhere (checked on an H200 too:
    ``bench/gpu_check.py run --only text text_tune``)."""
    import training.text_tune as tt
    from training.data.records import Dialogue, Utterance

    lines = [("I love this so much", "joy"), ("leave me alone", "anger"), ("ok then", "neutral")]
    train = [Dialogue(f"d{k}", tuple(Utterance(f"d{k}", i, "s0", text=t, label=y) for i, (t, y) in enumerate(lines)))
             for k in range(2)]  # fmt: skip
    cfg = tt.TuneConfig(context_turns=1, lora_layers=1, lora_rank=2, epochs=1, batch_size=2, noise_p=0.0, max_tokens=24)
    model, result = tt.tune(cfg, train, train[:1], None, {}, device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert model.encoder.device.type == expected and next(model.head.parameters()).device.type == expected
    assert all(v.device.type == "cpu" for v in tt._trainable(model).values())
    assert all(v.device.type == "cpu" for v in model.adapter().weights.values())
    assert len(result["history"]) == 1


def test_only_folds_needs_a_trained_run_with_the_same_recipe(tmp_path, capsys):
    import json

    from training.cli import main

    runs = tmp_path / "runs"
    base = ["text-tune", "--name", "x", "--runs-dir", str(runs), "--epochs", "3"]
    assert main([*base, "--only-folds"]) == 2  # no --folds
    assert "--folds K" in capsys.readouterr().err
    assert main([*base, "--folds", "2", "--only-folds"]) == 2  # nothing trained yet
    assert "no trained adapter.pt" in capsys.readouterr().err
    run = runs / "x-s0"
    run.mkdir(parents=True)
    (run / "adapter.pt").write_bytes(b"")
    (run / "result.json").write_text(json.dumps({"config": {"epochs": 2, "context_turns": 4, "seed": 0}}))
    assert main([*base, "--folds", "2", "--only-folds"]) == 2  # trained for 2 epochs, asked for 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "(epochs)" in err and "\n" not in err
    assert not (run / "fold-0").exists()


def test_an_interrupted_fine_tuning_resumes_to_the_same_adapter(tmp_path, monkeypatch):
    """text-tune's epochs take ~25 min on mpnet here: killed in epoch 2 of 3 and resumed, it ends with the
    uninterrupted run's LoRA and head weights (AdamW, the one-cycle schedule and every generator saved)."""
    import training.text_tune as tt
    from training.data.records import Dialogue, Utterance
    from training.trainer import Resume

    def dialogue(did, lines):
        return Dialogue(did, tuple(Utterance(did, i, f"s{i % 2}", text=t, label=lab)
                                   for i, (t, lab) in enumerate(lines)))  # fmt: skip

    train = [dialogue(f"d{i}", [("I love this so much", "joy"), ("leave me alone", "anger"), ("ok then", "neutral")])
             for i in range(4)]  # fmt: skip
    val = [dialogue("v0", [("this is wonderful", "joy"), ("get out", "anger")])]
    cfg = tt.TuneConfig(context_turns=1, lora_layers=1, lora_rank=2, epochs=3, batch_size=2, noise_p=0.0, max_tokens=24)
    torch.manual_seed(123)
    whole, expected = tt.tune(cfg, train, val, None, {})

    state = Resume(tmp_path / "resume.pt", tt.fingerprint(cfg))
    killed_on_call(tt, "predict", 2, monkeypatch)  # in epoch two
    torch.manual_seed(123)
    with pytest.raises(KeyboardInterrupt):
        tt.tune(cfg, train, val, None, {}, state)
    monkeypatch.undo()
    torch.manual_seed(7)  # a new process: other initial draws, replaced by the saved state
    resumed, got = tt.tune(cfg, train, val, None, {}, Resume(state.path, tt.fingerprint(cfg), load=True))
    assert [h["val_wf1"] for h in got["history"]] == [h["val_wf1"] for h in expected["history"]]
    a, b = tt._trainable(whole), tt._trainable(resumed)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k]) for k in a)
    other = tt.fingerprint(dataclasses.replace(cfg, lr=1e-3))
    with pytest.raises(ValueError, match="other settings"):
        tt.tune(cfg, train, val, None, {}, Resume(state.path, other, load=True))


def test_resume_keeps_only_a_finished_fine_tuning_of_the_same_settings(tmp_path):
    """`text-tune --resume` skips an adapter that finished with the same settings (and, for a fold, the
    same held dialogues); one with a state left behind, or other settings, is trained again."""
    import training.text_tune as tt
    from training.text_cli import _finished

    cfg = tt.TuneConfig(context_turns=1, epochs=2)
    run = tmp_path / "run"
    run.mkdir()
    result = {"config": tt.recorded_config(cfg), "held_dialogues": ["d1", "d2"], "scores": {"validation": 0.5}}
    torch.save({"format": "ser-live/text-adapter", "result": result}, run / "adapter.pt")
    assert _finished(cfg, run) == result
    assert _finished(cfg, run, held={"d2", "d1"}) == result
    assert _finished(cfg, run, held={"d1"}) is None  # a fold of another split
    assert _finished(dataclasses.replace(cfg, epochs=3), run) is None
    (run / "resume.pt").write_bytes(b"")  # interrupted after it: continue, do not keep
    assert _finished(cfg, run) is None
    assert _finished(cfg, tmp_path / "none") is None


def test_spoken_punctuation_keeps_questions_and_ends_exclamations_with_a_full_stop():
    from training.asr_text import spoken_punctuation

    assert spoken_punctuation("Where?! No, I know!! Hey!? Really??") == "Where? No, I know. Hey? Really?"
    assert spoken_punctuation("Oh my God, he's lost it.") == "Oh my God, he's lost it."
    once = spoken_punctuation("Nooo! You lent me Monica's earrings?!")
    assert spoken_punctuation(once) == once == "Nooo. You lent me Monica's earrings?"


def test_training_reads_a_turn_with_spoken_punctuation_in_its_line_and_in_later_contexts(tmp_path, capsys):
    import random

    import training.text_tune as tt
    from training.cli import main
    from training.data.records import Dialogue, Utterance

    lines = [("Hey!", "joy"), ("You're a genius!", "joy"), ("Where?!", "surprise"), ("ok then", "neutral")]
    dialogues = [Dialogue(f"d{k}", tuple(Utterance(f"d{k}", i, "s0", text=t, label=y)
                                         for i, (t, y) in enumerate(lines))) for k in range(200)]  # fmt: skip

    def epoch(p):
        cfg = tt.TuneConfig(context_turns=2, noise_p=0.0, spoken_p=p)
        return tt._noised_examples(dialogues, cfg, None, random.Random(0))

    texts, contexts, _ = epoch(0.0)
    assert texts[:4] == [t for t, _ in lines] and "Where?!" in contexts[3]  # as written, and as drawn before
    texts, contexts, _ = epoch(1.0)
    assert not any("!" in t for t in texts) and not any("!" in (c or "") for c in contexts)
    assert texts[:4] == ["Hey.", "You're a genius.", "Where?", "ok then"]
    texts, contexts, _ = epoch(0.5)
    share = np.mean(["!" not in t for t in texts if t != "ok then"])
    assert 0.4 < share < 0.6
    for i in range(0, len(texts), 4):  # a turn is one string wherever it is read
        assert texts[i + 1] in contexts[i + 2] and texts[i + 2] in contexts[i + 3]

    assert main(["text-tune", "--name", "x", "--spoken-p", "2", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --spoken-p") and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_runs_recorded_before_spoken_punctuation_are_still_recognised():
    import training.text_tune as tt

    old = tt.TuneConfig(context_turns=2, noise_p=0.3)
    assert "spoken_p" not in tt.recorded_config(old) and "spoken_p" not in tt.fingerprint(old)
    new = tt.TuneConfig(context_turns=2, noise_p=0.3, spoken_p=0.5)
    assert tt.recorded_config(new)["spoken_p"] == 0.5 and tt.fingerprint(new) != tt.fingerprint(old)
