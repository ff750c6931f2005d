from .health import LayerHealth, TicketHealth, ticket_health
from .mask import LayerReport, Mask, MaskEnforcer
from .schedule import sparsity_schedule
from .targets import PruneTargets, classifier_module, weighted_modules

__all__ = ["Mask", "MaskEnforcer", "LayerReport", "PruneTargets", "classifier_module", "weighted_modules",
           "sparsity_schedule", "TicketHealth", "LayerHealth", "ticket_health"]
