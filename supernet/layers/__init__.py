"""Elastic building blocks: each runs a sub-size of its full weights and exports a static copy."""
from .attention import Attention, ElasticAttention, ElasticMlp, Mlp
from .conv import ElasticConv2d
from .linear import ElasticLinear, ElasticQKV
from .norm import ElasticLayerNorm

__all__ = ["Attention", "ElasticAttention", "ElasticConv2d", "ElasticLayerNorm", "ElasticLinear",
           "ElasticMlp", "ElasticQKV", "Mlp"]
