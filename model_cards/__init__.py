"""The Jinja template of the ticket model card (rendered by px_hub.hub.card)."""
from pathlib import Path

TICKET_CARD_TEMPLATE = Path(__file__).with_name("ticket_card.md.jinja")
