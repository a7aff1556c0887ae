import sys

from soundmind.cli import main

sys.exit(main())
