"""The stages of the chain by model name, and the label the result tables give each one.

The workflow names a model by its stage (``aa_it``, ``tgaa_r2``, ``st_gmm_r1``); the tables of the
main chain and of the ablation label the rungs as Table 3 does. The rules take the labels from here.
"""

from __future__ import annotations

# Table 3's rungs: the label of each stage's model (``tgaa`` stands for its last round, ``st`` for
# the last self-training round on GMM pseudo labels).
RUNG_LABELS: dict[str, str] = {
    "source_only": "Source only",
    "aa": "+AA",
    "aa_it": "+IT",
    "sr": "+SR",
    "tgaa": "+TGAA",
    "st": "+UPST",
}
# The ablation's controls, beside the rungs.
CONTROL_LABELS: dict[str, str] = {
    "source_only_adabn": "Source only + AdaBN",
    "aa_noadv": "AA with lambda_adv = 0 (target batches seen)",
    "oracle": "Target oracle (trained on target labels)",
}
