"""Dataset-scale statistics of attention gates (SENet §7, Fig. 6): :func:`analyze`.

    import attnviz
    a = attnviz.analyze("synthetic:2000", "shapes_se_resnet")
    a.specificity(), a.saturation(), a.accuracy(), a.save("se.npz")

The local engine never imports ray; ``engine="ray"`` does, on demand.
"""
from .analysis import FORMAT, Analysis
from .api import analyze
from .sources import ACCEPTED, ResolvedSource, SourceError, resolve_source, select
from .stats import BlockStats

__all__ = ["ACCEPTED", "Analysis", "BlockStats", "FORMAT", "ResolvedSource", "SourceError", "analyze",
           "resolve_source", "select"]
