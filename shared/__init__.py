"""What more than one TMS component needs: topics, message schemas, tables, settings."""
