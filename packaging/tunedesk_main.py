"""The bundle's entry point (packaging/tunedesk.spec): the `tunedesk` command."""

import sys

from desktop.launch import main

if __name__ == "__main__":
    sys.exit(main())
