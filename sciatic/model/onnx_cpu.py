"""The networks run by ONNX Runtime on the CPU: faster than PyTorch there, probabilities within 1e-4 of its.

A network is exported to ONNX in memory the first time it sees an input of a
given ``(C, H, W)`` (the batch size stays free), which takes well under a
second; a process keeps the sessions with its model bundle. The export traces
the network at that size, so the padding a U-Net needs for odd sizes is traced
as it is for those inputs, and another size gets its own export. Chosen by
``SCIATIC_CPU_RUNTIME`` (``onnxruntime``, the default, or ``torch``);
``benchmarks/cpu_runtime.py`` compares the two (speed, and masks against eager).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["OnnxRuntime"]

OPSET = 18


class OnnxRuntime:
    """Runs ``nn.Module`` networks with ONNX Runtime's CPU provider; one session per network and input shape."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or torch.get_num_threads()
        self._sessions: dict[tuple[int, tuple[int, ...]], Any] = {}
        self._nets: dict[int, nn.Module] = {}  # keeps each network alive while its id is a key

    def __call__(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The network's output (logits) for ``x`` ``(N, C, H, W)``, as a CPU float32 tensor."""
        key = (id(net), tuple(int(s) for s in x.shape[1:]))
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = self._session(net, key[1])
            self._nets[id(net)] = net
        inputs = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(session.run(None, {"x": inputs})[0])

    def _session(self, net: nn.Module, shape: tuple[int, ...]) -> Any:
        import onnxruntime

        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent branches: traced for this shape
            torch.onnx.export(
                net.eval(),
                (torch.zeros(1, *shape),),
                buffer,  # type: ignore[arg-type]  # the exporter writes to a file object too
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                opset_version=OPSET,
                dynamo=False,
            )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        return onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
