"""The headless commands (`tunedesk COMMAND`), one module per command group."""
