"""The data files: a float32 table per split, one row per pair: x1, x2 and their sum x1 + x2.

NumPy's .npy format, not torch.save: prepare then needs no torch (2 s less on every run), the table
is one flat array (10 million rows are 120 MB), and np.load with allow_pickle=False can only ever
return numbers.
"""

import tokenize
import warnings
import zipfile

import numpy as np

from stages.common import UserError, atomic_output

TRAIN_FILE = "data/train.npy"
VAL_FILE = "data/val.npy"
COLUMNS = ("x1", "x2", "x1 + x2")


def save_pairs(path, table):
    with atomic_output(path) as file:
        np.save(file, table)


def load_pairs(path):
    """The table at `path` as (x, y) views: x is (n, 2), y is (n, 1), both float32. Any other file: one line."""
    try:
        with warnings.catch_warnings():  # a corrupted header can make Python warn about its escapes: our line says it
            warnings.simplefilter("ignore")
            table = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run `dvc repro prepare` (or `dvc checkout` to restore it)") from None
    except (tokenize.TokenError, SyntaxError):  # numpy's parser of a header it could not read as a dict literal
        raise UserError(f"{path}: not a readable .npy table, truncated or corrupted (a malformed header)") from None
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, MemoryError) as error:
        first = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: not a readable .npy table, truncated or corrupted ({first})") from None
    if not isinstance(table, np.ndarray):  # an .npz archive: np.load opened it, lazily
        table.close()
        raise UserError(f"{path}: expected one .npy table of rows {', '.join(COLUMNS)}, found an .npz archive")
    if table.dtype != np.float32 or table.ndim != 2 or table.shape[1] != 3 or len(table) == 0:
        raise UserError(
            f"{path}: expected a float32 table of rows {', '.join(COLUMNS)}, found {table.dtype} {table.shape}"
        )
    if not np.isfinite(table).all():  # prepare never writes one: the table was changed after it
        row = int(np.argmin(np.isfinite(table).all(axis=1)))
        raise UserError(f"{path}: row {row + 1} is {table[row].tolist()}, expected finite numbers")
    return table[:, :2], table[:, 2:]
