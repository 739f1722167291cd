"""Amaranth gateware of the XNOR-popcount accelerator. Never imports torch."""
