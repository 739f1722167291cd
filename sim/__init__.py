"""Verilog generation, cocotb testbenches and the RTL backends."""
