import sys

from largekernel.cli import main

sys.exit(main())
