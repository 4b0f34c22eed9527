"""The console component of TMS."""
