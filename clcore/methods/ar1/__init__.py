"""AR1* with latent replay and CWR* (docs/ar1.md#cwr, docs/ar1.md#latent-replay): the components its
methods build on, ahead of the methods themselves: the consolidated output layer (CWR*) and the latent replay memory
with its minibatch plan. Its network, MobileNetV1 with batch renormalisation, is the backbone `mobilenet_v1`. The
package joins `clcore.methods.FAMILIES` with its registry names (`naive_nic`, `cwr_star`, `ar1_star*`).
"""

from .cwr import CWRStar, Multiplicity, current_classes
from .latent_replay import LatentMemory, insert_count, minibatch_plan, pad_to_multiple

__all__ = ["CWRStar", "LatentMemory", "Multiplicity", "current_classes", "insert_count", "minibatch_plan",
           "pad_to_multiple"]
