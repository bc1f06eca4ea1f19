"""`python -m tasd` runs the daemon, like the `tasd` command."""
import sys

from tasd.slowpath.daemon import main

sys.exit(main())
