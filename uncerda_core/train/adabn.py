"""AdaBN control: BatchNorm statistics re-estimated on target images, no training.

Part of any adaptation gain can come from BatchNorm merely seeing target
statistics; this control measures that share.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from uncerda_core import artifacts
from uncerda_core.data.index import read_index
from uncerda_core.data.datasets import ImageSettings, SegmentationDataset, normalize
from uncerda_core.errors import UncerdaError
from uncerda_core.inference import load_model, non_finite_entries, require_finite
from uncerda_core.runtime import load_checkpoint, resolve_device
from uncerda_core.train.checkpoint import save_checkpoint


@torch.no_grad()
def adapt_batchnorm(config: dict, checkpoint: str | Path, target_index: str | Path, out: str | Path,
                    progress: bool = True) -> None:
    """One pass over the target train images with cumulative BatchNorm averages."""
    torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    state = load_checkpoint(checkpoint)
    model = load_model(checkpoint, device, config["model"], state=state)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the whole pass
        bn.train()
    table = read_index(target_index)
    settings = ImageSettings.from_config(config["target"], train=False, flip=False)
    images = SegmentationDataset(config["target"]["dataset"], table, settings, label_source=None)
    loader = torch.utils.data.DataLoader(images, batch_size=config["train"]["batch_size"], shuffle=False)
    for batch in tqdm(loader, desc="adabn", disable=not progress, file=sys.stderr, mininterval=2.0):
        _, logits = model(normalize(batch["image"].to(device), config["train"]["normalize"]))
        require_finite(logits, f"{checkpoint} (target images {', '.join(images.names[i] for i in batch['index'].tolist())})")
    state["model"] = {k: v.cpu() for k, v in model.state_dict().items()}
    bad = non_finite_entries(state["model"])
    if bad:   # activations overflowed on some target image: the averages are not statistics
        raise UncerdaError(f"{checkpoint}: re-estimating BatchNorm on {target_index} gave non-finite statistics "
                           f"in {len(bad)} tensor(s), e.g. {bad[0]!r}; {out} is not written")
    state["stage"] = "adabn"
    state["provenance"] = artifacts.provenance("adabn", config=config, inputs={
        "checkpoint": checkpoint, "target_index": target_index})
    save_checkpoint(out, state)
