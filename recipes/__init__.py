"""Shipped fine-tuning recipes (YAML), one per row of the PX paper's Table 3 plus small offline ones.
Load with :func:`px_hub.finetune.load_recipe` by name (file stem)."""
