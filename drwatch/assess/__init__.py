"""Pure classification: a frozen snapshot and `now` in, findings with scopes out."""

from drwatch.assess.core import RULES, Assessment, absorb, assess
from drwatch.assess.views import RETIRED_TAG, RulesConfig

__all__ = ["RETIRED_TAG", "RULES", "Assessment", "RulesConfig", "absorb", "assess"]
