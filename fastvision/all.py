"""Everything a user needs, for `from fastvision.all import *`. Star imports live here only."""

from .callback.core import *
from .transform import *
