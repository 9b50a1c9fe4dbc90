"""The text encoder on ONNX Runtime: the same vectors as torch, one export per model, cached."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.frames import FeatureError
from streamer.text_encoder import TextEncoder

LINES = ["Oh my God, I can't believe you did that!", "Okay.", "What are you talking about? I never said that to her."]
CONTEXT = [None, "Ross: We were on a break!", "Monica: Did you tell Rachel? Chandler: No."]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SER_LIVE_CACHE", str(tmp_path))
    return tmp_path / "onnx"


@pytest.mark.parametrize("pooling", ["mean_last4", "utterance_last"])
def test_onnx_vectors_equal_torch_vectors(cache, pooling):
    fast = TextEncoder(None, 128, "cpu", pooling=pooling, runtime="onnx")
    slow = TextEncoder(None, 128, "cpu", pooling=pooling, runtime="torch")
    assert (fast.runtime, slow.runtime) == ("onnx", "torch")
    contexts = CONTEXT if pooling != "mean_last4" else None  # context pooling: a pair input, token types in play
    a, b = fast.embed(LINES, contexts), slow.embed(LINES, contexts)
    assert a.shape == b.shape == (3, fast.dim)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert not np.allclose(a[0], a[1], atol=1e-2)  # different lines, different vectors


def test_token_states_and_line_vectors_of_the_last_four_layers_equal_torch(cache):
    """``encode_tokens`` / ``encode`` (the bundled model's mean_last4 input, MCFN's and GCA's tokens)."""
    fast = TextEncoder(None, 128, "cpu", runtime="onnx")
    slow = TextEncoder(None, 128, "cpu", runtime="torch")
    for a, b in zip(fast.encode_tokens(LINES), slow.encode_tokens(LINES)):
        assert a.shape == b.shape and a.shape[0] > 2
        np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(fast.encode(LINES), slow.encode(LINES), atol=1e-4)


def test_the_graph_is_exported_once_and_a_damaged_file_is_exported_again(cache):
    TextEncoder(None, 128, "cpu", runtime="onnx")
    (path,) = cache.glob("*.onnx")
    stamp = path.stat().st_mtime_ns
    again = TextEncoder(None, 128, "cpu", runtime="onnx")
    assert path.stat().st_mtime_ns == stamp and list(cache.glob("*.onnx")) == [path]
    path.write_bytes(b"not a graph")
    repaired = TextEncoder(None, 128, "cpu", runtime="onnx")
    np.testing.assert_allclose(repaired.embed(LINES), again.embed(LINES), atol=1e-5)
    assert path.stat().st_size > 1000


def test_auto_falls_back_to_torch_when_onnx_cannot_be_prepared(cache, monkeypatch):
    import streamer.text_onnx as text_onnx

    def broken(*a, **k):
        raise OSError("read-only file system")

    monkeypatch.setattr(text_onnx, "export", broken)
    assert TextEncoder(None, 128, "cpu", runtime="auto").runtime == "torch"
    with pytest.raises(FeatureError, match="could not run on ONNX Runtime"):
        TextEncoder(None, 128, "cpu", runtime="onnx")
    with pytest.raises(FeatureError, match="text runtime must be one of"):
        TextEncoder(None, 128, "cpu", runtime="tensorrt")


def test_the_default_device_on_a_cpu_machine_runs_onnx(cache):
    import torch

    if torch.cuda.is_available():
        pytest.skip("auto is CUDA here: the text encoder stays on torch")
    assert TextEncoder(None, 128, "auto").runtime == "onnx"


def _spinning(encoder: TextEncoder) -> str | None:
    try:
        return encoder._onnx.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # not set: ONNX Runtime's default, spinning
        return None


def test_onnx_threads_sleep_when_libgomp_threads_do(cache, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what ser-live sets unless the user chose
    assert _spinning(TextEncoder(None, 128, "cpu", runtime="onnx")) == "0"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert _spinning(TextEncoder(None, 128, "cpu", runtime="onnx")) is None


def test_the_graph_is_fused_offline_and_a_graph_the_optimizer_refuses_stays_as_exported(cache, monkeypatch):
    import onnx
    import onnxruntime.transformers.optimizer as optimizer

    fused = TextEncoder(None, 128, "cpu", runtime="onnx")
    (path,) = cache.glob("*.onnx")
    assert "SkipLayerNormalization" in {n.op_type for n in onnx.load(str(path)).graph.node}

    def refuses(*args, **kwargs):
        raise ValueError("unknown architecture")

    monkeypatch.setattr(optimizer, "optimize_model", refuses)
    path.unlink()
    plain = TextEncoder(None, 128, "cpu", runtime="onnx")
    assert "SkipLayerNormalization" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    np.testing.assert_allclose(plain.embed(LINES, CONTEXT), fused.embed(LINES, CONTEXT), atol=1e-5)
