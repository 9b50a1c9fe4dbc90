"""The text encoder's forward pass through ONNX Runtime: the same vectors, about twice as fast on a CPU.

On this project's 2-core CPU, all-mpnet-base-v2 costs ~125-170 ms a line in PyTorch eager mode,
and it runs after the words are known, so on long turns it is most of what the user waits for
after the end of speech (docs/benchmarks.md). ONNX Runtime runs the same graph with fused
attention and GEMM kernels in ~40-60 % of the time, to within 1e-5 of PyTorch's vectors.

The graph is exported from the loaded PyTorch model once (legacy TorchScript exporter, dynamic
batch and length) and cached in the user's cache (``$SER_LIVE_CACHE/onnx``, see
:func:`streamer.mpnet.cache_root`) under a key of everything that determines its weights and
outputs: the weight files' names, sizes and modification times, the adapter, the pooling and the
torch/transformers/onnxruntime versions. Nothing is downloaded. The pooling itself (masked mean over tokens)
stays in NumPy, so one graph serves every pooling that reads the same layers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from streamer.options import threads_sleep

log = logging.getLogger(__name__)

#: How many of the last hidden layers are averaged per pooling (``utterance_last``: the last only).
LAYERS = {"mean_last4": 4, "utterance_last4": 4, "utterance_last": 1}


def onnx_cache_dir() -> Path:
    from streamer.mpnet import cache_root

    return cache_root() / "onnx"


def weights_signature(source: str | os.PathLike) -> list:
    """Names, sizes and modification times of a local model folder's weight and config files."""
    folder = Path(source)
    if not folder.is_dir():
        return [str(source)]
    files = [p for p in sorted(folder.iterdir()) if p.suffix in (".safetensors", ".bin", ".json", ".txt", ".model")]
    return [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files]


def graph_key(source: str | os.PathLike, pooling: str, adapter_id: str | None, inputs: tuple[str, ...]) -> str:
    import onnxruntime
    import torch
    import transformers

    spec = {
        "weights": weights_signature(source),
        "layers": LAYERS[pooling],
        "adapter": adapter_id,
        "inputs": list(inputs),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,  # the fused graph holds its contrib operators
        "format": 2,  # 2: fused offline (_fuse)
    }
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def export(model, layers: int, inputs: tuple[str, ...], path: Path) -> None:
    """Write the ONNX graph of ``model`` (its tokenizer's ``inputs``: ids, attention mask and, for
    BERT-style encoders, token types) -> mean of its last ``layers`` hidden states."""
    import torch

    class _LayerMean(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            out = self.inner(**dict(zip(inputs, tensors)), output_hidden_states=True)
            return torch.stack(out.hidden_states[-layers:], dim=0).mean(dim=0)

    wrapped = _LayerMean(model).eval()
    example = tuple(torch.tensor([[0, 100, 2]]) if n == "input_ids" else torch.tensor([[1, 1, 1]]) for n in inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.onnx")
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(
            wrapped,
            example,
            str(tmp),
            input_names=list(inputs),
            output_names=["states"],
            dynamic_axes={**{n: {0: "n", 1: "L"} for n in inputs}, "states": {0: "n", 1: "L"}},
            opset_version=17,
            dynamo=False,
        )
    _fuse(tmp)
    os.replace(tmp, path)


def _fuse(path: Path) -> None:
    """Fuse the graph offline with ONNX Runtime's transformer optimizer (bias + GELU, residual +
    LayerNorm), outputs equal to 6e-7. On this CPU the bundle's graph takes 40.1 -> 38.5 ms p50
    on MELD dev lines with two turns (36 tokens), 52 -> 46 ms on a 60-token input: a small saving
    that grows with the input (docs/benchmarks.md). Attention itself is not fused
    (MPNet's relative position bias, and the stacked hidden states, do not match the pattern).
    A graph the optimizer cannot read stays as exported."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fused = optimize_model(str(path), model_type="bert", num_heads=0, hidden_size=0, opt_level=1)
        fused.save_model_to_file(str(path))
    except Exception as exc:  # an architecture the optimizer does not know: the plain graph is as exact
        log.info("ONNX text encoder left unfused (%s)", (str(exc).splitlines() or [type(exc).__name__])[0])


class OnnxText:
    """``states(batch) -> (n, L, D)`` float32 layer-mean states of one tokenized batch."""

    def __init__(self, path: Path, layers: int, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        if threads_sleep():  # like libgomp's threads under OMP_WAIT_POLICY=PASSIVE (ser-live's default)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.path = path
        #: how many last hidden layers the graph averages
        self.layers = layers
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = tuple(i.name for i in self.session.get_inputs())

    @classmethod
    def for_model(
        cls, model, source, pooling: str, adapter_id: str | None, inputs: tuple[str, ...], cache_dir: Path | None = None
    ) -> OnnxText:
        """The cached graph of this model (exported now if it is not cached, or is unreadable)."""
        key = graph_key(source, pooling, adapter_id, inputs)
        path = Path(cache_dir or onnx_cache_dir()) / f"{Path(str(source)).name}-{key}.onnx"
        if path.is_file():
            try:
                return cls(path, LAYERS[pooling])
            except Exception as exc:  # a truncated or damaged file: export it again
                log.warning("cached ONNX text encoder %s is unreadable (%s); exporting it again", path, exc)
        log.info("exporting the text encoder to ONNX once: %s", path)
        export(model, LAYERS[pooling], inputs, path)
        return cls(path, LAYERS[pooling])

    def states(self, batch) -> np.ndarray:
        """``batch``: the tokenizer's tensors (a mapping with this graph's inputs)."""
        feeds = {n: np.ascontiguousarray(np.asarray(batch[n]), dtype=np.int64) for n in self.inputs}
        return self.session.run(None, feeds)[0]
