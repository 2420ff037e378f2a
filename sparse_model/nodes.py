"""Node identity: one place that builds and takes apart node names and ids.

A node is one unit at one location of the model: an MLP neuron, a q/k/v channel, or a residual
channel read or written by a layer (docs/method.md, "Nodes"). Three spellings of the same node:

    location  "L1.mlp.neuron"           where in the forward pass (`model.node_locations` lists them)
    name      "L1.mlp.neuron[37]"       location and index, unique within a model
    node_id   "demo/L1.mlp.neuron[37]"  model and name, unique in the database

The layer-free part of a location ("mlp.neuron") is its `site`; the final residual read has site
"final.resid_read" and layer n_layer.
"""

from __future__ import annotations

from typing import NamedTuple

FINAL = "final.resid_read"
# Sites inside a layer, in forward order.
SITES = ("attn.resid_read", "attn.q", "attn.k", "attn.v", "attn.resid_write",
         "mlp.resid_read", "mlp.neuron", "mlp.resid_write")


class Node(NamedTuple):
    """A node as (location, index); unpacks and compares like that tuple."""

    location: str  # e.g. "L1.mlp.neuron"
    index: int

    @property
    def name(self) -> str:
        return f"{self.location}[{self.index}]"

    def node_id(self, model: str) -> str:
        return f"{model}/{self.name}"

    def layer(self, n_layer: int) -> int:
        """The layer number; the final residual read counts as layer n_layer."""
        return n_layer if self.location == FINAL else int(self.location[1:].split(".", 1)[0])

    @property
    def site(self) -> str:
        """The location without its layer: "mlp.neuron", or "final.resid_read"."""
        return self.location.split(".", 1)[1] if self.location.startswith("L") else self.location

    @classmethod
    def parse(cls, name: str) -> "Node":
        """`L1.mlp.neuron[37]` -> Node("L1.mlp.neuron", 37); a ValueError names the expected form."""
        if not name.endswith("]") or "[" not in name:
            raise ValueError(f"not a node name: {name!r} (expected location[index], e.g. L0.mlp.neuron[3])")
        location, index = name[:-1].split("[", 1)
        try:
            return cls(location, int(index))
        except ValueError:
            raise ValueError(f"not a node name: {name!r} (expected location[index], e.g. L0.mlp.neuron[3])") from None

    @classmethod
    def from_id(cls, node_id: str) -> tuple[str, "Node"]:
        """`demo/L1.mlp.neuron[37]` -> ("demo", Node(...)). The model name may itself contain '/'."""
        model, _, name = node_id.rpartition("/")
        return model, cls.parse(name)


def site_order(site: str) -> int:
    """Sort key of a site in forward order (final last)."""
    return SITES.index(site) if site in SITES else len(SITES)
