"""The ``px-hub`` command (installed as ``px_hub.cli``): thin argparse layers over the library."""
