"""`python -m ragtune.cli`: the same as the `ragtune` console script."""

from ragtune.cli import main

if __name__ == "__main__":
    main()
