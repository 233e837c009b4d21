import sys

from catalogsync.cli import main

sys.exit(main())
