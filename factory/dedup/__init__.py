"""Exact and near-duplicate dialogue detection, within a run and against earlier runs.

    index = NearDupIndex.for_run(output_dir, run_name)     # earlier runs + this run's accepted so far
    dup = index.check_and_add(record_id, dialogue_text(messages))   # None: new, and now indexed
    index.save_run(output_dir, run_name)                   # at the end of the run (and on stop)

Signatures persist per run in <output>/.dedup/<run>.npz, a cache rebuilt from accepted.jsonl
whenever it is missing, torn, stale or made with other parameters.
"""

from factory.dedup._index import SKETCH_VERSION, Match, NearDupIndex
from factory.dedup._persist import DEDUP_DIR, signature_path
from factory.dedup._text import dialogue_text

__all__ = ["DEDUP_DIR", "SKETCH_VERSION", "Match", "NearDupIndex", "dialogue_text", "signature_path"]
