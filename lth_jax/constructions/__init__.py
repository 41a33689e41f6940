"""Constructions of tickets, one module each, registered by name (``base``).

Registration order is ``METHODS``' order. A new construction: its module here + one import.
"""

from lth_jax.constructions.base import (Assembled, Construction, Instances, get, names,
                                        register)
from lth_jax.constructions import network  # registers "network"
from lth_jax.constructions import single  # registers "single"
from lth_jax.constructions import direct  # registers "direct"
from lth_jax.constructions import lplus1  # registers "lplus1"
from lth_jax.constructions import conv  # registers "conv"
from lth_jax.constructions import bias  # registers "bias"
