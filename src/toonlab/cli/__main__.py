"""``python -m toonlab.cli`` (what ``toonlab train --nproc N`` runs under torchrun)."""

from toonlab.cli import main

main()
