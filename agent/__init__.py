"""The agent component of TMS."""
