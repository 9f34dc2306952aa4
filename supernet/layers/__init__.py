"""Elastic building blocks: each runs a sub-size of its full weights (at a bit width) and exports a static copy."""
from .attention import Attention, ElasticAttention, ElasticMlp, Mlp
from .batchnorm import ElasticBatchNorm2d
from .conv import ElasticConv2d
from .conv_norm_act import ConvNormAct, ElasticConvNormAct, ElasticDwConvNormAct, conv_cost, same_conv_size
from .depthwise import ElasticDepthwiseConv2d
from .linear import ElasticLinear, ElasticQKV
from .norm import ElasticLayerNorm
from .quant import (
    DEFAULT_BITS,
    FLOAT_BITS,
    FakeQuantize,
    QuantConv2d,
    QuantLinear,
    attach_quantizers,
    check_bits_choices,
    quantized_skip,
    set_bits,
)
from .sorting import input_importance, order_within_bands, permute_channels, sort_channel_group
from .squeeze_excite import ElasticSqueezeExcite, SqueezeExcite, se_width

__all__ = ["DEFAULT_BITS", "FLOAT_BITS", "Attention", "ConvNormAct", "ElasticAttention", "ElasticBatchNorm2d",
           "ElasticConv2d", "ElasticConvNormAct", "ElasticDepthwiseConv2d", "ElasticDwConvNormAct", "ElasticLayerNorm",
           "ElasticLinear", "ElasticMlp", "ElasticQKV", "ElasticSqueezeExcite", "FakeQuantize", "Mlp", "QuantConv2d",
           "QuantLinear", "SqueezeExcite", "attach_quantizers", "check_bits_choices", "conv_cost", "input_importance",
           "order_within_bands", "permute_channels", "quantized_skip", "same_conv_size", "se_width", "set_bits",
           "sort_channel_group"]
