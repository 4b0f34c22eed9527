"""Remote commands: the queue the console, the API and support scripts add to, and the
sender (``tms commands``) that publishes it to terminals. Design: docs/commands.md."""
