import sys

from ai_doctor.cli import main

sys.exit(main())
