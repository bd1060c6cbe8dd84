import sys

from tlkit.cli.main import main

sys.exit(main())
