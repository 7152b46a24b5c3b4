import sys

from gslb.cli import main

if __name__ == "__main__":  # also keeps multiprocessing's spawned children from re-running the CLI
    sys.exit(main())
