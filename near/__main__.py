import sys

from near.cli import main

sys.exit(main())
