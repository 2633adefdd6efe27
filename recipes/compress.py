"""Fine-tune, search a student under a latency budget, distil, prune, quantize, evaluate and share: one
resumable pipeline described by one YAML.

    accelerate launch recipes/compress.py
    accelerate launch recipes/compress.py --config recipes/configs/minilm/rotten_tomatoes/compress_full.yaml
    hfcompress compress --config recipes/configs/minilm/rotten_tomatoes/compress_default.yaml
    hfcompress compress --config recipes/configs/smollm2/austen/compress_default.yaml   # a causal LM
    python recipes/compress.py --output_dir outputs/compress_seed43 --seed 43
    accelerate launch --multi_gpu --num_processes 2 recipes/compress.py   # two processes (DDP; CPU or GPUs)

The YAML lists the stages in order (finetune, search, distill, prune, quantize, evaluate, share), each with
the fields of the config it wraps (docs/pipeline.md); task_type causal_lm takes a causal LM and text or chat data. Every stage writes its artifact and a record under
<output_dir>/<stage>/; the same command run again skips finished stages whose config and inputs are
unchanged, reruns a changed stage and everything after it, and resumes an interrupted finetune or distill
stage from its last checkpoint. The run ends with <output_dir>/report.json and report.md (every artifact
measured side by side, the variant to ship chosen on validation) and shares that variant if asked.
Top-level fields (output_dir, seed, model_name_or_path, task_type, selection_metric, overwrite_output) can be
set on the command line. Bad input stops the run before anything is written. Under several processes every
process trains; the main one writes the records, measures and reports.
"""

import sys
from pathlib import Path

from hfcompress.pipeline import run_pipeline
from hfcompress.recipe import run_recipe, setup_logging_and_threads

DEFAULT_CONFIG = Path(__file__).parent / "configs/minilm/rotten_tomatoes/compress_default.yaml"


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = DEFAULT_CONFIG
    if "--config" in argv:
        i = argv.index("--config")
        config, argv = argv[i + 1] if i + 1 < len(argv) else "", argv[:i] + argv[i + 2 :]
    setup_logging_and_threads()
    return run_pipeline(config, argv)


if __name__ == "__main__":
    run_recipe(main, "compress")
