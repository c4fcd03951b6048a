"""The study configuration, the bottom layer of the package: one module per config section,
frozen dataclasses whose fields declare each key's type, default, bounds and description once
(`fields`), the loader (`study`), and what is rendered from them: the JSON schema (`schema`) and
the README's key table (`reference`).

It imports nothing of scalinglab but `scalinglab.errors` and `scalinglab.atomic`; every other
module imports its config from here.
"""

from scalinglab.config.adaptive import AdaptiveConfig
from scalinglab.config.corpus import CorpusConfig
from scalinglab.config.critical_batch import CriticalBatchConfig
from scalinglab.config.depth_transfer import DepthTransferConfig
from scalinglab.config.downstream import DownstreamConfig
from scalinglab.config.flops import FlopsConfig
from scalinglab.config.hparams import HparamsConfig
from scalinglab.config.isoflop import IsoflopConfig
from scalinglab.config.lr_transfer import LrTransferConfig
from scalinglab.config.model import ModelConfig, SizeConfig
from scalinglab.config.paper import PaperConfig
from scalinglab.config.parametrization import ParametrizationConfig
from scalinglab.config.resources import ResourcesConfig
from scalinglab.config.schedule import ScheduleConfig
from scalinglab.config.study import StudyConfig, from_dict, load_config, to_dict
from scalinglab.config.tokenizer import TokenizerConfig
from scalinglab.config.training import TrainingConfig
from scalinglab.config.validation import ValidationConfig
from scalinglab.config.variants import VariantConfig, VariantsConfig
from scalinglab.config.wsd_vs_cosine import WsdVsCosineConfig

__all__ = [
    "AdaptiveConfig", "CorpusConfig", "CriticalBatchConfig", "DepthTransferConfig",
    "DownstreamConfig", "FlopsConfig",
    "HparamsConfig",
    "IsoflopConfig", "LrTransferConfig", "ModelConfig", "PaperConfig", "ParametrizationConfig",
    "ResourcesConfig", "ScheduleConfig", "SizeConfig", "StudyConfig", "TokenizerConfig",
    "TrainingConfig", "ValidationConfig", "VariantConfig", "VariantsConfig", "WsdVsCosineConfig",
    "from_dict", "load_config", "to_dict",
]
