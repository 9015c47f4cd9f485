"""The baselines the five papers compare with, as Mammoth implements them (docs/baselines.md): sgd, joint,
er, der/derpp, er_ace, icarl, lwf/lwf_mc, ewc_on, si, and the regularisers EWC and SI that other families
reuse. Other families build on these classes through this module's names."""

from ..family import Family
from .der import DER, DERHparams
from .er import ER, ERHparams
from .er_ace import ERACE, ERACEHparams, ace_mask
from .ewc_on import OnlineEWC
from .icarl import ICaRL, ICaRLHparams
from .joint import Joint
from .lwf import LwF, LwFMC
from .regularizers import EWCFisher, SIImportance, quadratic_penalty
from .sgd import SGD
from .si import SI

FAMILY = Family("baselines")

__all__ = ["DER", "DERHparams", "ER", "ERHparams", "ERACE", "ERACEHparams", "ace_mask", "OnlineEWC", "ICaRL",
           "ICaRLHparams", "Joint", "LwF", "LwFMC", "EWCFisher", "SIImportance", "quadratic_penalty", "SGD", "SI",
           "FAMILY"]
