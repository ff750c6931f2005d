"""Analysis of tickets: per-layer density and width, the empirical Fixed-Weight NTK spectrum, report figures."""
from .layers import collapse_warnings, layer_label, layer_reports, layer_rows
from .ntk import NTKSpectrum, compare_spectra, empirical_ntk, ntk_spectrum, pick_outputs
from .report import analyze, take_inputs, write_report

__all__ = ["NTKSpectrum", "analyze", "collapse_warnings", "compare_spectra", "empirical_ntk", "layer_label",
           "layer_reports", "layer_rows", "ntk_spectrum", "pick_outputs", "take_inputs", "write_report"]
