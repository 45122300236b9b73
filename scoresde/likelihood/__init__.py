"""Exact log-likelihoods, latents and bits/dim through the probability-flow ODE.

    log_likelihood(score, sde, x)  -> LikelihoodResult (logp in nats of x at time eps)
    bits_per_dim(score, sde, x8)   -> BitsPerDimResult (dequantized 8-bit data)
    encode / decode                -> the deterministic latent of the PF ODE and back

See docs/likelihood.md for the mathematics and the options.
"""
from .bpd import DATA_RANGES, BitsPerDimResult, bits_per_dim, dequantize
from .divergence import (PROBES, default_chunk_size, draw_probes, exact_divergence,
                         hutchinson_divergence)
from .flow import TRACES, LikelihoodResult, decode, encode, log_likelihood

__all__ = [
    "log_likelihood", "LikelihoodResult", "encode", "decode", "bits_per_dim",
    "BitsPerDimResult", "dequantize", "exact_divergence", "hutchinson_divergence",
    "draw_probes", "default_chunk_size", "TRACES", "PROBES",
    "DATA_RANGES",
]
