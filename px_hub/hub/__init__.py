"""Tickets: one folder format that is also a Hub repo (see :mod:`px_hub.hub.format`), its model card, a
one-commit push, a verified pull, and :class:`Ticket` (``from_pretrained`` / ``save_pretrained`` /
``push_to_hub``). This package builds models from ticket folders by itself and never imports
:mod:`px_hub.backbones` (which reads ticket folders through it)."""
from .card import render_card
from .format import weights_sha256
from .pretrained import Ticket, from_pretrained
from .remote import pull_ticket, push_ticket
from .ticket import load_ticket, save_ticket, update_ticket, verify_ticket

__all__ = ["Ticket", "save_ticket", "update_ticket", "load_ticket", "push_ticket", "pull_ticket", "from_pretrained",
           "render_card", "weights_sha256", "verify_ticket"]
