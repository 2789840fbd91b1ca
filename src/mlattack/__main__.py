import sys

from mlattack.cli import main

sys.exit(main())
