"""Networks: DeepLab-v2 (ResNet-101 and a small variant), the discriminator, foreign weights."""

from uncerda_core.models.deeplab import (
    ASPPClassifier,
    DeepLabSettings,
    DeepLabV2,
    build_model,
    deeplabv2_resnet101,
    deeplabv2_small,
)
from uncerda_core.models.discriminator import (
    FCDiscriminator,
    discriminator_input,
    softmax_map,
    weighted_self_information,
)
from uncerda_core.models.weights import LoadReport, load_state, load_state_dict_into, map_key

__all__ = [
    "ASPPClassifier", "DeepLabSettings", "DeepLabV2", "build_model", "deeplabv2_resnet101",
    "deeplabv2_small", "FCDiscriminator", "discriminator_input",
    "softmax_map", "weighted_self_information", "LoadReport", "load_state",
    "load_state_dict_into", "map_key",
]
