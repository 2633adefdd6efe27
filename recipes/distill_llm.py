"""Shrink a causal language model: adapt the teacher to the text, prune or cut a student, distil, measure, share.

    accelerate launch recipes/distill_llm.py
    accelerate launch recipes/distill_llm.py --config recipes/configs/smollm2/austen/distill_width.yaml
    accelerate launch recipes/distill_llm.py --config recipes/configs/smollm2/austen/distill_full.yaml
    accelerate launch recipes/distill_llm.py --config recipes/configs/smollm2/austen_chat/distill_instruct.yaml
    accelerate launch --multi_gpu --num_processes 2 recipes/distill_llm.py   # 2 CPU processes (gloo DDP)
    python recipes/distill_llm.py --help

Steps: load the data (plain text cut into token blocks, chat messages or prompt/completion pairs; train/
validation/test, plus an out-of-domain text); load the teacher (torch_dtype, attn_implementation) and adapt it to
the training data with the LM loss, in full or with LoRA (saved in <output_dir>/teacher and reused by later runs
with the same settings); with sequence_kd, the teacher answers the training prompts once; build the student:
pruned from the teacher (depth by block influence or kept evenly, width by activation: KV groups, FFN neurons,
hidden channels; in num_iterations prune -> distil rounds), cut from its layers, or a pretrained model of the same
tokenizer; distil (divergence, temperature, alpha for the LM loss, chunked through the lm_head); measure teacher
and student: strided perplexity and bits per byte of text, completion perplexity of chat or prompt/completion
data, greedy tokens/s at batch 1 and prompt tokens/s at batch 8 with the models taking turns, size; save the
student to <output_dir>/student; write <output_dir>/report.json and report.md; export/push the student if asked
(share_*). Bad input stops the run before anything is written.
"""

from pathlib import Path

from transformers import set_seed

from hfcompress import DistillationConfig, DistillationTrainer, create_student_from_teacher
from hfcompress.assets import find_asset, resolve_model
from hfcompress.configs import DistillLLMRecipeArguments, LMDataArguments
from hfcompress.data.causal_lm import check_block_size, ensure_pad_token, load_lm_texts, split_text
from hfcompress.data.lm_examples import first_training_rows, lm_columns, lm_split_rows, load_lm_data
from hfcompress.distillation.causal import common_vocab_size
from hfcompress.distillation.sequence import teacher_answers
from hfcompress.evaluation import markdown_table
from hfcompress.evaluation.lm import compare_language_models
from hfcompress.finetuning import adapted_causal_teacher
from hfcompress.hub import CompressionInfo
from hfcompress.modeling import load_causal_lm, load_tokenizer, saved_tokenizer
from hfcompress.pruning import StructuredPruningConfig
from hfcompress.pruning.iterative import calibration_batches, structured_prune, structured_targets
from hfcompress.recipe import finish_recipe, report_header, run_recipe, start_recipe
from hfcompress.training_args import stage_args

CONFIG_TYPES = (DistillLLMRecipeArguments, LMDataArguments, StructuredPruningConfig, DistillationConfig)
DEFAULT_CONFIG = Path(__file__).parent / "configs/smollm2/austen/distill_default.yaml"
SETTINGS = (
    "divergence",
    "beta",
    "temperature",
    "alpha",
    "lmbda",
    "max_steps",
    "num_train_epochs",
    "learning_rate",
)
COLUMNS = [("model", "model"), ("parameters", "parameters"), ("size_mb", "MB"),
           ("validation_perplexity", "val ppl"), ("test_perplexity", "test ppl"), ("test_bits_per_byte", "test bpb"),
           ("ood_perplexity", "Hamlet ppl"), ("ood_bits_per_byte", "Hamlet bpb"),
           ("generate_tokens_per_s_b1", "generate tok/s b1"), ("prompt_tokens_per_s", "prompt tok/s")]  # fmt: skip


def main(argv=None) -> dict | None:
    argv, (recipe, data_args, pruning, args) = start_recipe(CONFIG_TYPES, DEFAULT_CONFIG, argv)
    out = Path(args.output_dir)
    set_seed(args.seed)

    # 1. Data and models; every check that can fail on bad input happens here, before anything is written.
    raw, fmt = load_lm_data(data_args.dataset_name, data_args.data_format, *lm_columns(data_args).values())
    ood = load_lm_texts(data_args.ood_dataset_name) if data_args.ood_dataset_name else None
    tokenizer = ensure_pad_token(load_tokenizer(recipe.teacher_model_name_or_path))
    loading = (recipe.torch_dtype, recipe.attn_implementation, recipe.trust_remote_code)
    teacher = load_causal_lm(recipe.teacher_model_name_or_path, *loading)
    check_block_size(data_args.block_size, getattr(teacher.config, "max_position_embeddings", None))
    student = None
    if recipe.student_model_name_or_path:
        student = load_causal_lm(recipe.student_model_name_or_path, *loading)
        common_vocab_size(student, teacher, saved_tokenizer(recipe.student_model_name_or_path), tokenizer)
    targets = structured_targets(teacher, pruning) if pruning.removes_anything and student is None else []
    splits = ("validation", "test")  # text is measured with strided windows, other data on its rows
    rows = lm_split_rows(raw, fmt, tokenizer, data_args, ("train", *(splits if fmt != "text" else splits[:1])))

    # 2. Teacher: adapted to the training data with the LM loss (full or LoRA), unless teacher_finetune is 'never'.
    teacher, teacher_dir = adapted_causal_teacher(recipe, data_args, args, teacher, tokenizer, rows, out, fmt)
    if recipe.sequence_kd:  # the student learns from the teacher's own answers to the training prompts
        with args.main_process_first(desc="teacher answers"):
            answered = teacher_answers(
                teacher, tokenizer, first_training_rows(raw, data_args), fmt, lm_columns(data_args),
                out / "teacher_answers", recipe.sequence_kd_max_new_tokens, args.per_device_eval_batch_size,
            )  # fmt: skip
        rows["train"] = lm_split_rows({"train": answered}, fmt, tokenizer, data_args, ("train",))["train"]

    # 3. Student: pruned from the teacher (in rounds of prune -> distil), cut from its layers, or given.
    def distil(model, stage_out=None, fraction=1.0):
        stage = args
        if stage_out is not None:  # a recovery round between two cuts: its share of the training budget
            steps = max(1, int(args.max_steps * fraction)) if args.max_steps > 0 else -1
            stage = stage_args(args, DistillationConfig, output_dir=stage_out, max_steps=steps,
                               num_train_epochs=args.num_train_epochs * fraction)  # fmt: skip
        trainer = DistillationTrainer(
            model=model, teacher_model=teacher, args=stage, train_dataset=rows["train"],
            eval_dataset=rows["validation"], processing_class=tokenizer,
        )  # fmt: skip
        return trainer, trainer.train()

    pruned = []
    if student is None and targets:
        student = create_student_from_teacher(teacher, list(range(teacher.config.num_hidden_layers)))
        batches = calibration_batches(rows["train"], tokenizer, args.per_device_train_batch_size,
                                      pruning.calibration_batches, args.seed)  # fmt: skip
        for k, target in enumerate(targets):
            student, removed = structured_prune(student, target, pruning, batches)
            pruned.append(removed)
            if k < len(targets) - 1:  # Minitron: recover between cuts; the last round is the main distillation
                student = distil(student, out / f"round{k + 1}", 1.0 / len(targets))[0].model
    student = student or create_student_from_teacher(teacher, recipe.student_layers)
    trainer, train_result = distil(student)
    trainer.save_model(str(out / "student"))
    if not trainer.is_world_process_zero():
        return None

    # 4. Measure both: perplexity and bits per byte on each text, speeds with the models taking turns.
    texts = {split: split_text(raw, split) for split in splits} if fmt == "text" else {}
    if ood is not None:
        texts["ood"] = split_text(ood, "test")
    teacher_folder = teacher_dir or resolve_model(recipe.teacher_model_name_or_path)
    if args.shard_teacher:  # a sharded teacher runs only with every process: reload it whole here
        trainer.teacher = load_causal_lm(str(teacher_folder), *loading)
    # like for like: the teacher in the student's dtype, on its device (it was cast to fp32 before, the student not)
    student_model = trainer.model
    teacher_model = trainer.teacher.to(dtype=student_model.dtype, device=student_model.device)
    entries = [("teacher", teacher_model, teacher_folder), ("student", student_model, out / "student")]
    results = compare_language_models(
        entries, tokenizer, texts, data_args.block_size, data_args.eval_stride, data_args.max_eval_tokens,
        recipe.generate_tokens, recipe.prompt_batch_size, recipe.speed_runs,
        rows={split: rows[split] for split in splits} if fmt != "text" else None,
    )  # fmt: skip
    report = {
        **report_header("distill_llm", argv, data_args, raw),
        "teacher": recipe.teacher_model_name_or_path,
        "student_config": {k: getattr(trainer.model.config, k) for k in
                           ("num_hidden_layers", "hidden_size", "intermediate_size", "num_key_value_heads")},
        "pruned": pruned,
        "data_format": fmt,
        "train_tokens": sum(len(ids) for ids in rows["train"]["input_ids"]),
        "train_samples_per_second": train_result.metrics.get("train_samples_per_second"),
        "results": results,
    }  # fmt: skip
    markdown = (
        f"# distill_llm report\n\n{'Perplexity' if fmt == 'text' else 'Completion perplexity'} over "
        f"{results[0]['test_tokens']} test tokens of {data_args.dataset_name} (window {data_args.block_size}, stride "
        f"{data_args.eval_stride}); speeds on {results[0]['torch_threads']} CPU threads, models interleaved.\n\n"
        + markdown_table(results, COLUMNS)
    )

    # 5. Report and share: export and/or push with a model card made from the figures above.
    asset = find_asset(recipe.teacher_model_name_or_path)
    notes = (
        f"The base weights come from the offline copy `{asset.name}` ({asset.requirement}): {asset.description}."
        if asset is not None and "Q4_1" in asset.description
        else ""
    )
    info = CompressionInfo(
        kind="distilled", base_model=recipe.teacher_model_name_or_path, dataset=data_args.dataset_name,
        task_name="Text Generation", task_type="text-generation",
        method="pruned from the teacher and distilled" if targets else "knowledge distillation",
        settings={k: getattr(args, k) for k in SETTINGS} | report["student_config"],
        teacher=f"{recipe.teacher_model_name_or_path} (adapted to {data_args.dataset_name})",
        metrics=results[1], reference=results[0], command=report["command"], notes=notes,
    )  # fmt: skip
    layers = trainer.model.config.num_hidden_layers
    variants = {"student": (out / "student", info, ["distilled", f"{layers}L"])}
    return finish_recipe(out, recipe, report, markdown, variants, f"Saved the student to {out / 'student'}")


if __name__ == "__main__":
    run_recipe(main, "distill_llm")
