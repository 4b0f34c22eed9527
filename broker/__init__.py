"""The broker component of TMS."""
