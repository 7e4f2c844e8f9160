"""``python -m learner`` (also what ``torchrun -m learner`` runs)."""

from learner.cli import main

if __name__ == "__main__":
    main()
