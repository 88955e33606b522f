"""``uncerda export``: the segmentation network of a checkpoint alone, for deployment.

The exported program is the network as trained: input a normalised float
batch ``(N, 3, H, W)`` (the config's ``train.normalize``; batch size, height
and width free), output ``(aux_logits, main_logits)`` at the output stride
(for a prediction, place the main logits on the input's pixels, cell ``(i, j)``
on pixel ``(s*i, s*j)`` as :func:`uncerda_core.models.deeplab.logits_to_input`
does, and take the argmax; the discriminators, optimiser and training state
are left out). Formats:

- ``.pt2``: ``torch.export`` (load with ``torch.export.load(path).module()``);
  the file also holds ``uncerda.json`` (normalisation, classes, the network
  input size, provenance) as an extra file.
- ``.onnx``: through ``torch.onnx.export(..., dynamo=True)``, which needs the
  ``onnx`` and ``onnxscript`` packages; without them the export is refused
  before any work (uncerda does not depend on them).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from uncerda_core import artifacts
from uncerda_core.data.labels import CLASS_NAMES
from uncerda_core.errors import UncerdaError
from uncerda_core.inference import checkpoint_config, load_model
from uncerda_core.runtime import load_checkpoint

EXPORT_SUFFIXES: tuple[str, ...] = (".pt2", ".onnx")
METADATA_NAME = "uncerda.json"
# Height and width of the example input when the config does not resize target images:
# any size works, the exported program's batch, height and width are symbolic.
EXAMPLE_SIZE = (64, 128)


def _check_format(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise UncerdaError(f"--out {out}: unknown format {suffix or '(none)'}; name it *.pt2 (torch.export) "
                           "or *.onnx")
    if suffix == ".onnx":
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise UncerdaError(f"--out {out}: ONNX export needs the {' and '.join(missing)} package(s), which "
                               "are not installed (uncerda does not depend on them). Install them "
                               "(pip install onnx onnxscript) or export to a .pt2 file.")
    return suffix


def export_model(checkpoint: str | Path, out: str | Path, config: dict | None = None) -> dict:
    """Export the network of ``checkpoint`` to ``out`` (``.pt2`` or ``.onnx``); returns its metadata."""
    out = Path(out)
    suffix = _check_format(out)
    state = load_checkpoint(checkpoint)
    config = checkpoint_config(checkpoint, config, state)
    model = load_model(checkpoint, torch.device("cpu"), config["model"], state=state)
    del state
    resize = config["target"]["resize"]
    height, width = (resize[1], resize[0]) if resize else EXAMPLE_SIZE
    # A batch of 2: with a batch of 1 the exporter would specialise the batch size to 1.
    example = torch.zeros(2, 3, height, width)
    free = {"x": {0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}}
    record = artifacts.provenance("export", config=config, inputs={"checkpoint": checkpoint})
    metadata = {
        "input": f"(N, 3, H, W) float32, normalised '{config['train']['normalize']}' from 0-255 RGB",
        "output": "(aux_logits, main_logits), each (N, C, h, w) at the output stride "
                  f"s = {config['model']['output_stride']}: h = ceil((H - 1) / s) + 1 or one fewer, "
                  "cell (i, j) centred on input pixel (s*i, s*j)",
        "normalize": config["train"]["normalize"], "network_input_size": resize,
        "class_names": list(CLASS_NAMES[: config["model"]["num_classes"]]), "provenance": record,
    }
    try:
        with torch.no_grad():
            if suffix == ".pt2":
                program = torch.export.export(model, (example,), dynamic_shapes=free)
                with artifacts.atomic_path(out) as tmp:
                    torch.export.save(program, tmp, extra_files={METADATA_NAME: json.dumps(metadata)})
            else:
                with artifacts.atomic_path(out) as tmp:
                    torch.onnx.export(model, (example,), str(tmp), dynamo=True, input_names=["x"],
                                      output_names=["aux_logits", "main_logits"], dynamic_shapes=free)
                artifacts.write_sidecar(out, record)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        raise UncerdaError(f"{checkpoint}: the exporter failed ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return metadata


def load_exported(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """A ``.pt2`` written by :func:`export_model`: the callable network and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise UncerdaError(f"{path}: exported model not found")
    extra = {METADATA_NAME: ""}
    program = torch.export.load(path, extra_files=extra)
    return program.module(), json.loads(extra[METADATA_NAME] or "{}")
