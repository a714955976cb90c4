import sys

from cxlnet.cli import main

sys.exit(main())
