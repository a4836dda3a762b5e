"""Issue 9, class 4: what a run writes is hostile input to the tool (cases for ``adversarial.catalogue()``).

Each script is a ``train.py`` that leaves a hostile ``embeddings.npz`` or ``facts.json`` in its output
folder and exits 0; the tool must record a clear reason and go on. On the main before issue 9: the
absurd shape made ``np.load`` raise a MemoryError ("Unable to allocate 120. TiB") that stopped the loop;
the zip bomb was inflated into the tool's own memory (1.5 GiB here, and nothing bounded a bigger one);
the FIFO blocked the scorer forever; the symlink had the baseline's embeddings scored as the candidate's
(a run that computes nothing gets the best earlier score); a string in ``facts.json`` crashed ``run``,
again on every resume. The pickled ids were already refused (``allow_pickle=False``); the case keeps
it that way, now before any byte of the member is read.
"""

from __future__ import annotations

import adversarial as adv

# What the two hand-made archives share: the query set, and one array as .npy bytes (after `import io`).
_NPY_WRITER = '''\
import numpy as np
from eclip.io import load_run
run = load_run()
n = len(run.queries.image_ids)
def npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
'''

# A hand-written .npy member for image_emb whose header declares n x 2**40 float32 (4 TiB a row) over
# 64 bytes of data.
ABSURD_SHAPE = 'import io, os, zipfile\n' + _NPY_WRITER + '''\
header = repr({"descr": "<f4", "fortran_order": False, "shape": (n, 2 ** 40)}).encode()
header += b" " * (63 - (10 + len(header)) % 64) + b"\\n"
absurd = b"\\x93NUMPY\\x01\\x00" + len(header).to_bytes(2, "little") + header + bytes(64)
with zipfile.ZipFile(os.path.join(os.environ["AUTORESEARCH_OUT"], "embeddings.npz"), "w") as zf:
    zf.writestr("image_ids.npy", npy(np.array(run.queries.image_ids)))
    zf.writestr("image_emb.npy", absurd)
    zf.writestr("caption_ids.npy", npy(np.array(run.queries.caption_ids)))
    zf.writestr("caption_emb.npy", npy(np.ones((n, 8), np.float32)))
print("wrote an absurd header")
'''

# A consistent but enormous image_emb (n rows of float32 zeros, 1.5 GiB in all) that deflates to
# about 1.5 MB: the zip is written by hand from one repeatable compressed block of zeros,
# so the run itself never holds more than a megabyte.
ZIP_BOMB = 'import io, os, struct, zlib\n' + _NPY_WRITER + '''\
def deflate(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)
per_query = -(-1536 // n)            # MiB per query, so that the whole is at least 1.5 GiB
header = repr({"descr": "<f4", "fortran_order": False, "shape": (n, per_query << 18)}).encode()
header += b" " * (63 - (10 + len(header)) % 64) + b"\\n"
header = b"\\x93NUMPY\\x01\\x00" + len(header).to_bytes(2, "little") + header
zero = bytes(1 << 20)
mib = deflate(zero)                   # byte-aligned, no back references: it can be repeated
count = n * per_query
crc = zlib.crc32(header)
for _ in range(count):
    crc = zlib.crc32(zero, crc)
bomb = deflate(header) + mib * count + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
members = [("image_ids.npy", npy(np.array(run.queries.image_ids)), None),
           ("image_emb.npy", bomb, (crc, len(header) + (count << 20))),
           ("caption_ids.npy", npy(np.array(run.queries.caption_ids)), None),
           ("caption_emb.npy", npy(np.ones((n, 8), np.float32)), None)]
body, central = b"", b""
for name, data, inflated in members:
    name = name.encode()
    method, (crc, size) = (8, inflated) if inflated else (0, (zlib.crc32(data), len(data)))
    central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(data), size,
                           len(name), 0, 0, 0, 0, 0, len(body)) + name
    body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data), size, len(name), 0)
    body += name + data
end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(body), 0)
with open(os.path.join(os.environ["AUTORESEARCH_OUT"], "embeddings.npz"), "wb") as fh:
    fh.write(body + central + end)
print("wrote a zip bomb of", os.path.getsize(os.path.join(os.environ["AUTORESEARCH_OUT"], "embeddings.npz")), "bytes")
'''

FIFO = '''\
import os
os.mkfifo(os.path.join(os.environ["AUTORESEARCH_OUT"], "embeddings.npz"))
print("left a FIFO where the embeddings belong")
'''

# The run computes nothing: it links its embeddings to the baseline's (run 0000, same fold), whose path
# it derives from its own output folder; the link is made inside the sandbox, the tool reads it outside.
SYMLINK_EARLIER = '''\
import os
out = os.environ["AUTORESEARCH_OUT"]
fold = os.path.basename(out)
earlier = os.path.join(os.path.dirname(os.path.dirname(out)), "0000", fold, "embeddings.npz")
os.symlink(earlier, os.path.join(out, "embeddings.npz"))
print("linked", earlier)
'''

# Ids stored as a pickled object array whose unpickling would create MARKER on the host.
PICKLED_IDS = '''\
import os
import numpy as np
from eclip.io import load_run
run = load_run()
out = os.environ["AUTORESEARCH_OUT"]
class Payload:
    def __reduce__(self):
        return (open, (os.path.join(out, "UNPICKLED"), "w"))
n = len(run.queries.image_ids)
ids = np.empty(n, dtype=object)
ids[:] = [Payload()] * n
np.savez(os.path.join(out, "embeddings.npz"), image_ids=ids, image_emb=np.ones((n, 8), np.float32),
         caption_ids=np.array(run.queries.caption_ids), caption_emb=np.ones((n, 8), np.float32))
print("wrote pickled ids")
'''

# Valid (constant, so quick) embeddings, then a facts.json with a string, a list and an infinity where
# numbers belong.
BAD_FACTS = '''\
import os
import numpy as np
from eclip.io import load_run, write_outputs
run = load_run()
n = len(run.queries.image_ids)
write_outputs(np.ones((n, 8)), np.ones((n, 8)), run.queries, {"steps": 0})
with open(os.path.join(os.environ["AUTORESEARCH_OUT"], "facts.json"), "w") as fh:
    fh.write('{"peak_memory_gb": "lots", "steps": [1, 2], "seconds": Infinity, "final_loss": 0.5}')
'''


def _quick(ctx: adv.Context) -> None:
    """Refused before any work: the experiment costs what its runs cost, not a long scoring."""
    adv._no_perfect_score(ctx)
    limit = ctx.suite.config.run.folds * (ctx.suite.config.run.timeout_s + 2) + 30
    adv.expect(ctx.seconds < limit, f"the experiment took {ctx.seconds:.1f} s (> {limit:g} s)")


def _check_not_unpickled(ctx: adv.Context) -> None:
    _quick(ctx)
    marker = ctx.run_dir() / "fold0" / "UNPICKLED"
    adv.expect(not marker.exists(), f"the tool unpickled the run's ids ({marker} exists)")


def _check_symlink_refused(ctx: adv.Context) -> None:
    _quick(ctx)
    link = ctx.run_dir() / "fold0" / "embeddings.npz"
    adv.expect(link.is_symlink(), "the run did not leave its link (the case tested nothing)")
    adv.expect("0000" in str(link.resolve()), f"the link points at {link.resolve()}, not the baseline's run")


def _check_bad_facts(ctx: adv.Context) -> None:
    adv._check_honest_constant(ctx)          # scored as usual: (n - 1) / 2 on every fold
    row = ctx.row
    adv.expect(row.peak_memory_gb is not None and 0 <= row.peak_memory_gb < 2.5,
               f"peak memory recorded as {row.peak_memory_gb!r}")
    log = ctx.suite.log_text(row)
    adv.expect("# facts.json: dropped peak_memory_gb = 'lots'" in log, "the fold log does not name the dropped fields")
    adv.expect("steps = [1, 2]" in log and "seconds = inf" in log, "not every bad field is named")


def hostile_outputs() -> list[adv.Attack]:
    """The class-4 cases, in the order they run after the rest of the catalogue."""
    write = adv.write_train
    return [
        adv.Attack("hostile-absurd-shape", "embeddings.npz whose image_emb header declares n x 2**40 float32",
                   "crash", r"fold0: image_emb has dimension 1099511627776; the scorer takes 1 to 4096",
                   lambda ctx: write(ABSURD_SHAPE), _quick),
        adv.Attack("hostile-zip-bomb", "a 1.5 MB embeddings.npz whose image_emb inflates to 1.5 GiB of zeros",
                   "crash", r"fold0: embeddings\.npz declares 1\.\d GiB of uncompressed data, over the 1\.0 GiB cap",
                   lambda ctx: write(ZIP_BOMB), _quick),
        adv.Attack("hostile-fifo", "a FIFO named embeddings.npz (opening it for reading blocks forever)",
                   "crash", r"fold0: embeddings\.npz is a FIFO \(named pipe\), not a regular file",
                   lambda ctx: write(FIFO), _quick),
        adv.Attack("hostile-symlink-earlier", "embeddings.npz is a symlink to the baseline's embeddings of the same fold",
                   "crash", r"fold0: embeddings\.npz is a symbolic link .*0000/fold0/embeddings\.npz",
                   lambda ctx: write(SYMLINK_EARLIER), _check_symlink_refused),
        adv.Attack("hostile-pickled-ids", "ids saved as a pickled object array that would create a file when loaded",
                   "crash", r"fold0: image_ids in embeddings\.npz stores Python objects",
                   lambda ctx: write(PICKLED_IDS), _check_not_unpickled),
        adv.Attack("hostile-bad-facts", "constant embeddings, then facts.json with a string, a list and Infinity as numbers",
                   "discard", r"not better|ignores the seed|not by enough|short of", lambda ctx: write(BAD_FACTS), _check_bad_facts),
    ]
