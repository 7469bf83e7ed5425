"""Train the shipped default model, atlas_fast/data/model.bin, reproducibly.

    python tools/train_default_model.py [--corpus ../shared/corpus] [--seed 1]

Trains on the *train* files of the shared corpus only (the SpamAssassin test
split is for measuring).  Same data and seed give a byte-identical file.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from atlas_fast.evaluate import TrainParams, train_model  # noqa: E402

SEED = 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.path.join(HERE, "..", "..", "shared", "corpus"))
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("-o", "--out", default=os.path.join(HERE, "..", "atlas_fast", "data", "model.bin"))
    args = ap.parse_args(argv)
    c = args.corpus
    ham = [os.path.join(c, f"{n}-train-ham.mbox.gz") for n in ("spamassassin", "csdmc2010")]
    spam = [os.path.join(c, f"{n}-train-spam.mbox.gz") for n in ("spamassassin", "csdmc2010")]
    summary = train_model(ham, spam, args.out, seed=args.seed, params=TrainParams())
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
