"""Tickets: one folder format that is also a Hub repo (see :mod:`px_hub.hub.format`), its model card, a
one-commit push and a verified pull."""
from .card import render_card
from .format import weights_sha256
from .remote import from_pretrained, pull_ticket, push_ticket
from .ticket import load_ticket, save_ticket, update_ticket, verify_ticket

__all__ = ["save_ticket", "update_ticket", "load_ticket", "push_ticket", "pull_ticket", "from_pretrained",
           "render_card", "weights_sha256", "verify_ticket"]
