"""python -m blendsync.train.cli: what torchrun starts in every process of bstrain fit --nproc."""

from blendsync.train.cli import main

main()
